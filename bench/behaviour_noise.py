"""How noisy is each behaviour, next to the differences between models it must resolve? For every behaviour
of compute_fid.py, at two or three evaluation sizes (samples per model for the sampled ones, (t, eps) draws
per image for loss and elbo), print:

- difference noise: the std, over evaluation seeds, of the difference between two models' behaviours (both
  evaluated with the same seed: common random numbers, as the pipeline evaluates every model), pooled over
  pairs of a pool's models. Attribution sees only differences between models, so this is its noise;
- single-model noise: the std over evaluation seeds of one model's behaviour (what common random numbers save);
- spread: the std of the behaviour across the pool's models (one evaluation seed), and spread / difference
  noise: how many noise widths the models' real differences span;
- the correlation of two retraining seeds on the same held-out subsets (the run's ground truth): how much of
  the behaviour a subset decides, whatever the evaluation (training noise, which no evaluation size removes);
- seconds per model of the behaviour.

    bash run_pipeline.sh images                              # makes runs/images (GT_SEEDS >= 2)
    python -m bench.behaviour_noise                          # on runs/images
    python -m bench.behaviour_noise --run runs/images --samples 1000,4000 --draws 4,16,64 --pool 24

Everything goes through compute_fid.py (its caches under <run>/bench/noise/), so the numbers are the
pipeline's.
"""
import argparse
import json
import os

import numpy as np

import runfolder
from metrics import BEHAVIORS
from data import run
from runfolder import finished_run, load_behaviors, values_by_row
from tools.one_process import call


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="runs/images", help="a finished run: models/unlearn, masks/unlearn.npy, "
                   "models/lds with 2+ seeds, masks/lds.npy")
    p.add_argument("--data", default="digits")
    p.add_argument("--samples", default="500,1000,2000", help="samples per model for the sampled behaviours")
    p.add_argument("--ddim-steps", default="10")
    p.add_argument("--draws", default="1,4,16", help="(t, eps) draws per reference image for loss and elbo")
    p.add_argument("--pool", type=int, default=16, help="unlearned models of the run: the spread, and pool / 2 "
                   "pairs for the difference noise")
    p.add_argument("--seeds", type=int, default=3, help="evaluation seeds for the noise")
    p.add_argument("--behaviors", default="all", help="compute_fid.py --behaviors")
    return p.parse_args(argv)


def linked(folder, files):
    """A folder of links to the given checkpoints (their names kept), so compute_fid.py evaluates just these."""
    os.makedirs(folder, exist_ok=True)
    for f in files:
        link = os.path.join(folder, os.path.basename(f))
        if not os.path.lexists(link):
            os.symlink(os.path.abspath(f), link)
    return folder


def evaluate(args, out, models, masks, kind, size, seed):
    """compute_fid.py on a folder at one evaluation size and seed: {behaviour key: {row: value}} and the seconds."""
    flags = (["--behaviors", ",".join(k for k in keys_of(args, "samples")), "--n-samples", str(size),
              "--ddim-steps", args.ddim_steps, "--seed", str(seed)] if kind == "samples" else
             ["--behaviors", ",".join(keys_of(args, "reference")), "--loss-draws", str(size), "--loss-seed", str(seed)])
    path = os.path.join(out, f"{os.path.basename(models)}-{kind}-{size}-seed{seed}.npz")
    call("compute_fid", ["--data", args.data, "--models", models, "--masks", masks, "--cache", args.run, *flags,
                         "--out", path])
    beh = load_behaviors(path)
    keys = [k for k in keys_of(args, kind) if k != "class"] + (
        [f"class:{c}" for c in range(beh["class_share"].shape[1])] if "class_share" in beh else [])
    seconds = float((beh["seconds"] + beh["loss_seconds"]).mean())
    return {k: {s: values_by_row(beh, k, s) for s in np.unique(beh["seed"].astype(int))} for k in keys}, seconds


def keys_of(args, kind):
    chosen = list(BEHAVIORS) if args.behaviors == "all" else args.behaviors.split(",")
    return [k for k in chosen if BEHAVIORS[k].source == kind]


def main(args):
    finished_run(args.run, runfolder.masks(args.run, "unlearn"))
    run, out = args.run, os.path.join(args.run, "bench", "noise")
    unlearn = sorted(f for f in os.listdir(runfolder.models(run, "unlearn")) if f.endswith(".pt"))[:args.pool]
    pool = linked(os.path.join(out, "pool"), [os.path.join(runfolder.models(run, "unlearn"), f) for f in unlearn])
    pool_masks, lds_masks = (runfolder.masks(run, n) for n in ("unlearn", "lds"))
    lds = runfolder.models(run, "lds")
    rows = []
    for kind, sizes in (("samples", args.samples), ("reference", args.draws)):
        if not keys_of(args, kind):
            continue
        for size in (int(s) for s in sizes.split(",")):
            per_seed, seconds = [], []
            for seed in range(args.seeds):
                values, s = evaluate(args, out, pool, pool_masks, kind, size, seed)
                per_seed.append(values)
                seconds.append(s)
            truth, _ = evaluate(args, out, lds, lds_masks, kind, size, 0)
            for key in per_seed[0]:
                # (seeds, models): each model of the pool (one training seed) evaluated with each evaluation seed
                models = sorted(next(iter(per_seed[0][key].values())))
                v = np.array([[next(iter(per_seed[s][key].values()))[m] for m in models] for s in range(args.seeds)])
                pairs = v[:, 0:len(models) - 1:2] - v[:, 1:len(models):2]  # disjoint pairs, same seed each
                diff_noise = float(np.sqrt(np.mean(np.var(pairs, axis=0, ddof=1))))
                single = float(np.sqrt(np.mean(np.var(v, axis=0, ddof=1))))
                spread = float(np.std(v[0], ddof=1))
                seeds, seed_corr = sorted(truth[key]), None  # a ground truth of one training seed: no correlation
                if len(seeds) >= 2:
                    k = sorted(set(truth[key][seeds[0]]) & set(truth[key][seeds[1]]))
                    a, b = (np.array([truth[key][s][r] for r in k]) for s in seeds[:2])
                    seed_corr = float(np.corrcoef(a, b)[0, 1])
                rows.append(dict(behavior=key, kind=kind, size=size, diff_noise=diff_noise, single_noise=single,
                                 spread=spread, ratio=spread / diff_noise if diff_noise > 0 else float("inf"),
                                 seed_corr=seed_corr, seconds=float(np.mean(seconds))))
                print(f"  {key} at {size}: spread / difference noise {rows[-1]['ratio']:.1f}", flush=True)
    print()
    print(f"{len(unlearn)} unlearned models of {run} ({len(unlearn) // 2} pairs), {args.seeds} evaluation seeds; "
          f"ground truth: the run's held-out subsets (the seed correlation needs two training seeds: GT_SEEDS=2)")
    print("| behaviour | evaluation size | difference noise (common random numbers) | single-model noise | spread "
          "across models | spread / difference noise | two retraining seeds: correlation | s per model |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        size = f"{r['size']} samples" if r["kind"] == "samples" else f"{r['size']} draws/image"
        corr = "n/a" if r["seed_corr"] is None else f"{r['seed_corr']:.2f}"
        print(f"| {r['behavior']} | {size} | {r['diff_noise']:.4g} | {r['single_noise']:.4g} | {r['spread']:.4g} | "
              f"{r['ratio']:.1f}x | {corr} | {r['seconds']:.2f} |")
    with open(os.path.join(out, "table.json"), "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    run(main, parse_args())

"""Does an unlearned model behave like the model retrained from scratch on the same subset? For each
unlearning method (unlearn.py --method, with its settings), unlearn the K held-out subsets of a finished
run (masks/lds.npy and models/lds/; images or contributors) and print one table:
Pearson and Spearman correlation of the unlearned models' behaviour with the retrained one (the mean over
seeds) on the same subsets, with 95% bootstrap intervals over subsets; its correlation with the number of
corrupted images in the subset; the FID2 ratio (FID between unlearned and retrained model of a subset,
over FID between two retraining seeds); the cost per model in training compute and in wall time against a
retraining timed in the same run. What a correlation with the corrupted count buys in attribution, bench/
attribution_ceiling.py's planted game says (the image-level AUC and LDS at that correlation).
The ceiling row (a run whose held-out subsets were retrained with 2+ seeds) is two retraining seeds against
each other; against the mean of two seeds, a perfect unlearner (a third seed) would reach rho / sqrt((1 + rho) /
2), rho the ceiling row's Pearson.

    bash run_pipeline.sh images                             # makes runs/images (or any run with GT_SEEDS >= 2)
    python -m bench.unlearn_fidelity                        # every method below, on runs/images
    python -m bench.unlearn_fidelity --run runs/images --configs "gd-epoch=--method gd --batches epoch --steps 25"
    python -m bench.unlearn_fidelity --run runs/default --behaviors fid,loss --fid-flags "--n-samples 2000 --ddim-steps 5" \\
        --configs "gd=--method gd --steps 12;neggrad=--method neggrad --steps 6 --warmup 0 --batches epoch"   # contributors

Models and behaviours land in <run>/bench/fidelity/ and are reused by a rerun; behaviours go through
compute_fid.py (its caches), unlearning through unlearn.py, so every number is what the pipeline computes.
"""
import argparse
import json
import os
import shlex
import time

import numpy as np

import runfolder
from data import run, images_of
from stats import pearson_rows
from runfolder import finished_run, load_behaviors, load_groups, values_by_row
from tools.one_process import call

# name -> unlearn.py flags. Sized at about equal training compute: gd's 25 steps of batch 64 on the pruned
# model (neggrad draws two minibatches a step, gd-full's unpruned model costs twice a pruned step: 13 steps).
CONFIGS = {
    "gd, lr 1e-4 (the image level's setting before)": "--method gd --steps 25 --lr 1e-4 --warmup 0",
    "gd, epoch batches": "--method gd --steps 25 --lr 1e-4 --warmup 0 --batches epoch",
    "gd-full, epoch batches": "--method gd-full --steps 13 --lr 1e-4 --warmup 0 --batches epoch",
    "ga (lr 1e-5)": "--method ga --steps 25 --lr 1e-5 --warmup 0 --batches epoch",
    "neggrad w 0.5, epoch batches": "--method neggrad --steps 13 --lr 3e-4 --warmup 0 --ascent-weight 0.5 "
                                    "--batches epoch",
    "neggrad w 0.5, random batches": "--method neggrad --steps 13 --lr 3e-4 --warmup 0 --ascent-weight 0.5",
    "lora r 4, epoch batches": "--method lora --steps 25 --lr 1e-3 --warmup 0 --rank 4 --batches epoch",
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="runs/images", help="a finished run: pruned.pt, full.pt, masks/lds.npy, "
                   "models/lds/ with 2+ seeds, corrupted.npy")
    p.add_argument("--data", default="digits")
    p.add_argument("--corrupt", default="0.1", help="as the run was made")
    p.add_argument("--configs", default=None, help="NAME=FLAGS;NAME=FLAGS... of unlearn.py (default: the table of "
                   "CONFIGS)")
    p.add_argument("--behaviors", default="loss,fid", help="compute_fid.py behaviours to compare (the first "
                   "is the table's; FID also gives FID2)")
    p.add_argument("--fid-flags", default="--n-samples 1000 --ddim-steps 10", help="compute_fid.py's sampling, as the "
                   "images preset")
    p.add_argument("--loss-draws", default="4")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    return p.parse_args(argv)


def correlations(a, b, rng, n=2000):
    """Pearson and Spearman of a and b, each with a 95% bootstrap interval over the subsets (a resample where either
    side is constant counts as 0, as eval_lds counts an LDS)."""
    from scipy.stats import rankdata
    a, b = np.asarray(a), np.asarray(b)
    idx = rng.integers(0, len(a), (n, len(a)))
    out = {}
    for name, (x, y, xs, ys) in (("pearson", (a, b, a[idx], b[idx])),
                                 ("spearman", (rankdata(a), rankdata(b), rankdata(a[idx], axis=1),
                                               rankdata(b[idx], axis=1)))):
        lo, hi = np.percentile(pearson_rows(xs, ys), [2.5, 97.5])
        out[name] = (float(pearson_rows(x[None], y[None])[0]), float(lo), float(hi))
    return out


def per_row(path, key, seed=None):
    return values_by_row(load_behaviors(path), key, seed)


def linked(folder, sources):
    """A folder of links NNNNN.pt -> the given checkpoints, so compute_fid.py --ref-models pairs a method's models
    with one retraining seed's by row."""
    os.makedirs(folder, exist_ok=True)
    for row, src in sources.items():
        link = os.path.join(folder, f"{row:05d}.pt")
        if not os.path.lexists(link):
            os.symlink(os.path.abspath(src), link)
    return folder


def time_one_retraining(model, data, lds_masks, timed):
    """(seconds, training MACs) of one retraining of held-out row 0 with `model`'s recipe, timed here beside the
    methods (the run's own retrainings ran on another day, or beside other jobs)."""
    import torch
    a = torch.load(model, map_location="cpu", weights_only=True)["args"]
    t0 = time.perf_counter()
    call("train_ddpm", [*data, "--arch", a["arch"], "--steps", str(a["steps"]), "--batch-size", str(a["batch_size"]),
                        "--lr", str(a["lr"]), "--warmup", str(a["warmup"]), "--masks", lds_masks, "--index", "0",
                        "--seed", "99", "--grid", "0", "--out", timed, "--force"])
    ckpt = torch.load(timed, map_location="cpu", weights_only=True)
    print(f"one retraining timed here: {float(ckpt['seconds']):.1f} s ({time.perf_counter() - t0:.1f} s with start-up)")
    return float(ckpt["seconds"]), float(ckpt["train_macs"])


def print_table(table, keys, K, run, n_seeds, retrain_seconds, retrain_macs):
    """The bench's table: each method's fidelity to retraining and its cost."""
    first = keys[0]
    print()
    print(f"Unlearned vs retrained on the same {K} held-out subsets of {run} (behaviour: {first}; retrained: the mean "
          f"of {n_seeds} seeds; 95% bootstrap intervals over subsets). Cost: a retraining's training compute "
          f"(MACs) and wall time (timed here) over the method's.")
    others = "".join(f" Pearson, {k} |" for k in keys[1:])
    print(f"| method | Pearson with retrained | Spearman | r with corrupted count |{others} FID2 ratio | cost: "
          f"compute | cost: wall time | s per model |")
    print("| --- " * (8 + len(keys[1:])) + "|")
    for e in table:
        p, s = e["pearson"], e["spearman"]
        cells = [e["name"], f"{p[0]:.2f} [{p[1]:.2f}, {p[2]:.2f}]", f"{s[0]:.2f} [{s[1]:.2f}, {s[2]:.2f}]",
                 f"{e['count']:.2f}"] + [f"{e['others'][k]:.2f}" for k in keys[1:]] + \
                [f"{e['fid2']:.2f}" if e["fid2"] else "n/a", f"{retrain_macs / e['macs']:.1f}x",
                 f"{retrain_seconds / e['seconds']:.1f}x", f"{e['seconds']:.2f}"]
        print("| " + " | ".join(cells) + " |")


def unlearn_and_measure(start, data, masks, folder, unlearn_flags, fid):
    """The behaviours file (folder.npz, compute_fid.py with flags `fid`) of the models unlearn.py makes from `start` on
    every row of `masks` into `folder` (with flags `unlearn_flags`): the unlearning benches' one chain."""
    call("unlearn", ["--ckpt", start, *data, "--masks", masks, "--out", folder, *unlearn_flags])
    beh = folder + ".npz"
    call("compute_fid", [*fid, "--models", folder, "--masks", masks, "--out", beh])
    return beh


def unlearned(run, out, name, method_flags, data, fid, lds_masks, K, keys, ref_models, fid2_seeds):
    """(behaviour per row, seconds and training MACs per model, FID2 ratio or None) of one unlearning method run on
    every held-out row; FID2 against `ref_models` (a retraining seed's models) when given."""
    import torch
    folder = os.path.join(out, "".join(ch if ch.isalnum() else "_" for ch in name).strip("_"))
    start = runfolder.checkpoint(run, "full" if "gd-full" in method_flags else "pruned")
    beh = unlearn_and_measure(start, data, lds_masks, folder, method_flags, fid)
    ckpts = [torch.load(os.path.join(folder, f"{r:05d}.pt"), map_location="cpu", weights_only=True) for r in range(K)]
    fid2 = None
    if "fid" in keys and ref_models:
        call("compute_fid", [*fid, "--models", folder, "--ref-models", ref_models, "--masks", lds_masks,
                             "--out", folder + "_fid2.npz"])
        fid2 = float(np.load(folder + "_fid2.npz")["fid"].mean()) / fid2_seeds
    return ({k: per_row(beh, k) for k in keys}, float(np.mean([c["seconds"] for c in ckpts])),
            float(np.mean([c["train_macs"] for c in ckpts])), fid2)


def main(args):
    finished_run(args.run, runfolder.checkpoint(args.run, "pruned"), runfolder.checkpoint(args.run, "full"), runfolder.masks(args.run, "lds"))
    run = args.run
    out = os.path.join(run, "bench", "fidelity")
    lds_masks = runfolder.masks(run, "lds")
    masks = np.load(lds_masks)
    K = len(masks)
    models = sorted(f for f in os.listdir(runfolder.models(run, "lds")) if f.endswith(".pt"))
    seeds = sorted({int(f.split("-s")[1][:-3]) for f in models})
    corrupted = np.load(runfolder.corrupted(run))
    groups = load_groups(lds_masks)  # a contributor-level run: a row's images through its contributors
    count = np.array([images_of(row, groups)[corrupted].sum() for row in masks], dtype=float)
    configs = CONFIGS if not args.configs else dict(c.split("=", 1) for c in args.configs.split(";") if c.strip())
    keys = args.behaviors.split(",")
    data = ["--data", args.data, "--corrupt", args.corrupt]
    fid = ["--data", args.data, *shlex.split(args.fid_flags), "--loss-draws", args.loss_draws, "--cache", run,
           "--behaviors", args.behaviors]
    # the retrained models, as the run made them (every seed), and one retraining timed here, beside the methods
    call("compute_fid", [*fid, "--models", runfolder.models(run, "lds"), "--masks", lds_masks,
                         "--out", os.path.join(out, "retrained.npz")])
    per_seed = [linked(os.path.join(out, f"retrained_s{s}"), {r: os.path.join(runfolder.models(run, "lds"), f"{r:05d}-s{s}.pt")
                                                              for r in range(K)}) for s in seeds[:2]]
    ceiling = len(seeds) >= 2
    retrain_seconds, retrain_macs = time_one_retraining(os.path.join(runfolder.models(run, "lds"), models[0]), data, lds_masks,
                                                        os.path.join(out, "timed_retraining.pt"))

    rng = np.random.default_rng(args.seed)
    truth = {k: per_row(os.path.join(out, "retrained.npz"), k) for k in keys}
    table = []

    def row(name, behaviour, seconds, macs, fid2=None):
        first = keys[0]
        b = np.array([behaviour[first][r] for r in range(K)])
        t = np.array([truth[first][r] for r in range(K)])
        c = correlations(b, t, rng)
        entry = dict(name=name, pearson=c["pearson"], spearman=c["spearman"],
                     count=float(np.corrcoef(b, count)[0, 1]), seconds=seconds, macs=macs, fid2=fid2,
                     others={k: float(np.corrcoef([behaviour[k][r] for r in range(K)],
                                                  [truth[k][r] for r in range(K)])[0, 1]) for k in keys[1:]})
        table.append(entry)
        print(f"  {name}: Pearson {c['pearson'][0]:.2f} with retraining", flush=True)

    # the ceiling: one retraining seed against the other (its truth is that seed alone, not the mean); with one
    # seed (GT_SEEDS=1) there is no ceiling row, and FID2 is against that seed's models alone
    fid2_seeds = None
    if len(seeds) >= 2:
        s0 = {k: per_row(os.path.join(out, "retrained.npz"), k, seeds[0]) for k in keys}
        s1 = {k: per_row(os.path.join(out, "retrained.npz"), k, seeds[1]) for k in keys}
        saved = dict(truth)
        truth.update(s0)
        if "fid" in keys:
            call("compute_fid", [*fid, "--models", per_seed[1], "--ref-models", per_seed[0], "--masks", lds_masks,
                                 "--out", os.path.join(out, "fid2_seeds.npz")])
            fid2_seeds = float(np.load(os.path.join(out, "fid2_seeds.npz"))["fid"].mean())
        row(f"ceiling: retraining seed {seeds[1]} vs seed {seeds[0]}", s1, retrain_seconds, retrain_macs,
            1.0 if fid2_seeds else None)
        truth.clear()
        truth.update(saved)
    else:
        print(f"{runfolder.models(run, 'lds')} has one training seed (GT_SEEDS=1): no ceiling row, no FID2 ratio")

    for name, flags in configs.items():
        row(name, *unlearned(run, out, name, shlex.split(flags), data, fid, lds_masks, K, keys,
                             per_seed[0] if fid2_seeds else None, fid2_seeds))

    print_table(table, keys, K, run, len(seeds), retrain_seconds, retrain_macs)
    with open(os.path.join(out, "table.json"), "w") as f:
        json.dump(dict(table=table, retrain_seconds=retrain_seconds, retrain_macs=retrain_macs, behaviors=keys), f,
                  indent=1)
    if not ceiling:
        return
    rho = table[0]["pearson"][0]
    print(f"A perfect unlearner behaves like a third retraining seed: against the mean of two seeds it would reach about "
          f"{rho / np.sqrt((1 + rho) / 2):.2f} (the ceiling row's {rho:.2f} / sqrt((1 + {rho:.2f}) / 2)).")


if __name__ == "__main__":
    run(main, parse_args())

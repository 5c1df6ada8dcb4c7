"""The gradient baselines' settings chosen on their own validation target, never on the held-out subsets that judge
them: TRAK's and D-TRAK's damping and projection, EK-FAC's damping, each scored on the retraining pool (the
retraining comparator's own models, never a held-out subset) by how well its scores of the reference images' loss
(what they linearise) predict the pool's models' loss beyond their subsets' sizes: the Spearman correlation of
sum_{j in S} score_j with each model's loss, both with a quadratic in |S| regressed out (the pool's Shapley-kernel
subsets run from 1 to n - 1 contributors, and size alone ranks their losses; the held-out subsets all have half).
Beside it, the raw Spearman on the pool and the agreement with the leave-one-out retrainings (Spearman with v(all) -
v(all but j) on the loss), which one seed of 20 retrainings makes too noisy to choose by. The choice: the
one-standard-error rule (`chosen`), the cheapest projection within one standard error of the best. A preset's
setting is chosen once, by this bench, and written into its BASELINE_FLAGS; docs/newest.md lists every setting tried.

    python -m bench.tune_baselines --run runs/tune-default --data digits --corrupt 0.15 --fault blur,duplicate,watermark

The run folder needs full.pt, behaviors/full.npz, masks/unlearn.npy (with groups.npy), masks/retrain.npy with
behaviors/retrain.npz and masks/loo.npy with behaviors/loo.npz: the retraining pool and the leave-one-out
retrainings, a run's own or a bank's (`bank.py use NAME --run RUN --loo`).
TRAK's ensemble is the run's full model and its leave-one-out checkpoints where it has them (a banked run has none:
the full model alone, as the banked default runs it). Every gradient is computed once per projection size; the
dampings re-solve from them; each setting's scores are saved, and `--rescore` scores them again against the pool as
it is now (a bank's pool grows). Writes bench/results/tune-baselines/RUN-NAME.json.
"""
import argparse
import json
import os
import time

import numpy as np

import baselines
import runfolder
from data import run
from ddpm import load_checkpoint, pick_device
from runfolder import aligned, load_behaviors, load_masks
from stats import bootstrap_lds, interval, spearman

# baseline -> (the measure of baselines.STEPS, its damping's setting (baselines.py's flag), the dampings tried, its
# projection's setting, the projection sizes tried). 4,096 is above the 1,797 training images: the kernel is then of
# full rank, the regime TRAK's 32,768 dimensions give on its papers' larger training sets.
GRID = {
    "trak-ref": ("trak_ref", "ridge", (1e-3, 1e-2, 1e-1, 1.0, 10.0), "proj_dim", (1024, 4096)),
    "d-trak-ref": ("d_trak_ref", "dtrak_ridge", (1e-3, 1e-2, 1e-1, 1.0, 10.0), "dtrak_proj_dim", (1024, 4096)),
    "ekfac-ref": ("ekfac_ref", "ekfac_damping", (0.01, 0.1, 1.0, 10.0), None, (None,)),
}
TARGET = "loss"  # what the -ref gradient methods linearise: the reference images' loss


def beyond_size(values, sizes):
    """values with a quadratic in the subset size regressed out (least squares)."""
    design = np.column_stack([np.ones(len(sizes)), sizes, sizes ** 2])
    return values - design @ np.linalg.lstsq(design, values, rcond=None)[0]


def tune_list(text):
    """--tune: comma-separated names of GRID (argparse refuses others in one line)."""
    names = text.split(",")
    unknown = [n for n in names if n not in GRID]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown {', '.join(unknown)} (one of {', '.join(GRID)})")
    return names


def parse_args(argv=None):
    """baselines.py's flags (the run's data, the settings not tuned here), and --tune: which of GRID."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--tune", type=tune_list, default=list(GRID), help="comma-separated baselines of GRID to tune")
    p.add_argument("--rescore", action="store_true", help="score the settings a previous run of this bench saved "
                   "against the run's pool as it is now (no gradients computed)")
    return baselines.parse_args(argv, __doc__, [p])


class Targets:
    """The validation targets of a run: its retraining pool's loss (raw and beyond size) and leave-one-out's."""

    def __init__(self, run_dir):
        full = load_behaviors(runfolder.behaviors(run_dir, "full"))
        self.loo = baselines.loo_scores(full, load_behaviors(runfolder.behaviors(run_dir, "loo")),
                                        load_masks(runfolder.masks(run_dir, "loo")))[TARGET]
        _, self.X, self.y = aligned(load_masks(runfolder.masks(run_dir, "retrain")),
                                    load_behaviors(runfolder.behaviors(run_dir, "retrain")), TARGET, "masks/retrain.npy")
        self.sizes = self.X.sum(1)
        self.y_beyond = beyond_size(self.y, self.sizes)

    def score(self, scores, seed):
        """{rho (the pool beyond size, the choice's), ci, rho_pool, rho_loo} of one setting's scores."""
        pool = self.X @ np.asarray(scores)
        residual = beyond_size(pool, self.sizes)
        lo, hi = interval(bootstrap_lds([residual], self.y_beyond, seed)[0])
        return dict(rho=spearman(residual, self.y_beyond), ci=[lo, hi], rho_pool=spearman(pool, self.y),
                    rho_loo=spearman(np.asarray(scores), self.loo), pool_models=len(self.y))


def result_path(run_dir, name, queries="others"):
    """Its file per run, baseline and reference queries (--ref-queries: the settings of 'all' were chosen before the
    queries left each contributor's own images out, and are kept as they were)."""
    tail = "" if queries == "all" else f"-{queries}"
    return os.path.join("bench", "results", "tune-baselines",
                        f"{os.path.basename(os.path.normpath(run_dir))}-{name}{tail}.json")


def said(name, entry):
    flag, proj = GRID[name][1], GRID[name][3]
    return (f"{name} {flag} {entry[flag]:g}" + (f" {proj} {entry[proj]}" if proj else "") +
            f": Spearman on the retraining pool's {TARGET} beyond size {entry['rho']:+.3f} [{entry['ci'][0]:+.2f}, "
            f"{entry['ci'][1]:+.2f}] ({entry['pool_models']} models; raw {entry['rho_pool']:+.3f}); with leave-one-out "
            f"{entry['rho_loo']:+.3f}")


def measured(args, targets):
    """{baseline: [entry of each setting tried]}: the gradients (curvature) once per projection size, every damping
    re-solved from them."""
    full, ds, groups, directions = baselines.setting_up(args)
    settings = baselines.settings_of(args, full, ds)
    ckpt = load_checkpoint(runfolder.checkpoint(args.run, "full"))
    device = pick_device(args.device)
    tried = {name: [] for name in args.tune}
    for size in sorted({p for name in args.tune for p in GRID[name][4]}, key=lambda p: p or 0):
        for name in args.tune:  # every projection at this size: the gradients once for all
            if GRID[name][3]:
                setattr(args, GRID[name][3], size)
        model = baselines.FullModel(ckpt, ds, args, settings, device, groups)
        for name in (n for n in args.tune if size in GRID[n][4]):
            measure, flag, values, proj, _ = GRID[name]
            for value in values:
                setattr(args, flag, value)
                t0 = time.perf_counter()
                harm = baselines.harm_of(name, model.recompute(measure), groups)  # re-solved at this setting
                scores = baselines.scores_by_behavior(harm, directions)[TARGET]
                entry = dict({flag: value}, **({proj: size} if proj else {}), **targets.score(scores, args.seed),
                             scores=scores.tolist(),
                             seconds=time.perf_counter() - t0, gradients_seconds=model.total_cost(measure)[1])
                tried[name].append(entry)
                print(said(name, entry))
    return tried


def rescored(args, targets):
    """The settings a previous run of this bench tried (their saved scores), scored again on the run's pool as it is
    now (a bank's pool grows)."""
    tried = {}
    for name in args.tune:
        with open(result_path(args.run, name, args.ref_queries)) as f:
            tried[name] = [dict(e, **targets.score(e["scores"], args.seed)) for e in json.load(f)["tried"]]
        for e in tried[name]:
            print(said(name, e))
    return tried


def chosen(entries, proj):
    """The one-standard-error rule (Breiman et al. 1984): of the settings whose Spearman lies within one standard
    error (the best's bootstrap interval / 3.92) of the best, the cheapest projection, and at it the best damping.
    A larger projection costs minutes more in every run; it is taken only where it is clearly better."""
    top = max(entries, key=lambda e: e["rho"])
    near = [e for e in entries if e["rho"] >= top["rho"] - (top["ci"][1] - top["ci"][0]) / 3.92]
    cheapest = min(e[proj] for e in near) if proj else None
    return max((e for e in near if not proj or e[proj] == cheapest), key=lambda e: e["rho"])


def main(args):
    targets = Targets(args.run)
    tried = rescored(args, targets) if args.rescore else measured(args, targets)
    os.makedirs(os.path.dirname(result_path(args.run, "x")), exist_ok=True)
    flags = []
    for name, entries in tried.items():
        best = chosen(entries, GRID[name][3])
        result = dict(baseline=name, run=args.run, ref_queries=args.ref_queries,
                      target=f"the retraining pool's {TARGET} beyond size",
                      pool_models=len(targets.y), tried=entries,
                      chosen={k: best[k] for k in GRID[name][1:4:2] if k})
        path = result_path(args.run, name, args.ref_queries)
        with open(path + ".tmp", "w") as f:
            json.dump(result, f, indent=1)
        os.replace(path + ".tmp", path)
        print(f"{name}: chosen {result['chosen']} (Spearman beyond size {best['rho']:+.3f}); wrote {path}")
        flags += [f"--{k.replace('_', '-')} {v:g}" for k, v in result["chosen"].items()]
    print(f"BASELINE_FLAGS=\"{' '.join(flags)}\"")


if __name__ == "__main__":
    run(main, parse_args())

"""Does a cheaper sampler keep the attributions? Every model of a finished run is sampled again with another number
of DDIM steps (--ddim), the same attributions are fitted from those behaviours, and each sampler's attributions are
scored against each sampler's ground truth: the LDS (headline behaviour, held-out subsets) of the four pairs, with
95% intervals and paired tests on the same bootstrap resamples, beside each sampler's seconds per unlearned model.
A sampler is cheap enough where its attributions score the other sampler's ground truth as well as that sampler's
own attributions do (issue 28: fewer DDIM steps only where the LDS stays).

    bash run_pipeline.sh                                         # runs/default: behaviours with DDIM-20
    python -m bench.sampler_lds --run runs/default --ddim 50     # every model again with DDIM-50 (~8 min on 2 cores)
    python -m bench.sampler_lds --run runs/small --preset small --ddim 20

The other sampler's run is a folder beside the run (RUN-ddimN, or --out) that links the run's models (nothing is
trained again) and holds its own behaviours, attributions and report: `bash run_pipeline.sh PRESET` with RUN=that
folder, DDIM_STEPS=N, no baselines; a rerun reuses it.
"""
import argparse
import os
import shutil
import subprocess
import sys

import numpy as np

import runfolder
from data import run
from eval_lds import bootstrap_lds, interval, paired_test, spearman
from runfolder import aligned, finished_run, load_behaviors, load_masks, load_npz

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))



def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="runs/default", help="a finished run")
    p.add_argument("--preset", default="default", help="the run's preset (run_pipeline.sh), for its settings")
    p.add_argument("--ddim", type=int, required=True, help="DDIM steps of the other sampler")
    p.add_argument("--env", default="", help="settings the run was made with beyond its preset, as VAR=VALUE words")
    p.add_argument("--out", default=None, help="the other sampler's run folder (default: RUN-ddimN)")
    return p.parse_args(argv)


def other_run(args):
    """The run's models behind the other sampler: a folder linking them, whose behaviours the pipeline computes."""
    out = args.out or f"{args.run.rstrip('/')}-ddim{args.ddim}"
    os.makedirs(out, exist_ok=True)
    linked, copied = runfolder.trained(args.run)  # what the copy reads, not writes
    for src in linked + copied:
        dst = os.path.join(out, runfolder.relative(args.run, src))
        if os.path.exists(src) and not os.path.lexists(dst):
            if src in linked:
                os.symlink(os.path.abspath(src), dst)
            elif os.path.isdir(src):
                shutil.copytree(src, dst)
            else:
                shutil.copy(src, dst)
    for name in os.listdir(args.run):  # the feature network and reference statistics: the same for both samplers
        if runfolder.is_reference_cache(name) and not os.path.exists(os.path.join(out, name)):
            shutil.copy(os.path.join(args.run, name), os.path.join(out, name))
    if not os.path.exists(runfolder.results(out)):
        env = dict(os.environ, **dict(w.split("=", 1) for w in args.env.split()), RUN=out, DDIM_STEPS=str(args.ddim),
                   BASELINES="none", QUALITY_DDIM="0")
        with open(os.path.join(out, "pipeline.log"), "a") as log:
            r = subprocess.run(["bash", "run_pipeline.sh", args.preset], cwd=ROOT, env=env, stdout=log,
                               stderr=subprocess.STDOUT)
        if r.returncode != 0:
            sys.exit(f"error: the pipeline on {out} failed (exit {r.returncode}): see {out}/pipeline.log")
    return out


def sampler_of(run):
    """(DDIM steps, headline behaviour, attributions, held-out (X, y), seconds of sampling per unlearned model)."""
    att = load_npz(runfolder.attributions(run, "unlearn"), "attributions", required=("scores", "behavior"))
    headline = str(att["behavior"])
    held = load_behaviors(runfolder.behaviors(run, "lds"))
    _, X, y = aligned(load_masks(runfolder.masks(run, "lds")), held, headline)
    unlearned = load_behaviors(runfolder.behaviors(run, "unlearn"))
    return int(held["ddim_steps"]), headline, att, (X, y), float(np.mean(unlearned["seconds"]))


def main(args):
    finished_run(args.run, runfolder.results(args.run))
    runs = [sampler_of(args.run), sampler_of(other_run(args))]
    if runs[0][1] != runs[1][1]:
        sys.exit(f"error: the two runs lead with different behaviours ({runs[0][1]}, {runs[1][1]})")
    print(f"LDS ({runs[0][1]}) of unlearning's attributions from each sampler's behaviours, against each sampler's "
          f"ground truth ({args.run}, {len(runs[0][3][1])} held-out subsets):\n")
    print("| attributions from | sampling s / unlearned model | " +
          " | ".join(f"vs DDIM-{r[0]} ground truth [95%]" for r in runs) + " |")
    print("| --- " * (2 + len(runs)) + "|")
    boots = {}
    for steps, _, att, _, seconds in runs:
        cells = []
        for gt_steps, _, _, (X, y), _ in runs:
            pred = X @ att["scores"] + float(att["intercept"])
            boots[steps, gt_steps] = bootstrap_lds([pred], y)[0]
            lo, hi = interval(boots[steps, gt_steps])
            cells.append(f"{spearman(pred, y):.3f} [{lo:.2f}, {hi:.2f}]")
        print(f"| DDIM-{steps} | {seconds:.2f} | " + " | ".join(cells) + " |")
    a, b = runs[0][0], runs[1][0]
    for gt in (a, b):
        (lo, hi), p = paired_test(boots[a, gt], boots[b, gt])
        print(f"\nagainst the DDIM-{gt} ground truth: DDIM-{a} minus DDIM-{b} attributions {np.mean(boots[a, gt] - boots[b, gt]):+.3f} "
              f"[{lo:+.2f}, {hi:+.2f}], p = {p:.3f}", end="")
    print(f"\nsampling per unlearned model: DDIM-{a} {runs[0][4]:.2f} s, DDIM-{b} {runs[1][4]:.2f} s "
          f"({max(runs[0][4], runs[1][4]) / min(runs[0][4], runs[1][4]):.1f}x)")


if __name__ == "__main__":
    run(main, parse_args())

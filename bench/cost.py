"""What one model costs, split by what it is spent on: training (retraining from scratch, or unlearning), sampling,
the samples' features (and the behaviours read off them), the sampling-free loss, and the fit of the attributions
(per model of the pool), for every pool of a finished run, with the training compute in MACs. A user renting a GPU
pays for all of it; the report's "with behaviours" column counts it, and this table says where it goes.

    python -m bench.cost --run runs/default
    python -m bench.cost --run runs/default --run runs/images       # several presets, one table each

Every figure is what the run measured (wall seconds of one lane of the pipeline, as its stages ran them) except the
fit, timed here on the run's own unlearned pool. Behaviours computed before the features were timed apart show n/a.
"""
import argparse
import os
import time

import numpy as np

import runfolder
from data import run
from fit_datamodel import attribute, one_value
from runfolder import aligned, finished_run, load_behaviors, load_masks, load_npz

POOLS = (("unlearn", "unlearned (the method)"), ("retrain", "retrained (the baseline)"),
         ("lds", "held-out retrainings (ground truth)"), ("loo", "leave-one-out retrainings"))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", action="append", default=None, help="a finished run folder (repeat for several)")
    return p.parse_args(argv)


def mean_of(beh, key):
    """The pool's mean per model of a recorded quantity (NaN where the run did not record it)."""
    return float(np.mean(beh[key].astype(np.float64))) if key in beh else float("nan")


def fit_seconds(run):
    """Seconds per model of fitting the run's estimator on its unlearned pool (the headline behaviour), timed here
    (best of 3: a fit takes milliseconds, so one noisy repetition would decide it)."""
    path = runfolder.attributions(run, "unlearn")
    if not os.path.exists(path):
        return float("nan")
    fitted = load_npz(path, "attributions", ("method", "behavior"))
    masks_path = runfolder.masks(run, "unlearn")
    beh = load_behaviors(runfolder.behaviors(run, "unlearn"))
    _, X, y = aligned(load_masks(masks_path), beh, str(fitted["behavior"]), masks_path)
    method = str(fitted["method"])
    full_value = empty_value = None
    if method == "shapley":  # v(empty) and v(all) of the unlearned pool: the untrained and the pruned model's
        empty_value, full_value = (one_value(runfolder.behaviors(run, n), str(fitted["behavior"]), n)
                                   for n in ("untrained", "pruned"))
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        attribute(X, y, method, v_empty=empty_value, v_full=full_value)
        best = min(best, time.perf_counter() - t0)
    return best / len(y)


def table(run):
    """Rows (pool, models, training s, sampling s, features s, loss s, fit s, total s, behaviour / training,
    training GMACs) of one run."""
    fit = fit_seconds(run)
    rows = []
    for name, label in POOLS:
        path = runfolder.behaviors(run, name)
        if not os.path.exists(path):
            continue
        beh = load_behaviors(path)
        parts = [mean_of(beh, k) for k in ("train_seconds", "seconds", "feature_seconds", "loss_seconds")]
        parts.append(fit if name == "unlearn" else 0.0)
        behaviour = np.nansum(parts[1:4])
        rows.append((label, len(beh["index"]), *parts, np.nansum(parts), behaviour / parts[0],
                     mean_of(beh, "train_macs") / 1e9))
    return rows


def main(args):
    for folder in args.run or ["runs/default"]:
        finished_run(folder, runfolder.attributions(folder, "unlearn"))
        print(f"\n{folder}: seconds per model (one lane), and training compute\n")
        print("| models | n | training | sampling | features | loss | fit | total | behaviour / training | "
              "training GMACs |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        num = lambda v, f=".2f": "n/a" if not np.isfinite(v) else format(v, f)  # noqa: E731
        for label, n, *v in table(folder):
            train, sampling, features, loss, fit, total, ratio, gmacs = v
            print(f"| {label} | {n} | {num(train)} | {num(sampling)} | {num(features)} | {num(loss)} | "
                  f"{num(fit, '.2g') if fit else '-'} | {num(total)} | {num(ratio, '.1f')}x | {num(gmacs, '.1f')} |")


if __name__ == "__main__":
    run(main, parse_args())

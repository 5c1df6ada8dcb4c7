"""The self-influence effect, measured once: each gradient method against the reference images scored with every
reference image as its query (`--ref-queries all`, as before issue 43) and with each contributor's own clean
originals left out of its query (`--ref-queries others`, the default since), on bench/tune_baselines.py's validation
targets (the retraining pool's loss beyond subset size, the pool's loss raw, the leave-one-out retrainings' loss),
never on the held-out subsets; beside them, where each ranks the run's faulty contributors.

    python -m bench.self_influence --run runs/tune-default --data digits --corrupt 0.15 \\
        --fault blur,duplicate,watermark --ridge 10 --dtrak-ridge 0.1 --ekfac-damping 10

Flags are baselines.py's (the default preset's BASELINE_FLAGS give its settings). The gradients are computed once;
each mode re-reads them (EK-FAC's query gradient is computed again per mode). Prints one table.
"""
import numpy as np

import baselines
import runfolder
from bench.tune_baselines import TARGET, Targets
from data import run
from ddpm import load_checkpoint, pick_device

METHODS = ("grad-sim-ref", "trak-ref", "d-trak-ref", "ekfac-ref")


def parse_args(argv=None):
    """baselines.py's flags, with this bench's description."""
    return baselines.parse_args(argv, __doc__)


def main(args):
    targets = Targets(args.run)
    full, ds, groups, directions = baselines.setting_up(args)
    settings = baselines.settings_of(args, full, ds)
    model = baselines.FullModel(load_checkpoint(runfolder.checkpoint(args.run, "full")), ds, args, settings,
                                pick_device(args.device), groups)
    bad = np.load(runfolder.corrupted(args.run))
    faulty = np.unique(groups[bad]) if groups is not None and len(bad) else np.array([], int)
    own_labels = model.labels
    print(f"| method | queries | Spearman on the pool's {TARGET} beyond size [95%] | raw on the pool | with "
          f"leave-one-out | ranks of the faulty contributors (most harmful first) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in METHODS:
        measure = baselines.BASELINES[name].measure
        for mode, labels in (("all", None), ("others", own_labels)):
            harm = baselines.harm_of(name, model.recompute(measure, labels=labels), groups)  # this query set
            scores = baselines.scores_by_behavior(harm, directions)[TARGET]
            s = targets.score(scores, args.seed)
            order = np.argsort(-np.asarray(harm))  # most harmful first
            ranks = sorted(int(np.flatnonzero(order == j)[0]) + 1 for j in faulty)
            print(f"| {name} | {mode} | {s['rho']:+.3f} [{s['ci'][0]:+.2f}, {s['ci'][1]:+.2f}] | {s['rho_pool']:+.3f} | "
                  f"{s['rho_loo']:+.3f} | {', '.join(map(str, ranks)) or '-'} |", flush=True)


if __name__ == "__main__":
    run(main, parse_args())

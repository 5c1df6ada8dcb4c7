"""What pruning buys: ms per training step of the full and the structurally pruned digits model, and
the wall time of one retraining from scratch against one unlearning at 2%, 5% and 10% of the
training steps (the paper: 2% of the steps, 1/64 of the time), all measured in this one run.
With --run, the figures a finished pipeline run measured: the cost ratio per model (retraining /
unlearning wall time, and training compute) and the FID2 ratio (unlearned vs retrained on the same subset,
against two retrainings of one subset with different seeds).

    python -m bench.unlearn_cost                          # the images preset's recipe (digits-small, 500 steps)
    python -m bench.unlearn_cost --retrain-steps 2000 --arch digits
    python -m bench.unlearn_cost --run runs/default       # what the run measured (instant)
"""
import argparse

import torch

import runfolder
from data import run, load_dataset, make_masks, to_model_space
from ddpm import ARCHS, Schedule, UNet, count_params
from prune import PAPER_RATIO, prune_structured
from train_ddpm import new_state, train


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default=None, help="print the cost and FID2 ratios a finished run measured, and stop")
    p.add_argument("--arch", choices=sorted(ARCHS), default="digits-small", help="the images preset's")
    p.add_argument("--retrain-steps", type=int, default=500, help="the images preset's TRAIN_STEPS")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--ratio", type=float, default=PAPER_RATIO)
    p.add_argument("--repeats", type=int, default=5, help="alternating timing blocks per model")
    p.add_argument("--block", type=int, default=20, help="steps per timing block")
    return p.parse_args(argv)


def ms_per_step(model, schedule, x0_all, steps, args):
    """ms per step of the real training loop (minibatch, loss, backward, Adam, EMA)."""
    state = new_state(model, lr=1e-4, seed=0, device="cpu")
    train(state, schedule, x0_all, steps=steps, batch_size=args.batch_size, lr=1e-4, warmup=1, lr_schedule="constant",
          ema_decay=0.999, progress=False)
    return state["seconds"] / steps * 1e3


def timed_run(model, schedule, x0, steps, args):
    state = new_state(model, lr=2e-3, seed=0, device="cpu")
    train(state, schedule, x0, steps=steps, batch_size=args.batch_size, lr=2e-3, warmup=10, lr_schedule="cosine",
          ema_decay=0.999, progress=False)
    return state["seconds"]


def run_figures(run):
    """(cost ratio, retrain s, unlearn s, FID2 ratio, FID2, FID2 of two seeds): the run's report figures
    (eval_lds.py's Table 1 in results.json)."""
    import json
    with open(runfolder.results(run)) as f:
        t = json.load(f)["table1"]
    fid2, seeds = t["fid2_unlearn_vs_retrain"][0], t["fid_retrain_vs_retrain_other_seed"][0]
    return t["speedup"], t["seconds_retrain"], t["seconds_unlearn"], t["fid2_ratio"], fid2, seeds


def main(args):
    if args.run:
        ratio, retrain, unlearn, fid2_ratio, fid2, seeds = run_figures(args.run)
        print(f"{args.run}: wall time per model, retraining {retrain:.1f} s / unlearning {unlearn:.2f} s = "
              f"{ratio:.1f}x (goal >= 20x; the paper 64x)")
        print(f"{args.run}: FID2 unlearned vs retrained {fid2:.2f} / two retraining seeds {seeds:.2f} = "
              f"{fid2_ratio:.2f} (goal <= 1.5)")
        import json
        with open(runfolder.results(args.run)) as f:
            t = json.load(f)["table1"]
        if "compute_ratio" in t:  # what the budgets count: training MACs, the same on any day
            print(f"{args.run}: training compute per model, retraining {t['macs_retrain'] / 1e9:.1f} / unlearning "
                  f"{t['macs_unlearn'] / 1e9:.1f} GMACs = {t['compute_ratio']:.1f}x")
        return
    torch.manual_seed(0)
    schedule = Schedule()
    ds = load_dataset("digits")
    x0_all = to_model_space(ds.images)
    subset = x0_all[torch.from_numpy(make_masks(len(ds), 1, 0.5, seed=0)[0])]
    full = UNet(**ARCHS[args.arch])
    pruned = prune_structured(UNet(**ARCHS[args.arch]), args.ratio)
    print(f"threads {torch.get_num_threads()}; parameters full {count_params(full) / 1e3:.0f}k, "
          f"pruned {count_params(pruned) / 1e3:.0f}k")
    ms_per_step(full, schedule, x0_all, 5, args), ms_per_step(pruned, schedule, x0_all, 5, args)  # warm-up
    times = {"full": [], "pruned": []}
    for _ in range(args.repeats):  # alternate, so drifts of a shared machine hit both alike
        times["full"].append(ms_per_step(full, schedule, x0_all, args.block, args))
        times["pruned"].append(ms_per_step(pruned, schedule, x0_all, args.block, args))
    f, p = (sorted(times[k])[len(times[k]) // 2] for k in ("full", "pruned"))
    print(f"ms per step (median of {args.repeats} blocks of {args.block}), batch {args.batch_size}: "
          f"full {f:.1f}, pruned {p:.1f}, ratio {p / f:.2f} (goal <= 0.70)")

    retrain = timed_run(UNet(**ARCHS[args.arch]), schedule, subset, args.retrain_steps, args)
    print(f"one retraining from scratch: {args.retrain_steps} steps, {retrain:.1f} s")
    print("| unlearning | steps | seconds | retrain / unlearn |")
    print("| --- | --- | --- | --- |")
    for share in (0.02, 0.05, 0.10):
        steps = max(1, round(share * args.retrain_steps))
        model = prune_structured(UNet(**ARCHS[args.arch]), args.ratio)
        s = timed_run(model, schedule, subset, steps, args)
        print(f"| {share:.0%} of the steps | {steps} | {s:.2f} | {retrain / s:.1f}x |")
    print("(the paper, CIFAR-10 on GPUs: 2% of the steps, 18.9 vs 1207 min, 64x)")


if __name__ == "__main__":
    run(main, parse_args())

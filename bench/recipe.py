"""Which training recipe makes a full model worth attributing, and at what cost? Trains the full model of a preset's
data with each recipe (train_ddpm.py's own train(), one process, every core) and prints its wall time and the FID
and Inception Score of its samples at several DDIM step counts, beside the data's own floor (FID between two halves
of the reference set): issue 28 asks for a full model within 4x of the floor, sampled with a step count whose FID is
within 20% of DDIM-100's, and a recipe the pipeline's ~60 retrainings can afford.

    python -m bench.recipe --run runs/default                       # the default's data, four recipes
    python -m bench.recipe --run runs/default --recipes "300;1000;1000 --lr 4e-3;3000" --ddim 10,20,100

A recipe is train_ddpm.py's flags (steps first: "1000 --lr 4e-3 --batch-size 128"); the run folder gives the data
flags (its full model's), the architecture and the cached feature network. Nothing in the run is written but the
feature caches compute_fid.py would write; the models go to --out.
"""
import argparse
import os
import shlex

import runfolder
import train_ddpm
from bench.sampler import fid_by_steps, reference
from data import run
from ddpm import load_checkpoint
from runfolder import finished_run, load_behaviors


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="runs/default", help="a finished run (its full.pt gives the data and architecture)")
    p.add_argument("--recipes", default="300;1000;2000;1000 --lr 4e-3",
                   help="semicolon-separated recipes: training steps, then any train_ddpm.py flags")
    p.add_argument("--ddim", default="5,10,20,50,100", help="comma-separated DDIM step counts to sample each model with")
    p.add_argument("--n-samples", type=int, default=2000, help="samples per FID (the default preset's)")
    p.add_argument("--seed", type=int, default=0, help="training seed of every recipe (and of the initial noise)")
    p.add_argument("--out", default=None, help="folder of the trained models (default: RUN/models/recipes)")
    return p.parse_args(argv)


def train(run_args, recipe, out, seed):
    """Train one recipe on the run's data (resumes or skips like train_ddpm.py); returns (checkpoint, seconds)."""
    steps, *flags = shlex.split(recipe)
    argv = ["--out", out, "--steps", steps, "--seed", str(seed), "--grid", "0", "--ckpt-every", "0", *flags]
    for key in ("data", "corrupt", "fault", "corrupt_seed", "arch", "batch_size", "lr", "warmup", "lr_schedule",
                "ema_decay", "grad_clip"):  # the run's full model's, unless the recipe says otherwise
        flag = "--" + key.replace("_", "-")
        if key in run_args and flag not in flags and run_args[key] is not None:
            argv += [flag, str(run_args[key])]
    args = train_ddpm.parse_args(argv)
    if not os.path.exists(out):
        train_ddpm.main(args)
    ckpt = load_checkpoint(out)
    return ckpt, float(ckpt["seconds"])


def main(args):
    finished_run(args.run, runfolder.checkpoint(args.run, "full"), runfolder.behaviors(args.run, "full"))
    full = load_checkpoint(runfolder.checkpoint(args.run, "full"))
    run_args = full["args"]  # the full model's train_ddpm.py arguments (data flags, architecture, recipe)
    out_dir = args.out or runfolder.models(args.run, "recipes")
    os.makedirs(out_dir, exist_ok=True)
    ref = reference(args.run, load_behaviors(runfolder.behaviors(args.run, "full")))  # the run's own FID reference
    floor = ref[3]
    counts = [int(s) for s in args.ddim.split(",")]
    table = []
    for recipe in args.recipes.split(";"):
        name = "_".join(shlex.split(recipe)).replace("--", "").replace("/", "-")
        print(f"recipe {recipe!r}:", flush=True)
        ckpt, seconds = train(run_args, recipe, os.path.join(out_dir, f"{name}-s{args.seed}.pt"), args.seed)
        rows = fid_by_steps(ckpt, ref, args.n_samples, counts, args.seed, log=lambda m: print("  " + m, flush=True))
        table.append((recipe, seconds, rows))
    print(f"\nFull models of {args.run}'s data ({run_args.get('data', 'digits')}, "
          f"{args.n_samples} samples, {ref[5]} features); the data's floor: FID {floor:.1f} between two halves of the "
          f"reference set, IS {ref[4]:.2f} of the real images. FID (x the floor) / IS at each DDIM step count:\n")
    print("| recipe | training s | " + " | ".join(f"DDIM-{c}" for c in counts) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in counts) + " |")
    for recipe, seconds, rows in table:
        print(f"| {recipe} | {seconds:.1f} | " + " | ".join(f"{f:.1f} ({f / floor:.1f}x) / {s:.2f}" for _, f, s, _ in rows)
              + " |")


if __name__ == "__main__":
    run(main, parse_args())

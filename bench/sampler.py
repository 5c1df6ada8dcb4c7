"""How good is a run's full model, and how many DDIM steps does its sampler need? FID and Inception Score of the
full model's samples at several DDIM step counts (the same initial noise at every count, the run's feature network
and sample size), beside the data's own floor: the FID between two halves of the reference set and the real images'
Inception Score. The smallest step count whose FID is within 20% of DDIM-100's is the one the table recommends.

    python -m bench.sampler --run runs/default                     # the default preset's full model
    python -m bench.sampler --run runs/default --steps 5,10,20,50,100,200 --n-samples 4000

Each FID costs one sampling pass of --n-samples images at that step count (DDIM-100 of 2,000 digits: ~25 s on 2 cores).
"""
import argparse
import json
import time

import torch

import runfolder
from compute_fid import sample_model
from features import cnn_extractor, features_of, inception_extractor, reference_floor, reference_stats, softmax
from metrics import feature_stats, frechet_distance, inception_score
from data import run, load_dataset
from ddpm import Schedule, load_checkpoint
from runfolder import finished_run, load_behaviors


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="runs/default", help="a run with full.pt and behaviors/full.npz")
    p.add_argument("--steps", default="5,10,20,50,100", help="comma-separated DDIM step counts")
    p.add_argument("--n-samples", type=int, default=None, help="samples per count (default: the run's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial noise (compute_fid's)")
    return p.parse_args(argv)


def reference(run, measured):
    """(extract, mu, sigma, floor FID, real IS, kind) of a run's feature network and reference images as compute_fid.py
    measured the run's models (`measured`: a behaviours file of the run: its reference set, --n-ref and the seed of
    that choice and of the feature network, the feature kind), from the run's caches."""
    data = json.loads(str(measured["args"][0])).get("data", "digits")  # the models' training data
    clean = load_dataset(data)
    ref = load_dataset(str(measured["ref_data"])) if str(measured["ref_data"]) not in ("", data) else clean
    kind = str(measured["features"])
    seed = int(measured["ref_seed"]) if "ref_seed" in measured else 0  # (files written before it was kept: 0)
    n_ref = int(measured["n_ref"]) if "n_ref" in measured else 0
    extract = cnn_extractor(clean, run, seed, "cpu")[0] if kind == "cnn" else inception_extractor(None, "cpu")[0]
    mu, sigma = reference_stats(extract, ref, run, kind, 500, n_ref, seed)
    floor, real_is = reference_floor(extract, ref, run, kind, 500, n_ref, seed)
    return extract, mu, sigma, floor, real_is, kind


def fid_by_steps(ckpt, ref, n, step_counts, seed=0, log=print):
    """[(DDIM steps, FID, IS, seconds)] of a checkpoint's samples from one seeded initial noise (compute_fid's)."""
    extract, mu, sigma = ref[:3]
    c, h = ckpt["config"]["in_channels"], ckpt["config"]["resolution"]
    noise = torch.randn((n, c, h, h), generator=torch.Generator().manual_seed(seed))
    rows = []
    for steps in step_counts:
        t0 = time.perf_counter()
        x = sample_model(ckpt, Schedule(**ckpt["schedule"]), noise, steps, 500, "cpu")
        feats, logits = features_of(extract, x, 500)
        rows.append((steps, frechet_distance(mu, sigma, *feature_stats(feats)), inception_score(softmax(logits)),
                     time.perf_counter() - t0))
        log(f"DDIM-{steps}: FID {rows[-1][1]:.1f}, IS {rows[-1][2]:.2f} ({rows[-1][3]:.1f} s)")
    return rows


def main(args):
    finished_run(args.run, runfolder.checkpoint(args.run, "full"), runfolder.behaviors(args.run, "full"))
    full = load_behaviors(runfolder.behaviors(args.run, "full"))
    ref = reference(args.run, full)
    n = args.n_samples or int(full["n_samples"])
    rows = fid_by_steps(load_checkpoint(runfolder.checkpoint(args.run, "full")), ref, n,
                        [int(s) for s in args.steps.split(",")], args.seed, log=lambda m: print(m, flush=True))
    floor, real_is, kind = ref[3:]
    best = dict((s, f) for s, f, _, _ in rows).get(100)
    print(f"\nThe full model of {args.run} ({n} samples, {kind} features); the data's floor: FID {floor:.1f} between "
          f"two halves of the reference set, IS {real_is:.2f} of the real images.\n")
    print("| DDIM steps | FID | x the floor | / DDIM-100's FID | IS | seconds |\n| --- | --- | --- | --- | --- | --- |")
    for steps, fid, score, seconds in rows:
        ratio = f"{fid / best:.2f}" if best else "n/a"
        print(f"| {steps} | {fid:.1f} | {fid / floor:.1f}x | {ratio} | {score:.2f} | {seconds:.1f} |")
    if best:
        ok = [s for s, f, _, _ in rows if f <= 1.2 * best]
        print(f"\nfewest steps within 20% of DDIM-100's FID: {min(ok)}")


if __name__ == "__main__":
    run(main, parse_args())

"""Is the behaviour above its own noise? For a pool of unlearned models of a run, print the FID's
sampling noise (std over 5 initial-noise seeds of one model) next to the spread of FID across the
pool (std over models, all sampled from the same noise), at several sample counts, and the cost of
one behaviour next to the cost of one unlearned model.

    bash run_pipeline.sh                                  # makes runs/default
    python bench/fid_noise.py --run runs/default          # digits defaults: DDIM 25 steps
    python bench/fid_noise.py --run runs/default --n-samples 500,1000,2000 --pool 32
"""
import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from compute_fid import (cnn_extractor, feature_stats, features_of, frechet_distance, list_models,  # noqa: E402
                         reference_stats, sample_model)
from data import load_dataset  # noqa: E402
from ddpm import Schedule, load_checkpoint  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="runs/default", help="run folder with models/unlearn and masks/unlearn.npy")
    p.add_argument("--data", default="digits")
    p.add_argument("--n-samples", default="500,1000,2000", help="comma-separated sample counts to compare")
    p.add_argument("--ddim-steps", type=int, default=25, help="as the preset samples (default preset: 25)")
    p.add_argument("--pool", type=int, default=24, help="unlearned models in the spread")
    p.add_argument("--seeds", type=int, default=5, help="noise seeds for the noise estimate")
    return p.parse_args(argv)


def main(args):
    clean = load_dataset(args.data)
    extract, _, _ = cnn_extractor(clean, args.run, 0, "cpu")
    mu, sigma = reference_stats(extract, clean, args.run, "cnn", 500)
    entries = list_models(os.path.join(args.run, "models", "unlearn"), os.path.join(args.run, "masks", "unlearn.npy"))
    ckpts = [load_checkpoint(p) for p, _, _ in entries[:args.pool]]
    schedule = Schedule(**ckpts[0]["schedule"])
    c, h = clean.images.shape[1:3]

    def fid(ckpt, n, seed):
        noise = torch.randn((n, c, h, h), generator=torch.Generator().manual_seed(seed))
        f, _ = features_of(extract, sample_model(ckpt, schedule, noise, args.ddim_steps, 500, "cpu"), 500)
        return frechet_distance(*feature_stats(f), mu, sigma)

    print(f"{len(ckpts)} unlearned models of {args.run}, DDIM {args.ddim_steps} steps, threads {torch.get_num_threads()}")
    print("| n samples | noise: std over seeds, one model | spread: std over models, same noise | spread / noise |"
          " seconds per behaviour |")
    print("| --- | --- | --- | --- | --- |")
    for n in map(int, args.n_samples.split(",")):
        noise_std = np.std([fid(ckpts[0], n, seed) for seed in range(args.seeds)], ddof=1)
        t0 = time.perf_counter()
        pool = [fid(ck, n, 0) for ck in ckpts]
        per_model = (time.perf_counter() - t0) / len(ckpts)
        spread = np.std(pool, ddof=1)
        print(f"| {n} | {noise_std:.2f} | {spread:.2f} | {spread / noise_std:.1f}x | {per_model:.2f} |")
    print(f"unlearning cost per model: {np.mean([ck['seconds'] for ck in ckpts]):.2f} s "
          f"({ckpts[0]['args']['steps']} steps); goal: spread >= 3x noise")


if __name__ == "__main__":
    main(parse_args())

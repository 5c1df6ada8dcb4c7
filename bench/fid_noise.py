"""Is the behaviour above its own noise? For a pool of unlearned models of a run, print the FID's
sampling noise (std over 5 initial-noise seeds of one model, pooled over a few models) next to the
spread of FID across the pool (std over models, all sampled from the same noise), for several
sample counts and DDIM step counts, and the cost of one behaviour next to the cost of one
unlearned model. Sampling costs about n x DDIM steps, so fewer steps buy more samples.

    bash run_pipeline.sh                                        # makes runs/default
    python bench/fid_noise.py --run runs/default                # the default preset's setting
    python bench/fid_noise.py --run runs/default --settings 2500x25,4000x10 --pool 32
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
    p.add_argument("--settings", default="1000x25,6000x10",
                   help="comma-separated NxS: N samples per model with S DDIM steps")
    p.add_argument("--pool", type=int, default=24, help="unlearned models in the spread")
    p.add_argument("--seeds", type=int, default=5, help="noise seeds for the noise estimate")
    p.add_argument("--noise-models", type=int, default=5, help="models whose noise std is pooled")
    return p.parse_args(argv)


def main(args):
    clean = load_dataset(args.data)
    extract, _, _ = cnn_extractor(clean, args.run, 0, "cpu")
    mu, sigma = reference_stats(extract, clean, args.run, "cnn", 500)
    entries = list_models(os.path.join(args.run, "models", "unlearn"), os.path.join(args.run, "masks", "unlearn.npy"))
    ckpts = [load_checkpoint(p) for p, _, _ in entries[:args.pool]]
    schedule = Schedule(**ckpts[0]["schedule"])
    c, h = clean.images.shape[1:3]

    def fid(ckpt, n, steps, seed):
        noise = torch.randn((n, c, h, h), generator=torch.Generator().manual_seed(seed))
        f, _ = features_of(extract, sample_model(ckpt, schedule, noise, steps, 500, "cpu"), 500)
        return frechet_distance(*feature_stats(f), mu, sigma)

    print(f"{len(ckpts)} unlearned models of {args.run}; noise pooled over {args.noise_models} models x {args.seeds} "
          f"seeds; {torch.get_num_threads()} threads")
    print("| n samples | DDIM steps | noise: std over seeds | spread: std over models, same noise | spread / noise |"
          " seconds per behaviour |")
    print("| --- | --- | --- | --- | --- | --- |")
    for setting in args.settings.split(","):
        n, steps = map(int, setting.split("x"))
        # pooled within-model variance: the mean of each model's variance over seeds
        noise_std = np.sqrt(np.mean([np.var([fid(ck, n, steps, 100 + s) for s in range(args.seeds)], ddof=1)
                                     for ck in ckpts[:args.noise_models]]))
        t0 = time.perf_counter()
        pool = [fid(ck, n, steps, 0) for ck in ckpts]
        per_model = (time.perf_counter() - t0) / len(ckpts)
        spread = np.std(pool, ddof=1)
        print(f"| {n} | {steps} | {noise_std:.2f} | {spread:.2f} | {spread / noise_std:.1f}x | {per_model:.2f} |",
              flush=True)
    print(f"unlearning cost per model: {np.mean([ck['seconds'] for ck in ckpts]):.2f} s "
          f"({ckpts[0]['args']['steps']} steps, as the pipeline ran it); goal: spread >= 3x noise")


if __name__ == "__main__":
    main(parse_args())

"""How far can image-level attribution get at a given size, even with a faithful behaviour? A planted
game at the image level's size (the images preset): n training images, a fraction of them corrupted, and a subset's
behaviour that tracks the number of corrupted images it holds (as the default run's FIDs do, measured:
a retraining's FID correlates 0.65 with that count, an unlearned model's 0.26, the two-seed ground
truth's 0.63-0.73). Each model's behaviour is r * z + sqrt(1 - r^2) * noise, z the standardised count;
the ground truth of the K held-out subsets has its own r_gt. The project's estimators are fitted on M
such models; printed: the corrupted-image detection AUC and the LDS, mean over repetitions.

    python -m bench.attribution_ceiling                             # the images preset's sizes
    python -m bench.attribution_ceiling --models 224,1000,4000 --r 1,0.26 --r-gt 0.7
    python -m bench.attribution_ceiling --contributors 20 --bad-share 0.67 --models 64 --r 1,0.7,0.4

--contributors G: the contributor level. G contributors of equal size, the --bad-contributors of them giving
images of which --bad-share are corrupted (a mix when below 1), the rest clean. A model's behaviour follows the
share of corrupted images among its subset's images (what a model trained on S responds to: not additive in
the contributors, least of all at the extreme sizes the Shapley kernel weighs most); the model that saw no
data (v(empty)) lies far above every other, as an untrained model's FID does. Estimators, each fitted on the
same pool: Shapley values on KernelSHAP's subsets (sizes from the kernel) and on Leverage SHAP's (every size
equally often), Banzhaf and the datamodel on each of those pools and on half-subsets; printed: the
bad-contributor AUC and the LDS on half-subsets of contributors.

Read beside a run's report: whether the number of models, the behaviour's noise or the ground truth's
noise is what holds a run's LDS and AUC down.
"""
import argparse

import numpy as np

from data import run, make_masks
from eval_lds import detection_auc, lds
from fit_datamodel import attribute


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1797, help="training images (digits: 1797)")
    p.add_argument("--corrupt", type=float, default=0.1, help="fraction of them corrupted")
    p.add_argument("--models", default="16,224,1000", help="comma-separated model counts M")
    p.add_argument("--r", default="1,0.65,0.26", help="comma-separated correlations of a model's behaviour "
                   "with the corrupted count (1: a noiseless behaviour)")
    p.add_argument("--r-gt", type=float, default=0.7, help="the ground truth's correlation with the count")
    p.add_argument("--k", type=int, default=24, help="held-out subsets")
    p.add_argument("--methods", default="datamodel,banzhaf")
    p.add_argument("--reps", type=int, default=4, help="repetitions (seeds 0..reps-1)")
    p.add_argument("--contributors", type=int, default=0, help="G > 0: the contributor-level game of G contributors")
    p.add_argument("--bad-contributors", type=int, default=3, help="contributors who gave corrupted images")
    p.add_argument("--bad-share", type=float, default=2 / 3, help="share of a bad contributor's images that are "
                   "corrupted (1: bad images only; 2/3: a mix)")
    return p.parse_args(argv)


def planted(rng, X, bad, r):
    """r * (standardised number of bad images in each row) + sqrt(1 - r^2) * standard normal noise."""
    n, s = X.shape[1], int(X[0].sum())
    q = len(bad) / n  # a row of s images holds a Hypergeometric(n, len(bad), s) number of bad ones
    count = X[:, bad].sum(1)
    z = (count - s * q) / np.sqrt(s * q * (1 - q) * (n - s) / (n - 1))
    return r * z + np.sqrt(1 - r * r) * rng.standard_normal(len(X))


def one(n, n_bad, m, r, r_gt, k, method, seed):
    """(AUC, LDS) of one planted game: subsets of half the images as the pipeline draws them."""
    rng = np.random.default_rng(seed)
    bad = rng.choice(n, n_bad, replace=False)
    X = make_masks(n, m, 0.5, seed + 1).astype(np.float64)
    held = make_masks(n, k, 0.5, seed + 2).astype(np.float64)
    scores, intercept, _ = attribute(X, planted(rng, X, bad, r), method, seed=seed)
    return detection_auc(scores, bad), lds(scores, intercept, held, planted(rng, held, bad, r_gt))


def contributor_game(g, n_bad, bad_share, m, r, r_gt, k, pool, method, seed, per=90):
    """(AUC of the bad contributors, LDS) of one planted contributor game; see the module docstring."""
    from data import make_kernel_masks
    rng = np.random.default_rng(seed)
    bad = rng.choice(g, n_bad, replace=False)
    corrupted = np.zeros(g)
    corrupted[bad] = round(bad_share * per)  # corrupted images of each contributor, of its `per` images

    def behaviour(X, r):  # the share of corrupted images, standardised over the subsets, with fidelity r
        share = (X @ corrupted) / np.maximum(X.sum(1) * per, 1)
        z = (share - share.mean()) / (share.std() or 1.0)
        return r * z + np.sqrt(1 - r * r) * rng.standard_normal(len(X))
    X = (make_masks(g, m, 0.5, seed + 1) if pool == "half" else
         make_kernel_masks(g, m, seed + 1, pool)).astype(np.float64)
    held = make_masks(g, k, 0.5, seed + 2).astype(np.float64)
    y = behaviour(np.vstack([X, np.ones((1, g))]), r)  # the last row: v(full), as noisy as any model
    extra = dict(v_empty=float(y[:-1].max() + 5 * y[:-1].std()), v_full=float(y[-1])) if method == "shapley" else {}
    scores, intercept, _ = attribute(X, y[:-1], method, seed=seed, **extra)
    return detection_auc(scores, bad), lds(scores, intercept, held, behaviour(held, r_gt))


def main_contributors(args):
    n_bad = args.bad_contributors
    print(f"{args.contributors} contributors, {n_bad} of them giving {args.bad_share:.0%} corrupted images; K = {args.k} "
          f"held-out half-subsets, ground truth r = {args.r_gt}; mean over {args.reps} seeds")
    print("| estimator | pool (subset sizes) | models | r | bad-contributor AUC | LDS |")
    print("| --- | --- | --- | --- | --- | --- |")
    for pool in ("kernel", "leverage", "half"):
        for method in args.methods.split(","):
            if pool == "half" and method == "shapley":  # Shapley values need subsets of every size
                continue
            for m in (int(v) for v in args.models.split(",")):
                for r in (float(v) for v in args.r.split(",")):
                    res = np.array([contributor_game(args.contributors, n_bad, args.bad_share, m, r, args.r_gt, args.k,
                                                     pool, method, s) for s in range(args.reps)])
                    auc, rho = res.mean(0)
                    print(f"| {method} | {pool} | {m} | {r:.2f} | {auc:.3f} | {rho:.3f} |", flush=True)


def main(args):
    if args.contributors:
        return main_contributors(args)
    n_bad = int(round(args.corrupt * args.n))
    print(f"{args.n} images, {n_bad} corrupted; K = {args.k} held-out subsets, ground truth r = {args.r_gt}; "
          f"mean over {args.reps} seeds")
    print(f"{'method':>10} {'models':>7} {'r':>5} {'AUC':>6} {'LDS':>6}")
    for method in args.methods.split(","):
        for m in (int(v) for v in args.models.split(",")):
            for r in (float(v) for v in args.r.split(",")):
                res = np.array([one(args.n, n_bad, m, r, args.r_gt, args.k, method, s) for s in range(args.reps)])
                auc, rho = res.mean(0)
                print(f"{method:>10} {m:>7} {r:>5.2f} {auc:>6.3f} {rho:>6.3f}", flush=True)


if __name__ == "__main__":
    run(main, parse_args())

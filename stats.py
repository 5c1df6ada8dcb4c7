"""Statistics the evaluation shares, each a small function with its test (tests/test_stats.py): the standard errors
of an estimator over subsamples of its models, normal p-values, and Holm's correction of a family of them. numpy
and scipy only, as eval_lds.py.

    from stats import jackknife_inference, holm, two_sided_p
"""
import numpy as np
from scipy.stats import norm

KEEP = 0.9  # the share of the models each subsample keeps (the delete-d jackknife's d = n / 10)


def subsamples(n, draws, seed, keep=KEEP):
    """(draws, m) row indices, m = round(keep n): each a subsample of n models without replacement (seeded), so
    that no model counts twice, as it would in a bootstrap at the pool's size."""
    rng = np.random.default_rng(seed)
    m = min(n - 1, max(1, round(keep * n)))
    return np.stack([rng.choice(n, m, replace=False) for _ in range(draws)])


def jackknife_inference(fit, X, y, draws, seed, keep=KEEP, estimates=None):
    """(estimates, standard errors): fit(X, y) -> (k,) on all n models (rows of X, y), and the delete-d jackknife's
    standard errors (Shao & Wu 1989) from `draws` subsamples of m models, d = n - m: sqrt(m / d x the mean squared
    deviation of the subsamples' estimates from all models'). For a mean this is the closed form sd / sqrt(n); for
    a regression with few models per coefficient it errs large (conservative), the less the nearer m is to n
    (tests/test_stats.py measures it). `estimates`: fit(X, y) where the caller has it already."""
    n = len(y)
    estimates = np.asarray(fit(X, y) if estimates is None else estimates, dtype=np.float64)
    rows = subsamples(n, draws, seed, keep)
    deviations = np.stack([fit(X[r], y[r]) for r in rows]) - estimates
    m = rows.shape[1]
    return estimates, np.sqrt(m / (n - m) * np.mean(deviations ** 2, axis=0))


def two_sided_p(estimate, se):
    """p of a normal test of estimate = 0 (1 where the standard error is 0 and the estimate too)."""
    estimate, se = np.asarray(estimate, dtype=np.float64), np.asarray(se, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, np.abs(estimate) / se, np.where(estimate == 0, 0.0, np.inf))
    return 2 * norm.sf(z)


def holm(p):
    """Holm's step-down adjusted p-values (Holm 1979): rejecting those <= alpha keeps the chance of any false
    rejection in the family at alpha, whatever the dependence between the tests."""
    p = np.asarray(p, dtype=np.float64)
    order = np.argsort(p)
    m = len(p)
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted

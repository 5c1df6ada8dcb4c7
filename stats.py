"""Statistics the evaluation shares, each a small function with its test (tests/test_stats.py): the LDS and its
bootstrap over the held-out subsets (an interval of the number printed: a mean over draws of a method's models), the
paired test of two methods, TOST's equivalence test, Holm's correction of a declared family, the minimum detectable
difference and the power analysis that sized the ground truth, the crossing of a monotone curve, and the standard
errors of an estimator over subsamples of its models. numpy and scipy only, as eval_lds.py.

    from stats import bootstrap_lds, declared_family, holm, mean_lds
"""
import numpy as np
from scipy.stats import norm, rankdata

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


# ----------------------------------------------------------------------------------------------
# LDS and its resampling: an interval for the number printed

BOOTSTRAP = 2000  # resamples of the held-out subsets


def pearson_rows(a, b):
    """Pearson's r of each row of a with the same row of b; 0 where either row is constant."""
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    norm_ab = np.sqrt((a * a).sum(1) * (b * b).sum(1))
    return np.divide((a * b).sum(1), norm_ab, out=np.zeros(len(a)), where=norm_ab > 0)


def spearman(pred, y):
    """Spearman's rho: Pearson's r of the ranks (ties averaged); a constant prediction (a datamodel that chose
    all-zero scores) ranks nothing, so it counts as 0 rather than undefined."""
    return float(pearson_rows(rankdata(pred)[None], rankdata(y)[None])[0])


def lds_per_draw(preds, y):
    """Spearman's rho of each row of preds (D, K), one row per draw of a method's models, with y (K,)."""
    preds = np.atleast_2d(np.asarray(preds, dtype=np.float64))
    return pearson_rows(rankdata(preds, axis=1), np.tile(rankdata(y), (len(preds), 1)))


def mean_lds(preds, y):
    """The LDS a method prints: its Spearman correlation with y, averaged over the rows of preds (D, K), one row per
    draw of its models (one row: a fixed prediction)."""
    return float(lds_per_draw(preds, y).mean())


def resamples(k, n, seed):
    """(n, k) indices: n bootstrap resamples of k held-out subsets (seeded)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, k, (n, k))


def bootstrap_lds(preds, y, seed=0, n=BOOTSTRAP):
    """mean_lds of each method on n resamples of the held-out subsets: preds is a list of (K,) or (D_i, K)
    predictions (D_i draws of method i's models). Every method sees the same resamples (differences are paired),
    and each resample averages a method's LDS over all its draws, as the printed mean does: the resamples spread as
    that mean would over another K held-out subsets (a resample where a prediction is constant counts as 0).
    Returns (len(preds), n).

    A resample is kept as how often it drew each subset (counts (n, K)): Spearman's rho of a resample is the Pearson
    correlation, weighted by those counts, of the ranks each subset's value takes within it (ties averaged, as
    scipy's rankdata gives them), which resample_ranks reads off one sort of the K values: no sort per resample."""
    y = np.asarray(y, dtype=np.float64)
    idx = resamples(len(y), n, seed)
    counts = np.zeros((n, len(y)))
    np.add.at(counts, (np.arange(n)[:, None], idx), 1.0)
    total = counts.sum(1)
    rank_y = resample_ranks(y, counts)
    rank_y -= (counts * rank_y).sum(1, keepdims=True) / total[:, None]  # centred: sum_j w_j rank_y_j = 0
    weighted_y = counts * rank_y
    var_y = (weighted_y * rank_y).sum(1)
    out = []
    for p in preds:
        p = np.atleast_2d(np.asarray(p, dtype=np.float64))
        rhos = []
        for row in p:
            r = resample_ranks(row, counts)
            weighted = counts * r
            mean = weighted.sum(1) / total
            var = (weighted * r).sum(1) - total * mean ** 2
            norm_ab = np.sqrt(np.clip(var, 0, None) * var_y)
            ok = norm_ab > 1e-9 * total ** 2  # a constant resample (rank variance 0 up to rounding) counts as 0
            rhos.append(np.divide((weighted_y * r).sum(1), norm_ab, out=np.zeros(n), where=ok))
        out.append(np.mean(rhos, axis=0))
    return np.stack(out)


def resample_ranks(values, counts):
    """(n, K): the average rank each of the K values takes within each resample that drew value j counts[b, j]
    times: the number of drawn values below it, plus (its tie group's draws + 1) / 2."""
    order = np.argsort(values, kind="stable")
    drawn = counts[:, order]
    ties = np.diff(values[order]) == 0
    if ties.any():  # tie groups pool their draws
        starts = np.flatnonzero(np.r_[True, ~ties])
        group = np.cumsum(np.r_[True, ~ties]) - 1
        pooled = np.add.reduceat(drawn, starts, axis=1)
        below = np.cumsum(pooled, axis=1) - pooled
        sorted_ranks = (below + (pooled + 1) / 2)[:, group]
    else:
        sorted_ranks = np.cumsum(drawn, axis=1) - drawn / 2 + 0.5
    ranks = np.empty_like(sorted_ranks)
    ranks[:, order] = sorted_ranks
    return ranks


def interval(samples, level=0.95):
    """The percentile interval of resampled values."""
    lo, hi = np.percentile(samples, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def bootstrap_p(diff):
    """Two-sided p of "the difference is 0" from its B resamples: twice the share on the smaller side of 0, counted
    as (c + 1) / (B + 1) so that it is never below what B resamples can show."""
    diff = np.asarray(diff)
    c = min(int((diff <= 0).sum()), int((diff >= 0).sum()))
    return float(min(1.0, 2 * (c + 1) / (len(diff) + 1)))


def tost_p(diff, margin):
    """p of equivalence, "|difference| < margin", by two one-sided tests (Schuirmann 1987) on its B resamples: the
    larger of the shares at or beyond +margin and at or beyond -margin, each (c + 1) / (B + 1). Small only where the
    interval lies well inside (-margin, +margin)."""
    diff, b = np.asarray(diff), len(diff)
    return float(max(((diff >= margin).sum() + 1) / (b + 1), ((diff <= -margin).sum() + 1) / (b + 1)))


def min_detectable(se, alpha=0.05, power=0.8):
    """The smallest true difference a two-sided test at `alpha` detects with `power`, given the difference's standard
    error: (z_{1 - alpha/2} + z_power) x se (normal approximation)."""
    return float((norm.ppf(1 - alpha / 2) + norm.ppf(power)) * se)


VERDICTS = ("ahead", "level", "behind", "undecided")


def verdict(diff, p_diff, p_equal, alpha=0.05):
    """The word a comparison may use: ahead or behind where its (Holm-adjusted) test of a difference rejects, level
    where its (Holm-adjusted) equivalence test does, else undecided."""
    if p_diff <= alpha:
        return "ahead" if diff > 0 else "behind"
    return "level" if p_equal <= alpha else "undecided"


def declared_family(diffs, alpha=0.05, margin=0.10):
    """Each declared comparison from its paired resamples of "method minus the other": the difference's interval,
    Holm-adjusted two-sided p (a difference) and TOST p (equivalence within margin) over the family, the minimum
    difference the design detects with 80% power (from the resamples' standard deviation), and the verdict.
    diffs: {name: (point difference, resamples (B,))}; returns {name: dict}."""
    names = list(diffs)
    p_diff = holm([bootstrap_p(d) for _, d in diffs.values()]) if names else []
    p_equal = holm([tost_p(d, margin) for _, d in diffs.values()]) if names else []
    out = {}
    for j, name in enumerate(names):
        point, d = diffs[name]
        out[name] = dict(diff=float(point), ci=interval(d), p=float(p_diff[j]), p_raw=bootstrap_p(d),
                         p_equivalence=float(p_equal[j]), mdd=min_detectable(np.std(d, ddof=1), alpha),
                         verdict=verdict(point, p_diff[j], p_equal[j], alpha), n_boot=len(d))
    return out


def resolved_comparison(key, have, fitted_budgets):
    """The key a declared comparison reads in a run: 'retraining' (retraining at unlearning's compute) where the run
    has that row, else, where unlearning's compute buys fewer than two retrainings (a fit needs two), retraining at the
    least budget of the curve with a fit on both sides, 'budget:B' (at more compute than unlearning's); every other key
    as declared. have: the keys the run has a comparison for; fitted_budgets: those budgets, in any order."""
    if key == "retraining" and key not in have and len(fitted_budgets):
        return f"budget:{min(fitted_budgets):g}"
    return key


def prediction_pair(key):
    """The two rows of predictions a resolved comparison subtracts (A's LDS minus B's): budget:B, unlearning minus
    retraining at budget B; A/B, row A minus row B; any other key, unlearning minus that row."""
    if key.startswith("budget:"):
        return f"{key}:unlearn", f"{key}:retrain"
    first, _, second = key.rpartition("/")
    return "method:" + (first or "unlearning"), "method:" + second


# ----------------------------------------------------------------------------------------------
# Power: how many held-out subsets a comparison of two LDS needs

def dependent_z_se(rho_a, rho_b, r_ab, k, rank=True):
    """The standard error of Fisher's z(rho_a) - z(rho_b), two correlations with one variable in common (the ground
    truth) whose other variables (two methods' predictions) correlate at r_ab, over k subsets: Steiger's (1980,
    eq. 14) sqrt((2 - 2c) / (k - 3)); for Spearman's rho each z's variance is larger by 1 + rbar^2 / 2 (Bonett &
    Wright 2000)."""
    rbar2 = ((rho_a + rho_b) / 2) ** 2
    psi = r_ab * (1 - 2 * rbar2) - 0.5 * rbar2 * (1 - 2 * rbar2 - r_ab ** 2)
    c = psi / (1 - rbar2) ** 2
    return np.sqrt((2 - 2 * c) * ((1 + rbar2 / 2) if rank else 1.0) / (k - 3))


def power_of_difference(rho_a, rho_b, r_ab, k, alpha=0.05, rank=True):
    """The power of a two-sided test at `alpha` to find LDS rho_a != rho_b on k held-out subsets."""
    z = abs(np.arctanh(rho_a) - np.arctanh(rho_b)) / dependent_z_se(rho_a, rho_b, r_ab, k, rank)
    c = norm.ppf(1 - alpha / 2)
    return float(norm.sf(c - z) + norm.cdf(-c - z))


def k_for_power(rho_a, rho_b, r_ab, power=0.8, alpha=0.05, rank=True):
    """The fewest held-out subsets for which power_of_difference reaches `power`."""
    k = 5
    while power_of_difference(rho_a, rho_b, r_ab, k, alpha, rank) < power:
        k += 1
    return k


# ----------------------------------------------------------------------------------------------
# Where a noisy increasing curve reaches a target: one statistic for the point and every resample

def isotonic(values):
    """The nondecreasing sequence closest to `values` in least squares (pool adjacent violators, equal weights)."""
    blocks = []  # [mean, size]
    for v in np.asarray(values, dtype=np.float64):
        blocks.append([v, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            (m2, n2), (m1, n1) = blocks.pop(), blocks.pop()
            blocks.append([(m1 * n1 + m2 * n2) / (n1 + n2), n1 + n2])
    return np.concatenate([np.full(n, m) for m, n in blocks])


def crossing(x, values, target):
    """The x at which the isotonic fit of values (over increasing x) first reaches target, interpolated linearly
    between the two points around it: x[0] where the first point reaches it, inf where none does."""
    fit = isotonic(values)
    hit = np.flatnonzero(fit >= target)
    if not len(hit):
        return float("inf")
    j = hit[0]
    if j == 0:
        return float(x[0])
    return float(x[j - 1] + (target - fit[j - 1]) / (fit[j] - fit[j - 1]) * (x[j] - x[j - 1]))


# ----------------------------------------------------------------------------------------------
# Detection of the known-bad units

def auc_permutation_p(scores, bad, exact_up_to=20000):
    """One-sided p of a detection AUC under no relation between scores and faults: the share of all ways to label
    len(bad) of the units bad whose bad units rank at least as high (the AUC is their rank sum, shifted: Mann-Whitney),
    exact where there are at most `exact_up_to` labellings (3 of 20 units: 1,140); else Mann-Whitney's normal
    approximation (hundreds of bad images of thousands)."""
    from itertools import combinations
    from math import comb
    from scipy.stats import mannwhitneyu
    scores = np.asarray(scores, dtype=np.float64)
    bad = np.atleast_1d(np.asarray(bad))
    n, k = len(scores), len(bad)
    if comb(n, k) > exact_up_to:
        clean = np.setdiff1d(np.arange(n), bad)
        return float(mannwhitneyu(scores[bad], scores[clean], alternative="greater", method="asymptotic").pvalue)
    ranks = rankdata(scores)
    observed = ranks[bad].sum()
    sums = np.array([ranks[list(c)].sum() for c in combinations(range(n), k)])
    return float((sums >= observed - 1e-9).mean())


# ----------------------------------------------------------------------------------------------
# Repetitions: the run-to-run noise of the method's side

def bootstrap_repeated(preds, y, seed=0, n=BOOTSTRAP):
    """bootstrap_lds over R independent repetitions of the methods (preds[r][i]: method i's (D, K) or (K,) predictions
    in repetition r, all of the same K held-out subsets y): each resample draws R repetitions with replacement and
    one resample of the held-out subsets (shared by every method and repetition: paired), and averages the methods'
    LDS over the drawn repetitions, so its spread holds the held-out subsets' noise and the run-to-run noise of
    the methods (with few repetitions the latter is underestimated by about (R - 1) / R). Returns (methods, n)."""
    per_rep = np.stack([bootstrap_lds(p, y, seed, n) for p in preds])  # (R, methods, n): the same held-out resamples
    reps = np.random.default_rng([seed, 1]).integers(0, len(preds), (n, len(preds)))
    return per_rep[reps.T, :, np.arange(n)].mean(axis=0).T


# ----------------------------------------------------------------------------------------------
# The counterfactual test: is a method's removal better than random removal?

def rank_sum_p(method, random):
    """One-sided exact p that a method's improvements (one per seed, (S,)) rank no higher among the random sets' of
    the same seed ((S, J)) than a random set would: under the null each seed's method is exchangeable with its J
    random sets, so its rank among the J + 1 (ties averaged; J + 1 = best) is uniform, and the sum of ranks over the S
    seeds has the convolution of S uniforms as its law. Each seed's method set is the method's own (its own run), so
    the test carries the variance of the method's set, not only that of the random draws."""
    method, random = np.asarray(method, dtype=np.float64), np.atleast_2d(np.asarray(random, dtype=np.float64))
    j = random.shape[1]
    ranks = (random < method[:, None]).sum(1) + 0.5 * (random == method[:, None]).sum(1) + 1
    law = np.ones(1)
    for _ in range(len(method)):
        law = np.convolve(law, np.full(j + 1, 1 / (j + 1)))  # sum of ranks - S: each term uniform on 0..J
    observed = ranks.sum() - len(method)
    return float(law[int(np.ceil(observed - 1e-9)):].sum())

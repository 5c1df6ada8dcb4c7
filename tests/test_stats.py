"""stats.py against closed forms and simulated replicates whose truth is known."""
import numpy as np
import pytest

from stats import holm, jackknife_inference, subsamples, two_sided_p


def test_holm_matches_a_hand_computation():
    # sorted 0.01, 0.02, 0.03, 0.5 -> 4 * 0.01, max(3 * 0.02, .04), max(2 * 0.03, .06), max(0.5, .06)
    np.testing.assert_allclose(holm([0.03, 0.5, 0.01, 0.02]), [0.06, 0.5, 0.04, 0.06])
    np.testing.assert_array_equal(holm([0.6, 0.9]), [1.0, 1.0])  # 2 x 0.6 capped at 1, and none below an earlier one


def test_subsamples_draw_without_replacement():
    rows = subsamples(20, 50, seed=0)
    assert rows.shape == (50, 18) and all(len(set(r)) == 18 for r in rows)
    assert np.array_equal(rows, subsamples(20, 50, seed=0))


def test_the_jackknife_standard_error_of_a_mean_is_its_closed_form():
    """For the mean of n values the delete-d jackknife's standard error is sd / sqrt(n): within 10% at 2,000
    subsamples."""
    values = np.random.default_rng(1).normal(0, 3.0, 96)
    _, se = jackknife_inference(lambda X, y: np.array([y.mean()]), values[:, None], values, 2000, seed=2)
    assert se[0] == pytest.approx(values.std(ddof=1) / np.sqrt(len(values)), rel=0.10)


def ols(X, y):
    return np.linalg.lstsq(np.c_[np.ones(len(y)), X], y, rcond=None)[0][1:]


def calls(effect, replicates, rng, models=60):
    """(replicates, units) bool: which units the verdicts' procedure (eval_lds.unit_verdicts: jackknife standard
    errors over 64 subsamples, normal p, Holm at 0.05) calls, on pools of half-subsets with behaviour X effect + noise
    of sd 1, least squares as the estimator."""
    called = []
    for r in range(replicates):
        X = (rng.random((models, len(effect))) < 0.5).astype(float)
        y = X @ effect + rng.normal(0, 1.0, models)
        scores, se = jackknife_inference(ols, X, y, 64, seed=r)
        called.append(holm(two_sided_p(scores, se)) <= 0.05)
    return np.array(called)


def test_unit_verdicts_keep_the_familywise_error_and_find_planted_effects():
    """Under no effect, the share of replicates with any of 12 units called harmful or helpful is at most 5% and
    within [0, 0.09] over 200 replicates (the jackknife errs large here: the per-unit rate is ~3% at a nominal 5%);
    two units planted at 1.5 noise standard deviations are both called in most replicates, the others rarely."""
    rng = np.random.default_rng(3)
    assert calls(np.zeros(12), 200, rng).any(axis=1).mean() <= 0.09
    planted = calls(np.r_[1.5, 1.5, np.zeros(10)], 40, rng)
    assert planted[:, :2].all(axis=1).mean() >= 0.8 and planted[:, 2:].any(axis=1).mean() <= 0.15


# ----------------------------------------------------------------------------------------------
# Calibration: the LDS's bootstrap, its paired and equivalence tests, the power formula, on replicates of known truth

from scipy.stats import spearmanr  # noqa: E402

from stats import (bootstrap_lds, bootstrap_p, crossing, declared_family, isotonic, k_for_power, mean_lds,  # noqa: E402
                   min_detectable, power_of_difference, tost_p)


def population_spearman(r):
    """Spearman's rho of a bivariate normal pair whose Pearson correlation is r (Pearson 1907): 6/pi asin(r/2)."""
    return 6 / np.pi * np.arcsin(r / 2)


def two_methods(rng, k, r_a, r_b, r_ab):
    """(y, a, b): k held-out subsets' ground truth and two methods' predictions, jointly normal with corr(a, y) = r_a,
    corr(b, y) = r_b and corr(a, b) = r_ab."""
    c = np.array([[1, r_a, r_b], [r_a, 1, r_ab], [r_b, r_ab, 1]])
    y, a, b = (rng.standard_normal((k, 3)) @ np.linalg.cholesky(c).T).T
    return y, a, b


def test_the_paired_test_keeps_its_level_and_the_interval_covers_the_true_lds():
    """Two methods of the same true LDS (Pearson 0.7 with the truth, 0.5 with each other), K = 24 held-out subsets,
    400 replicates of 400 resamples: the paired bootstrap test rejects at 5% in 2-9% of them, and the 95% interval
    of one method's LDS covers its population Spearman in 90-98%."""
    rng = np.random.default_rng(0)
    truth, rejected, covered = population_spearman(0.7), 0, 0
    for rep in range(400):
        y, a, b = two_methods(rng, 24, 0.7, 0.7, 0.5)
        boot = bootstrap_lds([a, b], y, seed=rep, n=400)
        rejected += bootstrap_p(boot[0] - boot[1]) <= 0.05
        lo, hi = np.percentile(boot[0], [2.5, 97.5])
        covered += lo <= truth <= hi
    assert 0.02 <= rejected / 400 <= 0.09
    assert 0.90 <= covered / 400 <= 0.98


def test_the_interval_of_a_mean_over_draws_covers_the_mean_of_their_true_lds():
    """A method whose 8 draws of models predict with true Pearson 0.5..0.85 (each its own noise): the printed LDS
    is the mean over draws, and the bootstrap's 95% interval over K = 48 held-out subsets covers the mean of the
    draws' population Spearman in 90-98% of 250 replicates (at K = 24 it covers ~91%: the percentile interval of a
    correlation is short at small K; the banks hold hundreds)."""
    rng = np.random.default_rng(1)
    rs = np.linspace(0.5, 0.85, 8)
    truth = population_spearman(rs).mean()
    covered, k = 0, 48
    for rep in range(250):
        y = rng.standard_normal(k)
        draws = np.stack([r * y + np.sqrt(1 - r * r) * rng.standard_normal(k) for r in rs])
        boot = bootstrap_lds([draws], y, seed=rep, n=300)[0]
        lo, hi = np.percentile(boot, [2.5, 97.5])
        covered += lo <= truth <= hi
        assert mean_lds(draws, y) == pytest.approx(np.mean([spearmanr(d, y)[0] for d in draws]))
    assert 0.90 <= covered / 250 <= 0.98


def test_tost_keeps_its_level_at_the_margin_and_finds_equal_methods_level():
    """Equivalence within 0.10 on K = 300 held-out subsets, two methods whose predictions correlate at 0.9: where the
    true LDS differ by the margin (Spearman 0.70 vs 0.60), TOST says level in at most 9% of 200 replicates; where
    they are equal it says level in most."""
    rng = np.random.default_rng(2)
    r_a = 2 * np.sin(np.pi * 0.70 / 6)  # Pearson correlations whose population Spearman is 0.70 and 0.60
    r_b = 2 * np.sin(np.pi * 0.60 / 6)
    at_margin, equal = 0, 0
    for rep in range(200):
        y, a, b = two_methods(rng, 300, r_a, r_b, 0.9)
        boot = bootstrap_lds([a, b], y, seed=rep, n=100)
        at_margin += tost_p(boot[0] - boot[1], 0.10) <= 0.05
        y, a, b = two_methods(rng, 300, r_a, r_a, 0.9)
        boot = bootstrap_lds([a, b], y, seed=rep, n=100)
        equal += tost_p(boot[0] - boot[1], 0.10) <= 0.05
    assert at_margin / 200 <= 0.09
    assert equal / 200 >= 0.8


def test_the_power_formula_agrees_with_simulated_rejections():
    """power_of_difference (Steiger's standard error, Spearman-corrected) against the rejection rate of the paired
    bootstrap test on simulated data: Spearman 0.70 vs 0.60, predictions correlated at 0.8, K = 100: within 0.08 over
    300 replicates; and k_for_power is the first K whose power reaches 80%."""
    rng = np.random.default_rng(3)
    r_a, r_b = 2 * np.sin(np.pi * 0.70 / 6), 2 * np.sin(np.pi * 0.60 / 6)
    rejected = 0
    for rep in range(300):
        y, a, b = two_methods(rng, 100, r_a, r_b, 0.8)
        boot = bootstrap_lds([a, b], y, seed=rep, n=200)
        rejected += bootstrap_p(boot[0] - boot[1]) <= 0.05
    assert rejected / 300 == pytest.approx(power_of_difference(0.70, 0.60, 0.8, 100), abs=0.08)
    k = k_for_power(0.70, 0.60, 0.8)
    assert power_of_difference(0.70, 0.60, 0.8, k) >= 0.8 > power_of_difference(0.70, 0.60, 0.8, k - 1)
    assert min_detectable(0.05) == pytest.approx((1.959964 + 0.841621) * 0.05, rel=1e-5)


def test_bootstrap_p_counts_plus_one_and_the_family_is_holm_adjusted():
    assert bootstrap_p(np.ones(999)) == pytest.approx(2 / 1000)  # none at or below 0: (0 + 1) / (B + 1), twice
    assert bootstrap_p(np.r_[-np.ones(10), np.ones(10)]) == 1.0
    rng = np.random.default_rng(4)
    diffs = {"far": (0.3, rng.normal(0.3, 0.05, 999)), "near": (0.0, rng.normal(0.0, 0.02, 999)),
             "noisy": (0.05, rng.normal(0.05, 0.2, 999))}
    out = declared_family(diffs, margin=0.10)
    assert out["far"]["verdict"] == "ahead" and out["near"]["verdict"] == "level"
    assert out["noisy"]["verdict"] == "undecided"
    raw = [bootstrap_p(d) for _, d in diffs.values()]
    np.testing.assert_allclose([out[n]["p"] for n in diffs], holm(raw))
    assert out["near"]["mdd"] == pytest.approx(2.8016 * 0.02, rel=0.1)


def test_crossing_interpolates_the_monotone_fit_and_a_first_look_would_not():
    """A noisy increasing curve: 0.50, 0.72, 0.68, 0.75, 0.80 at compute 1..5 against the target 0.71. The monotone
    fit pools 0.72 and 0.68 to 0.70 and reaches 0.71 between compute 3 (0.70) and 4 (0.75): 3.2. The first point at or
    above the target (the old statistic) would say 2."""
    np.testing.assert_allclose(isotonic([0.5, 0.72, 0.68, 0.75, 0.8]), [0.5, 0.7, 0.7, 0.75, 0.8])
    np.testing.assert_allclose(isotonic([3, 2, 1]), [2, 2, 2])
    assert crossing([1, 2, 3, 4, 5], [0.5, 0.72, 0.68, 0.75, 0.8], 0.71) == pytest.approx(3.2)
    assert crossing([1, 2], [0.8, 0.9], 0.7) == 1 and crossing([1, 2], [0.5, 0.6], 0.7) == float("inf")


def test_the_detection_p_is_exact_over_every_labelling():
    """3 bad of 20 units ranked 1st, 2nd and 3rd most harmful: one labelling of C(20, 3) = 1,140 does as well, p =
    1/1140; ranked 1st, 2nd and 4th: two do (1-2-3 and 1-2-4); a large case falls back to Mann-Whitney's
    approximation, which agrees with a hand count of the same rank sums within 0.01 at 200 units."""
    from stats import auc_permutation_p
    scores = np.arange(20.0)
    assert auc_permutation_p(scores, [19, 18, 17]) == pytest.approx(1 / 1140)
    assert auc_permutation_p(scores, [19, 18, 16]) == pytest.approx(2 / 1140)
    assert auc_permutation_p(scores, [0, 1, 2]) == 1.0
    rng = np.random.default_rng(5)
    big, bad = rng.normal(size=200), rng.choice(200, 25, replace=False)
    big[bad] += 0.3  # a weak detector: p of a few percent
    approx = auc_permutation_p(big, bad, exact_up_to=0)
    sums = np.array([rankdata_sum(big, rng.choice(200, 25, replace=False)) for _ in range(6000)])
    counted = (sums >= rankdata_sum(big, bad)).mean()
    assert 0.005 < counted < 0.5 and approx == pytest.approx(counted, abs=0.01)


def rankdata_sum(scores, units):
    from scipy.stats import rankdata
    return rankdata(scores)[units].sum()


def test_the_repeated_bootstrap_resamples_repetitions_and_held_out_subsets_together():
    """bootstrap_repeated against a loop: the same held-out resample for every repetition and method (bootstrap_lds
    with one seed), R repetitions drawn with replacement per resample, their LDS averaged; identical repetitions give
    bootstrap_lds itself; repetitions that differ widen the interval of their mean."""
    from stats import bootstrap_repeated
    rng = np.random.default_rng(6)
    y = rng.normal(size=30)
    reps = [[y + rng.normal(size=30), y + 2 * rng.normal(size=(4, 30))] for _ in range(3)]
    boot = bootstrap_repeated(reps, y, seed=1, n=60)
    per = np.stack([bootstrap_lds(r, y, 1, 60) for r in reps])
    drawn = np.random.default_rng([1, 1]).integers(0, 3, (60, 3))
    np.testing.assert_allclose(boot, [[per[drawn[b], i, b].mean() for b in range(60)] for i in range(2)])
    np.testing.assert_allclose(bootstrap_repeated([reps[0]] * 3, y, seed=1, n=60), per[0])
    far = [[y + s * rng.normal(size=30)] for s in (0.3, 1.0, 3.0)]
    one = [[y + 1.0 * rng.normal(size=30)]] * 3
    assert np.std(bootstrap_repeated(far, y, 2, 400)) > np.std(bootstrap_repeated(one, y, 2, 400))


def test_the_counterfactual_rank_sum_test_keeps_its_level_for_a_method_that_picks_like_random():
    """A method whose removal improves FID like a random set's, its own set drawn anew per seed (10 seeds, 39 random
    sets, improvements with a per-seed shift shared by all sets of the seed): the exact rank-sum test rejects at 5% in
    at most 6% of 400 replicates; one whose removal is better by one random set's spread is found in most; one seed's
    exact p by hand: ranked best of 40 gives 1/40."""
    from stats import rank_sum_p
    rng = np.random.default_rng(8)
    null, found = 0, 0
    for _ in range(400):
        shift = rng.normal(0, 5, (10, 1))
        random = shift + rng.normal(0, 1, (10, 39))
        null += rank_sum_p(shift[:, 0] + rng.normal(0, 1, 10), random) <= 0.05
        found += rank_sum_p(shift[:, 0] + 1.0 + rng.normal(0, 1, 10), random) <= 0.05
    assert null / 400 <= 0.06 and found / 400 >= 0.8
    assert rank_sum_p([100.0], [np.arange(39.0)]) == pytest.approx(1 / 40)
    assert rank_sum_p([-1.0], [np.arange(39.0)]) == pytest.approx(1.0)

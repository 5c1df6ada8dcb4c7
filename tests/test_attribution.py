"""fit_datamodel.py and eval_lds.py against planted answers and hand computations."""
import warnings

import numpy as np
import pytest
from scipy.stats import spearmanr

import data
import runfolder
from eval_lds import bootstrap_lds, lds, models_for_budget
from fit_datamodel import attribute
from runfolder import aligned, behavior_values


def planted(n=120, models=400, noise=0.05, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=n)
    X = data.make_masks(n, models, 0.5, seed=seed + 1).astype(float)
    y = 3.0 + X @ w + noise * rng.normal(size=models)
    return w, X, y


@pytest.mark.parametrize("method, models", [("datamodel", 400), ("banzhaf", 2000)])
def test_planted_linear_behaviour_is_fitted_back(method, models):
    # Banzhaf averages out the other images' effects instead of regressing them away: it needs more models
    w, X, y = planted(models=models)
    scores, intercept, info = attribute(X, y, method)
    assert np.corrcoef(scores, w)[0, 1] > 0.9, info
    _, X_held, _ = planted(seed=5)
    y_held = 3.0 + X_held @ w
    assert lds(scores, intercept, X_held, y_held) > 0.9


def test_sparse_planted_behaviour_prefers_lasso_and_finds_the_images():
    rng = np.random.default_rng(3)
    n, models = 300, 150  # fewer models than images: only sparsity makes it identifiable
    w = np.zeros(n)
    harmful = rng.choice(n, 10, replace=False)
    w[harmful] = 2.0
    X = data.make_masks(n, models, 0.5, seed=4).astype(float)
    y = X @ w + 0.1 * rng.normal(size=models)
    scores, _, info = attribute(X, y, "datamodel")
    assert info["model"] == "lasso"
    assert set(np.argsort(-scores)[:10]) == set(harmful)


def test_the_datamodel_fit_without_sklearns_repeated_checks_is_the_checked_fit_to_the_bit(monkeypatch):
    """fit_datamodel skips sklearn's per-fit input and parameter checks (a third of eval_lds's time on a small pool):
    the same scores, intercept and cross-validated errors as with every check on (sklearn's config_context made a
    no-op), for a ridge-chosen and a lasso-chosen pool; and a NaN behaviour is still refused by sklearn's own check."""
    import contextlib
    import sklearn
    import fit_datamodel
    _, X, y = planted(n=40, models=60, noise=0.5)
    sparse_X = data.make_masks(100, 50, 0.5, seed=4).astype(float)  # fewer models than images, 5 that matter
    sparse_y = sparse_X[:, :5] @ np.full(5, 2.0) + 0.1 * np.random.default_rng(3).normal(size=50)
    fast = [fit_datamodel.fit_datamodel(a, b, seed=1) for a, b in ((X, y), (sparse_X, sparse_y))]
    assert {f[2]["model"] for f in fast} == {"ridge", "lasso"}
    with pytest.raises(ValueError):
        fit_datamodel.fit_datamodel(X, np.where(np.arange(len(y)) == 3, np.nan, y))
    monkeypatch.setattr(sklearn, "config_context", lambda **kw: contextlib.nullcontext())
    checked = [fit_datamodel.fit_datamodel(a, b, seed=1) for a, b in ((X, y), (sparse_X, sparse_y))]
    for (s1, i1, info1), (s2, i2, info2) in zip(fast, checked):
        assert np.array_equal(s1, s2) and i1 == i2 and info1 == info2


def test_lds_is_spearman_on_hand_cases():
    X = np.eye(4)
    scores = np.array([1.0, 2.0, 3.0, 4.0])
    y = np.array([1.0, 3.0, 2.0, 4.0])
    # by hand: ranks of predictions 1,2,3,4 and of y 1,3,2,4: d^2 = 0+1+1+0, 1 - 6*2/(4*15) = 0.8
    assert lds(scores, 0.0, X, y) == pytest.approx(0.8)
    assert lds(scores, 10.0, X, -y) == pytest.approx(-0.8)  # the intercept does not matter
    rng = np.random.default_rng(0)
    X, s, y = rng.integers(0, 2, (30, 7)).astype(float), rng.normal(size=7), rng.normal(size=30)
    assert lds(s, 0.5, X, y) == pytest.approx(spearmanr(X @ s, y)[0])
    # an all-zero datamodel ranks nothing: 0, not NaN
    assert lds(np.zeros_like(s), 3.0, X, y) == 0.0


def test_bootstrap_interval_contains_the_estimate_and_pairs_the_resamples():
    rng = np.random.default_rng(1)
    y = rng.normal(size=40)
    pred = y + rng.normal(size=40)
    boot = bootstrap_lds([pred, pred], y, seed=0, n=200)
    assert np.array_equal(boot[0], boot[1])  # the same resamples for both methods
    lo, hi = np.percentile(boot[0], [2.5, 97.5])
    assert lo < spearmanr(pred, y)[0] < hi


def test_bootstrap_equals_spearmanr_on_each_resample_with_ties_and_constant_resamples():
    """The vectorised bootstrap against scipy's spearmanr, one resample at a time with the same draws:
    tied predictions and y, and resamples of 3 subsets that are often constant (those count as 0)."""
    for k, seed in ((24, 1), (3, 0)):
        rng = np.random.default_rng(seed)
        y = np.round(rng.normal(size=k), 1)
        preds = [rng.normal(size=k), rng.integers(0, 2, k).astype(float), np.full(k, 2.0)]
        boot = bootstrap_lds(preds, y, seed=seed, n=300)
        draws = np.random.default_rng(seed)
        for b in range(300):
            idx = draws.integers(0, k, k)
            for i, p in enumerate(preds):
                with np.errstate(all="ignore"), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    rho = spearmanr(p[idx], y[idx])[0]
                assert boot[i, b] == pytest.approx(0.0 if np.isnan(rho) else rho, abs=1e-12)
        assert (boot[2] == 0).all()  # a constant prediction ranks nothing
    assert (boot[0] == 0).any()  # of 3 subsets, some resamples draw one subset 3 times: constant, 0


def test_the_bootstrap_of_a_method_with_draws_averages_them_on_each_resample_against_a_loop():
    """The printed LDS of a method with D draws of its models is the mean over the draws; each bootstrap resample of
    the held-out subsets (the same for every method: paired) scores that mean again, scipy's spearmanr draw by draw."""
    from stats import resamples
    rng = np.random.default_rng(0)
    y, draws, fixed = rng.normal(size=12), rng.normal(size=(5, 12)), rng.normal(size=12)
    boot = bootstrap_lds([draws, fixed], y, seed=3, n=300)
    idx = resamples(12, 300, seed=3)
    for b in range(300):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = np.nan_to_num([spearmanr(d[idx[b]], y[idx[b]])[0] for d in draws]).mean()
            fixed_b = np.nan_to_num(spearmanr(fixed[idx[b]], y[idx[b]])[0])
        assert boot[0, b] == pytest.approx(expected, abs=1e-12) and boot[1, b] == pytest.approx(fixed_b, abs=1e-12)


def test_budget_draws_take_distinct_models_or_the_whole_pool_once():
    from types import SimpleNamespace
    import eval_lds
    run = SimpleNamespace(pools={"unlearn": SimpleNamespace(rows=np.arange(10)), "retrain": SimpleNamespace(rows=np.arange(4))})
    fits = eval_lds.Fits(run, {"datamodel": None}, draws=50, seed=1)
    part, whole = fits.rows("unlearn", 6), fits.rows("retrain", 4)
    assert part.shape == (50, 6) and all(len(set(r)) == 6 for r in part)  # without replacement
    assert np.array_equal(whole, [[0, 1, 2, 3]])  # the one fit on every model: no model counted twice
    assert np.array_equal(fits.rows("unlearn", 6), part)  # seeded: every estimator and behaviour sees these
    assert len({tuple(sorted(r)) for r in part}) > 40  # and they differ from draw to draw


def test_ceiling_is_spearman_brown_of_two_seeds_by_hand(tmp_path):
    """Two single-seed ground truths agreeing at r give a perfect predictor LDS sqrt(m r / (1 + (m - 1) r)) against
    the mean of m seeds; identical seeds give 1."""
    from types import SimpleNamespace
    import eval_lds
    rng = np.random.default_rng(2)
    truth = rng.normal(size=30)
    s0, s1 = truth + rng.normal(size=30), truth + rng.normal(size=30)

    def pool(values, seeds):
        beh = dict(fid=np.asarray(values, float), index=np.tile(np.arange(30), len(seeds)),
                   seed=np.repeat(seeds, 30), behaviors='["fid"]')
        return SimpleNamespace(beh=beh, rows=np.arange(30), y={"fid": np.asarray(values, float)[:30]})
    for m in (1, 2):
        held = pool(np.concatenate([s0] + [truth] * (m - 1)), list(range(m)))
        run = SimpleNamespace(pools={"lds": held, "lds_ceiling": pool(s1, [m])})
        c = eval_lds.ceiling(run, "fid", 0)
        r = spearmanr(s0, s1)[0]
        assert c["r"] == pytest.approx(r) and c["pairs"] == 30 and c["seeds"] == m
        assert c["ceiling"] == pytest.approx(np.sqrt(m * r / (1 + (m - 1) * r)))
        assert c["ci"][0] <= c["ceiling"] <= c["ci"][1]
    same = eval_lds.ceiling(SimpleNamespace(pools={"lds": pool(s0, [0]), "lds_ceiling": pool(s0, [1])}), "fid", 0)
    assert same["ceiling"] == pytest.approx(1.0)


def test_the_ceiling_estimates_what_a_perfect_predictor_reaches_with_noisy_seeds():
    """Every seed noisy: the ground truth averages 2 seeds of truth + noise (sd 1 each), the ceiling's third seed is as
    noisy. Over 40 replicates of 200 held-out subsets the ceiling's mean is within 0.02 of the mean LDS the truth itself
    scores against that ground truth (a perfect predictor), and a ceiling that forgot the averaging (m = 1) is not."""
    from types import SimpleNamespace
    import eval_lds
    rng = np.random.default_rng(7)
    k, estimates, actual, one_seed = 200, [], [], []
    for _ in range(40):
        truth = rng.normal(size=k)
        seeds = truth + rng.normal(size=(3, k))
        beh = dict(fid=np.concatenate(seeds[:2]), index=np.tile(np.arange(k), 2), seed=np.repeat([0, 1], k),
                   behaviors='["fid"]')
        held = SimpleNamespace(beh=beh, rows=np.arange(k), y={"fid": seeds[:2].mean(0)})
        extra = SimpleNamespace(rows=np.arange(k), y={"fid": seeds[2]})
        c = eval_lds.ceiling(SimpleNamespace(pools={"lds": held, "lds_ceiling": extra}), "fid", 0)
        estimates.append(c["ceiling"])
        one_seed.append(np.sqrt(c["r"]))
        actual.append(spearmanr(truth, seeds[:2].mean(0))[0])
    assert np.mean(estimates) == pytest.approx(np.mean(actual), abs=0.02)
    assert abs(np.mean(one_seed) - np.mean(actual)) > 0.05


def test_matching_compute_finds_the_first_model_count_that_reaches_the_target():
    """A planted curve: with n unlearned models the prediction is the truth plus noise falling with n; the target
    (a retraining comparator) is a fixed noisy prediction. The compute reported is where the monotone fit of the mean
    LDS over draws (by hand: pool adjacent violators) reaches the target's, interpolated between model counts."""
    from types import SimpleNamespace
    import eval_lds
    rng = np.random.default_rng(5)
    K, units = 40, 6
    X_held = (rng.random((K, units)) < 0.5).astype(float)
    truth = X_held @ np.arange(units, dtype=float)
    X_pool = (rng.random((64, units)) < 0.5).astype(float)
    y_pool = X_pool @ np.arange(units, dtype=float) + rng.normal(0, 3, 64)
    run = SimpleNamespace(pools={"unlearn": SimpleNamespace(rows=np.arange(64), X=X_pool, y={"fid": y_pool}),
                                 "lds": SimpleNamespace(X=X_held, y={"fid": truth})})
    fit = lambda name, behavior, X, y: attribute(X, y, "banzhaf")  # noqa: E731
    fits = eval_lds.Fits(run, {"banzhaf": fit}, draws=20, seed=0)
    costs = {"compute": (1.0, 0.01, 0.1)}  # a retraining, an unlearned model, pruning once
    target = ("loo", (truth + rng.normal(0, 2, K))[None], 6.0, None)
    target = target[:3] + (eval_lds.spearman(target[1][0], truth),)
    m = eval_lds.matching_compute(run, fits, "fid", target, costs, "compute", 0)
    means = {p["n"]: p["lds"] for p in m["curve"]}
    assert list(means) == [4, 8, 16, 32, 64]
    for n in means:
        preds, _ = fits.drawn_predictions("unlearn", "fid", n)
        assert means[n] == pytest.approx(np.mean([eval_lds.spearman(p, truth) for p in preds]))
    fit = np.maximum.accumulate([means[n] for n in means])  # increasing already? then the fit is the curve itself
    assert np.allclose(fit, [means[n] for n in means]), "the planted curve should rise"
    j = next(i for i, v in enumerate(fit) if v >= target[3])
    ns = list(means)
    x0, x1 = 0.1 + 0.01 * ns[j - 1], 0.1 + 0.01 * ns[j]
    expected = x0 + (target[3] - fit[j - 1]) / (fit[j] - fit[j - 1]) * (x1 - x0)
    assert m["compute"] == pytest.approx(expected)
    assert m["ci"][0] <= m["compute"] <= m["ci"][1]


def test_budget_accounting_by_hand():
    # one retraining = 60 s. Retraining: budget b buys b models.
    assert models_for_budget(4, unit=60, per_model=60, fixed=0, available=100) == 4
    assert models_for_budget(4, unit=60, per_model=60, fixed=0, available=3) == 3
    # unlearning: 6 s a model after pruning + fine-tune of 30 s: (4 * 60 - 30) / 6 = 35 models
    assert models_for_budget(4, unit=60, per_model=6, fixed=30, available=100) == 35
    assert models_for_budget(0.5, unit=60, per_model=6, fixed=30, available=100) == 0  # 30 - 30 = 0 left
    assert models_for_budget(1, unit=60, per_model=7, fixed=0, available=100) == 8  # floor(60 / 7)


def test_seeds_are_averaged_and_class_shares_computed():
    masks = data.make_masks(10, 3, 0.5, seed=0)
    beh = dict(index=np.array([0, 0, 2]), mask_sha256=np.array([data.row_sha256(masks[i]) for i in (0, 0, 2)]),
               fid=np.array([1.0, 3.0, 5.0]), class_hist=np.array([[1, 3], [2, 2], [4, 0]]))
    rows, X, y = aligned(masks, beh, "fid")
    assert rows.tolist() == [0, 2] and y.tolist() == [2.0, 5.0] and np.array_equal(X, masks[[0, 2]])
    assert behavior_values(beh, "class:1").tolist() == [0.75, 0.5, 0.0]
    with pytest.raises(data.DataError):
        behavior_values(beh, "class:2")


# ----------------------------------------------------------------------------------------------
# Shapley values (KernelSHAP) against exact enumeration on a planted non-additive game

def planted_game(n=8, seed=0):
    """v(S) = sum of singles + pairwise interactions + a threshold bonus: not additive."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=n), np.triu(rng.normal(size=(n, n)), 1)
    return lambda z: float(a @ z + z @ b @ z + 2.0 * (z.sum() >= 3))


def exact_shapley(v, n):
    """phi_j = sum over S not containing j of |S|! (n - |S| - 1)! / n! (v(S + j) - v(S)), by enumeration."""
    from itertools import product
    from math import factorial
    phi = np.zeros(n)
    for bits in product([0, 1], repeat=n):
        z = np.array(bits, dtype=float)
        s = int(z.sum())
        for j in np.flatnonzero(z == 0):
            with_j = z.copy()
            with_j[j] = 1
            phi[j] += factorial(s) * factorial(n - s - 1) / factorial(n) * (v(with_j) - v(z))
    return phi


def test_shapley_from_all_subsets_is_exact_and_efficient():
    from itertools import product
    n = 8
    v = planted_game(n)
    X = np.array(list(product([0, 1], repeat=n)), dtype=float)
    y = np.array([v(z) for z in X])
    scores, intercept, info = attribute(X, y, "shapley")
    expected = exact_shapley(v, n)
    assert np.abs(expected).max() > 0.5 and np.ptp(expected) > 0.5  # a game with distinct values
    np.testing.assert_allclose(scores, expected, atol=1e-6)
    assert intercept == v(np.zeros(n))
    assert scores.sum() == pytest.approx(v(np.ones(n)) - v(np.zeros(n)), abs=1e-9)  # efficiency


def test_shapley_from_kernel_sampled_subsets_correlates_with_the_exact_values():
    n = 10
    v = planted_game(n, seed=1)
    X = data.make_kernel_masks(n, 600, seed=2).astype(float)
    sizes = X.sum(1)
    assert sizes.min() >= 1 and sizes.max() <= n - 1 and (sizes <= 2).mean() > (sizes == 5).mean()  # kernel-shaped
    y = np.array([v(z) for z in X])
    scores, _, _ = attribute(X, y, "shapley", v_empty=v(np.zeros(n)), v_full=v(np.ones(n)))
    assert np.corrcoef(scores, exact_shapley(v, n))[0, 1] > 0.95
    assert scores.sum() == pytest.approx(v(np.ones(n)) - v(np.zeros(n)), abs=1e-9)


def test_the_hybrid_is_exact_on_all_subsets_and_kernelshap_at_strength_zero():
    """A second implementation: at strength 0 the hybrid's regression is KernelSHAP's; on all 2^n subsets of a noiseless
    additive game cross-validation keeps its exact values whatever the prior (any pull only adds error there)."""
    from itertools import product

    from fit_datamodel import fit_shapley, shapley_from_game, shapley_regression, solve_hybrid
    n = 8
    rng = np.random.default_rng(0)
    values, prior = rng.normal(size=n), rng.normal(size=n)
    X = np.array(list(product([0, 1], repeat=n)), dtype=float)
    scores, intercept, info = attribute(X, 3.0 + X @ values, "hybrid", prior=prior)
    np.testing.assert_allclose(scores, values, atol=1e-6)
    assert info["alpha"] == 0.0 and intercept == 3.0
    v = planted_game(n)  # a game with interactions: strength 0 is KernelSHAP's fit
    Xs = data.make_kernel_masks(n, 30, seed=3).astype(float)
    ys = np.array([v(z) for z in Xs]) + np.random.default_rng(4).normal(scale=0.3, size=len(Xs))
    A, b, w, Z, ve, vf = shapley_regression(Xs, ys, v(np.zeros(n)), v(np.ones(n)))
    a, psi, _ = solve_hybrid(A, b, w, Z, vf, prior, 0.0)
    np.testing.assert_allclose(shapley_from_game(a, psi, ve), fit_shapley(Xs, ys, ve, vf)[0], atol=1e-9)
    a, psi, c = solve_hybrid(A, b, w, Z, vf, prior, np.inf)  # the prior alone, scaled, meeting v(full)
    np.testing.assert_allclose(psi, c * prior)
    assert a + psi.sum() == pytest.approx(vf)


def test_the_hybrid_beats_kernelshap_on_few_noisy_models_and_recovers_the_priors_scale():
    """A planted additive game of 20 players, 48 kernel-sampled coalitions with noise as large as a value's spread:
    a prior that is the truth times -3 plus noise gives far smaller errors than KernelSHAP, with c near -1/3; a prior
    unrelated to the game does no worse than KernelSHAP (cross-validation turns its pull into plain shrinkage)."""
    n, errors, cs = 20, {"kernelshap": [], "good prior": [], "unrelated prior": []}, []
    rmse = lambda s, phi: float(np.sqrt(((s - phi) ** 2).mean()))  # noqa: E731
    for seed in range(12):
        rng = np.random.default_rng(seed)
        phi = rng.normal(size=n)
        X = data.make_kernel_masks(n, 48, seed).astype(float)
        y = 10.0 + X @ phi + rng.normal(scale=1.5, size=len(X))
        ends = dict(v_empty=10.0, v_full=10.0 + phi.sum())
        errors["kernelshap"].append(rmse(attribute(X, y, "shapley", **ends)[0], phi))
        good = attribute(X, y, "hybrid", prior=-3 * phi + rng.normal(scale=0.9, size=n), **ends)
        errors["good prior"].append(rmse(good[0], phi))
        cs.append(good[2]["c"])
        errors["unrelated prior"].append(rmse(attribute(X, y, "hybrid", prior=rng.normal(size=n), **ends)[0], phi))
        assert good[0].sum() == pytest.approx(phi.sum(), abs=1e-9)  # efficiency
    mean = {k: np.mean(v) for k, v in errors.items()}
    assert mean["good prior"] < 0.4 * mean["kernelshap"], mean
    assert mean["unrelated prior"] <= mean["kernelshap"], mean
    assert -0.45 < np.median(cs) < -0.2, cs


def test_a_contributor_level_run_is_scored_and_reported_per_contributor(tmp_path):
    """A synthetic run of 12 contributors whose planted FID rises with the two bad ones (those whose
    images are all corrupted): eval_lds.py reports per contributor, finds the bad ones, and draws one
    row of images per contributor."""
    import json
    from conftest import run_cli, write_pool
    rng = np.random.default_rng(0)
    n, g = 1797, 12
    groups = rng.permutation(np.arange(n) % g)
    run = tmp_path / "run"
    effect = np.r_[6.0, 5.0, rng.normal(0, 0.3, g - 2)]  # contributors 0 and 1 raise FID
    pools = {"unlearn": data.make_masks(g, 60, 0.5, seed=1), "lds": data.make_masks(g, 24, 0.5, seed=2)}
    pools["retrain"] = pools["unlearn"][:8]
    for name, masks in pools.items():
        write_pool(run, name, masks, 50 + masks @ effect + rng.normal(0, 0.5, len(masks)),
                   1.0 if name == "unlearn" else 10.0)
    np.save(runfolder.groups(run), groups)
    np.save(runfolder.corrupted(run), np.flatnonzero(groups < 2))
    r = run_cli("eval_lds", "--run", run, "--data", "digits", "--draws", "10")
    assert r.returncode == 0, r.stderr
    results = json.loads((runfolder.results(run)).read_text())
    assert results["unit"] == "contributor" and results["auc"]["unlearn_all"] == 1.0
    report = (runfolder.report(run)).read_text()
    assert "2 of 12 contributors gave mostly faulty images (corrupted (2)" in report and "2 of the 8 most harmful contributors" in report
    # the answer a user acts on leads the report: the data as given, then the verdicts (a table file beside it); the
    # two planted contributors are called harmful at the run's 5% familywise error, none with a small effect helpful
    assert report.splitlines()[2] == "Data: `digits`, 1797 images; **used as given: no fault planted**."
    assert report.splitlines()[4] == "## Which contributors hurt or help fid"
    table = np.genfromtxt(runfolder.verdicts(run), delimiter=",", names=True, dtype=None, encoding=None)
    assert len(table) == 12 and list(table["rank"]) == list(range(1, 13))
    verdict = dict(zip(table["contributor"], table["verdict"]))
    assert verdict[0] == verdict[1] == "harmful" and list(table["known_bad"][:2]) == [1, 1]
    assert all(verdict[c] != "helpful" or effect[c] < -0.3 for c in range(2, 12))
    assert all(lo <= s <= hi for lo, s, hi in zip(table["ci95_lo"], table["score_fid"], table["ci95_hi"]))
    from PIL import Image
    with Image.open(runfolder.figures(run, "most_harmful.png")) as im:  # 8 rows (contributors) of 8 images of 8x8
        assert im.width == im.height


def test_contributor_shapley_run_finds_the_bad_contributors_and_keeps_efficiency(tmp_path):
    """eval_lds.py --method shapley on a synthetic contributor run: pools of Shapley-kernel subsets of 10
    contributors with a planted additive FID (two bad contributors), v(empty) from an untrained model's
    behaviours file, v(all) from full.npz (retraining) and pruned.npz (unlearning). The unlearning values
    sum to v(all) - v(empty) (efficiency), the bad contributors come first, and fit_datamodel.py given the
    same ends as files writes the same values."""
    import json
    from conftest import run_cli, write_pool
    rng = np.random.default_rng(3)
    n, g = 1797, 10
    groups = rng.permutation(np.arange(n) % g)
    effect = np.r_[8.0, 7.0, rng.normal(-2, 0.3, g - 2)]  # contributors 0 and 1 raise FID, the others lower it
    v_empty, base = 300.0, 100.0
    run = tmp_path / "run"
    pools = {"unlearn": data.make_kernel_masks(g, 80, seed=1), "lds": data.make_masks(g, 30, 0.5, seed=2)}
    pools["retrain"] = pools["unlearn"][:12]
    for name, masks in pools.items():
        write_pool(run, name, masks, base + masks @ effect + rng.normal(0, 0.3, len(masks)),
                   1.0 if name == "unlearn" else 10.0)
    for name, fid in (("untrained", v_empty), ("full", base + effect.sum()), ("pruned", base + effect.sum() + 1.0)):
        np.savez(runfolder.behaviors(run, name), index=np.array([-1]), mask_sha256=np.array([""]),
                 fid=np.array([fid]), seconds=np.ones(1), train_seconds=np.ones(1))
    np.save(runfolder.groups(run), groups)
    np.save(runfolder.corrupted(run), np.flatnonzero(groups < 2))
    r = run_cli("eval_lds", "--run", run, "--data", "digits", "--method", "shapley", "--draws", "10")
    assert r.returncode == 0, r.stderr
    results = json.loads((runfolder.results(run)).read_text())
    assert results["method"] == "shapley" and results["unit"] == "contributor"
    assert results["auc"]["unlearn_all"] == 1.0 and results["auc"]["unlearn_all_datamodel"] == 1.0
    assert results["behaviors"]["fid"]["lds_all"]["unlearn"]["lds"] > 0.9
    assert "Shapley values" in (runfolder.report(run)).read_text()
    # unlearning's compute buys fewer than two retrainings (no "equal compute" fit): the declared primary is retraining
    # at the curve's least budget, 2, against unlearning there
    import shutil
    cheap = tmp_path / "cheap"
    shutil.copytree(run, cheap)
    beh = dict(np.load(runfolder.behaviors(cheap, "unlearn")))
    np.savez(runfolder.behaviors(cheap, "unlearn"), **dict(beh, train_seconds=np.full(80, 0.01)))
    r = run_cli("eval_lds", "--run", cheap, "--data", "digits", "--method", "shapley", "--draws", "4")
    assert r.returncode == 0, r.stderr
    results = json.loads((runfolder.results(cheap)).read_text())
    two = next(row for row in results["behaviors"]["fid"]["curve"] if row["budget"] == 2)
    assert results["declaration"]["resolved"] == {"retraining": "budget:2"} and \
        "retraining" not in {m["key"] for m in results["comparison"]}
    assert results["declared"]["retraining"]["diff"] == pytest.approx(two["lds_unlearn"] - two["lds_retrain"])
    assert "| retraining at 2 retrainings (the least compute that buys a fit" in runfolder.report(cheap).read_text()
    # --also surrogate-shap: SurrogateSHAP of the same unlearned models, a row of its own judged as the others (its
    # own draws, the same held-out resamples), not among retraining's choices; its file keeps the interactions
    r = run_cli("eval_lds", "--run", run, "--data", "digits", "--method", "shapley", "--draws", "4", "--also",
                "surrogate-shap,shapley-paired-half,shapley-unpaired-half")
    assert r.returncode == 0, r.stderr
    results = json.loads((runfolder.results(run)).read_text())
    rows = {m["name"]: m for m in results["comparison"]}
    row = rows["sparsified unlearning, SurrogateSHAP"]
    assert row["models"] == 80 and row["estimator"]["fid"] == "surrogate-shap" and "surrogate-shap" not in \
        results["estimators"] and {"ci", "diff_ci", "p_value"} <= set(row["lds"]["fid"]) and row["lds"]["fid"]["lds"] > 0.5
    report = runfolder.report(run).read_text()
    assert "| sparsified unlearning, SurrogateSHAP | 80 |" in report
    # paired against unpaired at equal models: the pool's first 40 (20 pairs) and one subset of each of the 40 pairs
    # (rows 0, 2, .. 78), each charged its 40 models' unlearning (1 s each here) beside the pruning
    by_key = {m["key"]: m for m in results["comparison"]}
    y_unlearn = np.load(runfolder.behaviors(run, "unlearn"))["fid"]
    ends = dict(v_empty=v_empty, v_full=base + effect.sum() + 1.0)
    for key, rows_used in (("shapley-paired-half", np.arange(40)), ("shapley-unpaired-half", np.arange(0, 80, 2))):
        m = by_key[key]
        assert m["models_fitted"] == 40 and f"| {m['name']} | 40 |" in report
        assert m["compute"] == pytest.approx(by_key["unlearning"]["compute"] - 40 * 1.0 / 10.0)
        own = attribute(pools["unlearn"][rows_used].astype(float), y_unlearn[rows_used], "shapley", **ends)[0]
        assert m["lds"]["fid"]["lds"] == pytest.approx(spearmanr(pools["lds"] @ own, np.load(
            runfolder.behaviors(run, "lds"))["fid"])[0], abs=1e-9)
    # --also hybrid: the same unlearned models' KernelSHAP pulled toward a baseline's scores (here a noisy planted
    # one), its row charged the baseline's compute too; A/B declares a comparison of two rows
    prior = effect / 50 + rng.normal(0, 0.05, g)
    np.savez(runfolder.attributions(run, "baseline-ekfac-ref"), scores=prior, scores_by_behavior=prior[None],
             behaviors=np.array(json.dumps(["fid"])), macs=np.array(3e9), seconds=np.array(2.0), how=np.array("planted"))
    r = run_cli("eval_lds", "--run", run, "--data", "digits", "--method", "shapley", "--draws", "4", "--also",
                "hybrid", "--compare", "retraining,hybrid/ekfac-ref")
    assert r.returncode == 0, r.stderr
    results = json.loads((runfolder.results(run)).read_text())
    rows = {m["key"]: m for m in results["comparison"]}
    assert rows["hybrid"]["name"] == "sparsified unlearning, hybrid toward ekfac-ref" and rows["hybrid"]["models"] == 80
    assert rows["hybrid"]["compute"] == pytest.approx(rows["unlearning"]["compute"] + rows["ekfac-ref"]["compute"])
    pair = results["declared"]["hybrid/ekfac-ref"]
    assert pair["diff"] == pytest.approx(rows["hybrid"]["lds"]["fid"]["lds"] - rows["ekfac-ref"]["lds"]["fid"]["lds"])
    assert "hybrid toward ekfac-ref *minus* ekfac-ref" in runfolder.report(run).read_text()
    r = run_cli("fit_datamodel", "--masks", runfolder.masks(run, "unlearn"), "--behaviors", runfolder.behaviors(run, "unlearn"),
                "--method", "hybrid", "--prior", runfolder.attributions(run, "baseline-ekfac-ref"), "--v-empty",
                runfolder.behaviors(run, "untrained"), "--v-full", runfolder.behaviors(run, "pruned"), "--out",
                tmp_path / "hybrid.npz")
    assert r.returncode == 0, r.stderr
    by_number = attribute(pools["unlearn"].astype(float), np.load(runfolder.behaviors(run, "unlearn"))["fid"], "hybrid",
                          v_empty=v_empty, v_full=base + effect.sum() + 1.0, prior=prior)[0]
    with np.load(tmp_path / "hybrid.npz") as f:
        np.testing.assert_allclose(f["scores"], by_number, rtol=0, atol=1e-12)
    r = run_cli("eval_lds", "--run", run, "--data", "digits", "--method", "shapley", "--also", "hybrid", "--prior", "trak")
    assert r.returncode == 2 and "its prior trak is not among this run's baselines" in r.stderr
    (runfolder.attributions(run, "baseline-ekfac-ref")).unlink()

    r = run_cli("fit_datamodel", "--masks", runfolder.masks(run, "unlearn"), "--behaviors", runfolder.behaviors(run, "unlearn"),
                "--method", "surrogate-shap", "--v-empty", runfolder.behaviors(run, "untrained"),
                "--v-full", runfolder.behaviors(run, "pruned"), "--out", tmp_path / "surrogate.npz")
    assert r.returncode == 0, r.stderr
    with np.load(tmp_path / "surrogate.npz") as f:
        assert f["interactions"].shape == (g, g) and set(np.argsort(-f["scores"])[:2]) == {0, 1}
        assert np.ptp(f["scores"] - f["interactions"].sum(1)) < 1e-9  # v(empty)'s jump: one shift for every value
        assert f["scores"].sum() == pytest.approx(base + effect.sum() + 1.0 - v_empty, abs=0.5)  # ~ efficiency

    r = run_cli("fit_datamodel", "--masks", runfolder.masks(run, "unlearn"), "--behaviors", runfolder.behaviors(run, "unlearn"),
                "--method", "shapley", "--v-empty", runfolder.behaviors(run, "untrained"),
                "--v-full", runfolder.behaviors(run, "pruned"), "--out", runfolder.attributions(run, "unlearn"))
    assert r.returncode == 0, r.stderr
    assert "most harmful contributors" in r.stdout
    with np.load(runfolder.attributions(run, "unlearn")) as f:
        scores, intercept = f["scores"], float(f["intercept"])
    assert intercept == v_empty and scores.sum() == pytest.approx(base + effect.sum() + 1.0 - v_empty, abs=1e-9)
    assert set(np.argsort(-scores)[:2]) == {0, 1}
    by_number, _, _ = attribute(pools["unlearn"].astype(float), np.load(runfolder.behaviors(run, "unlearn"))["fid"],
                                "shapley", v_empty=v_empty, v_full=base + effect.sum() + 1.0)
    np.testing.assert_allclose(scores, by_number, rtol=0, atol=1e-12)


def test_init_only_writes_the_seeded_untrained_model(tmp_path):
    """v(empty)'s model: train_ddpm.py --init-only writes the UNet as initialised under the seed, untrained."""
    import torch
    import ddpm
    from conftest import run_cli
    out = runfolder.checkpoint(tmp_path, "untrained")
    r = run_cli("train_ddpm", "--init-only", "--arch", "digits-small", "--seed", "5", "--grid", "0", "--out", out)
    assert r.returncode == 0, r.stderr
    ckpt = ddpm.load_checkpoint(str(out))
    torch.manual_seed(5)
    fresh = ddpm.UNet(**ckpt["config"]).state_dict()
    assert ckpt["step"] == 0 and all(torch.equal(ckpt["ema"][k], v) and torch.equal(ckpt["model"][k], v)
                                     for k, v in fresh.items())


def test_the_attribution_ceiling_bench_finds_a_planted_answer_only_when_it_is_there():
    """bench/attribution_ceiling.py: with many models and a noiseless behaviour the corrupted images come
    first (AUC 1) and the held-out ranking is recovered; with a behaviour of pure noise (r = 0) AUC is
    chance and LDS near 0, whatever the model count."""
    from conftest import load_bench
    ceiling = load_bench("attribution_ceiling")
    auc, rho = ceiling.one(n=60, n_bad=6, m=3000, r=1.0, r_gt=1.0, k=24, method="banzhaf", seed=0)
    assert auc == 1.0 and rho > 0.9
    chance = np.array([ceiling.one(n=60, n_bad=6, m=800, r=0.0, r_gt=1.0, k=24, method="banzhaf", seed=s)
                       for s in range(8)])
    assert abs(chance[:, 0].mean() - 0.5) < 0.15 and abs(chance[:, 1].mean()) < 0.3


def test_banzhaf_finds_contributors_who_mixed_bad_and_clean_images():
    """The planted game of bench/attribution_ceiling.py at the default preset's contributor level: 20 contributors
    of 90 images, three of whom gave two thirds corrupted images and one third clean ones; each model's behaviour
    follows the share of corrupted images among its subset's images (not additive in the contributors) with
    fidelity r. On 64 half-subsets (the preset's pools), Banzhaf values find the three with AUC >= 0.9 even at
    r = 0.4; KernelSHAP on 64 kernel-sampled subsets, the same game, does worse: where contributors mix bad and clean
    images, Banzhaf values are the safer estimator (the default preset uses Shapley values, whose contributors each
    gave one kind of image; bench/mixed_contributors.py measures both)."""
    from conftest import load_bench
    game = load_bench("attribution_ceiling").contributor_game
    auc = {(method, pool, r): np.mean([game(20, 3, 2 / 3, 64, r, 0.7, 24, pool, method, seed)[0] for seed in range(6)])
           for method, pool in (("banzhaf", "half"), ("shapley", "kernel")) for r in (0.7, 0.4)}
    assert auc["banzhaf", "half", 0.7] >= 0.95 and auc["banzhaf", "half", 0.4] >= 0.9, auc
    assert auc["shapley", "kernel", 0.7] < auc["banzhaf", "half", 0.7] - 0.1, auc


def test_the_mixed_split_of_the_bench_rotates_two_thirds_of_three_contributors():
    """bench/mixed_contributors.py's planted split: three contributors gave two thirds digits turned a quarter turn
    (the rest of theirs, and every other contributor's, untouched), and its `corrupted` array names exactly those."""
    from conftest import load_bench
    images = data.load_dataset("digits").images
    mixed, groups, corrupted = load_bench("mixed_contributors").mixed_split(images, 20, 3, 2 / 3, seed=0)
    changed = np.flatnonzero((mixed != images).any(axis=(1, 2, 3)))
    assert set(changed) <= set(corrupted)  # (a symmetric digit may look the same turned)
    assert np.array_equal(mixed[corrupted], np.rot90(images[corrupted], 1, axes=(2, 3)))
    bad = np.unique(groups[corrupted])
    assert len(bad) == 3 and np.bincount(groups).min() >= 89
    for c in bad:
        share = np.isin(np.flatnonzero(groups == c), corrupted).mean()
        assert abs(share - 2 / 3) < 0.01, share


def test_surrogate_shap_reads_the_exact_shapley_values_and_interactions_of_its_trees():
    """SurrogateSHAP on a planted 6-player game with pairwise and three-way effects: interventional TreeSHAP against
    the empty coalition (fit_datamodel.tree_shapley, a closed form per leaf) gives the Shapley values and Shapley
    interaction indices of the fitted trees' own game g(S) = f(1_S), here computed by full enumeration of its 64
    coalitions; trees of depth 2 (sums of pairwise functions) are predicted exactly by the quadratic form on every
    coalition, deeper ones at least at the empty and the full coalition (efficiency). A given v(empty) shifts every
    value by the same amount, so that they sum to v(full) - v(empty)."""
    import itertools
    import math
    from fit_datamodel import fit_surrogate_shap, predict
    n, f = 6, math.factorial
    rng = np.random.default_rng(0)
    coalitions = np.array(list(itertools.product([0, 1], repeat=n)), dtype=float)
    planted = (coalitions @ rng.normal(size=n) + np.einsum("ki,ij,kj->k", coalitions, np.triu(rng.normal(size=(n, n)), 1),
                                                           coalitions) + 2.0 * coalitions[:, :3].prod(1))
    index = {tuple(c.astype(int)): k for k, c in enumerate(coalitions)}
    scale = np.abs(planted).max()
    for depth in (4, 2):
        scores, base, info = fit_surrogate_shap(coalitions, planted, seed=0, trees=80, depth=depth)
        g = info["regressor"].predict(coalitions).astype(np.float64)
        value = lambda members: g[index[tuple(int(j in members) for j in range(n))]]  # noqa: E731
        phi, inter = np.zeros(n), np.zeros((n, n))
        for i in range(n):
            others = [j for j in range(n) if j != i]
            for size in range(n):
                for S in itertools.combinations(others, size):
                    phi[i] += f(size) * f(n - size - 1) / f(n) * (value(set(S) | {i}) - value(set(S)))
            for j in others:
                rest = [k for k in others if k != j]
                for size in range(n - 1):
                    for S in itertools.combinations(rest, size):
                        S = set(S)
                        inter[i, j] += f(size) * f(n - size - 2) / f(n - 1) * (
                            value(S | {i, j}) - value(S | {i}) - value(S | {j}) + value(S))
        M = info["interactions"]
        np.testing.assert_allclose(scores, phi, atol=1e-5 * scale)
        np.testing.assert_allclose(2 * (M - np.diag(np.diag(M))), inter, atol=1e-5 * scale)
        np.testing.assert_allclose(M.sum(1), scores, atol=1e-9 * scale)  # rows sum to the Shapley values
        quadratic = predict(coalitions, scores, base, info, "quadratic")
        assert base == pytest.approx(g[0], abs=1e-5 * scale) and quadratic[-1] == pytest.approx(g[-1], abs=1e-4 * scale)
        np.testing.assert_allclose(predict(coalitions, scores, base, info), base + coalitions @ scores)  # additive
        if depth == 2:
            np.testing.assert_allclose(quadratic, g, atol=1e-4 * scale)
            # the authors' predict_quadratic, by hand: v(empty) + sum_{i in S} phi_i + 1/2 sum_{i != j in S} M_ij,
            # which counts each pair's interaction once inside phi and half again: not the trees' game
            by_hand = np.array([base + sum(scores[i] for i in range(n) if c[i]) + 0.5 * sum(
                (M[i, j] + M[j, i]) / 2 for i in range(n) for j in range(n) if i != j and c[i] and c[j])
                for c in coalitions])
            authors = predict(coalitions, scores, base, info, "quadratic-authors")
            np.testing.assert_allclose(authors, by_hand, atol=1e-9 * scale)
            assert np.abs(authors - g).max() > 0.05 * scale
        else:  # deeper trees hold three-way effects: the quadratic form is an approximation
            assert np.abs(quadratic - g).max() > 1e-3 * scale
    # v(empty) given, far from the rest (an untrained model's): not a row of the trees' data, its jump shared equally
    shifted, base, info = fit_surrogate_shap(coalitions[1:], planted[1:], v_empty=planted[0] + 50.0, seed=0, trees=80,
                                             depth=2)
    g = info["regressor"].predict(coalitions).astype(np.float64)
    assert np.ptp(shifted - info["interactions"].sum(1)) < 1e-9 * scale  # one shift for every value
    assert shifted.sum() == pytest.approx(g[-1] - (planted[0] + 50.0), abs=1e-4 * scale)  # efficiency
    # as published: v(empty) a row of the trees' data (with v(full)), the trees' values unshifted
    values, base, info = fit_surrogate_shap(coalitions[1:], planted[1:], v_empty=planted[0] + 50.0, seed=0, trees=80,
                                            depth=2, published=True)
    assert np.abs(values - info["interactions"].sum(1)).max() < 1e-9 * scale  # no shift
    assert base > g[0] + 2.0  # the row pulls the trees' g(empty) toward v(empty), 50 above

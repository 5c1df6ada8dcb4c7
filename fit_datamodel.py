"""Attributions from a mask file and a behaviours file: one score per training image.

    python fit_datamodel.py --masks runs/x/masks/unlearn.npy --behaviors runs/x/behaviors/unlearn.npz \\
        --out runs/x/attributions/unlearn.npz [--method datamodel|banzhaf|shapley|surrogate-shap] [--behavior fid|class:K]

datamodel  linear regression of the behaviour on the 0/1 subset indicator (Ilyas et al. 2022),
           gamma(S) ~ intercept + sum_{j in S} score_j, with scikit-learn's cross-validated Lasso and
           Ridge; the one with the better cross-validated error is kept.
banzhaf    score_j = mean behaviour of the subsets with image j minus the mean of those without it
           (maximum-sample-reuse estimate, Wang & Jia 2023).
shapley    Shapley values by KernelSHAP (Lundberg & Lee 2017): the Shapley-kernel-weighted least-squares
           fit under the efficiency constraint sum(scores) = v(full) - v(empty), as Lin, Lu et al. (ICLR
           2025) estimate contributor values. Subsets whose sizes follow the Shapley kernel come from
           `make_subsets.py --alpha shapley`; v(empty) and v(full) from all-zero and all-one mask rows,
           or --v-empty and --v-full.
hybrid     KernelSHAP pulled toward a cheap gradient method's scores (--prior: EK-FAC influence against the
           reference images, say) by a ridge penalty whose strength is chosen by cross-validation on the same
           subsets: the unlearned models correct the gradient where the behaviour is not what it linearises.
surrogate-shap  SurrogateSHAP: the Shapley values and pairwise interactions of gradient-boosted trees fitted
           to the coalition values (interventional TreeSHAP against the empty coalition), on any subsets; its
           prediction of a coalition's value is quadratic (saved: interactions).

Behaviours (--behavior): any key of the behaviours file (compute_fid.py: fid, the paper's, kid, is, precision,
recall, density, coverage, entropy, loss, elbo) or class:K, the share of generated images of class K.
Sign convention: a positive score means including the image raises the behaviour. For FID (lower is
better) that is harmful; for a behaviour where higher is better (precision, ...) it is helpful.
Rows with several models (training seeds) are averaged. numpy/scipy/scikit-learn (and xgboost for
surrogate-shap).
"""
import argparse
import json
import math
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np

from data import ArgumentParser, DataError, at_least_two, positive_int, run, save_npz
from runfolder import (aligned, behavior_keys, behavior_values, better, check_behavior_key, headline, load_behaviors,
                       load_groups, load_masks, load_npz)


def parse_args(argv=None):
    p = ArgumentParser(__doc__)
    p.add_argument("--masks", required=True, help="mask file the behaviours' rows come from")
    p.add_argument("--behaviors", required=True, help="behaviours file (compute_fid.py)")
    p.add_argument("--out", required=True, help="attributions file to write (.npz)")
    p.add_argument("--method", choices=list(ESTIMATORS), default="datamodel", help="the estimator (ESTIMATORS): "
                   + "; ".join(f"{k}: {e.title}" for k, e in ESTIMATORS.items()))
    p.add_argument("--v-empty", type=number_or_file, default=None, help="shapley: the behaviour with no training "
                   "data, a number or a behaviours file of one model (an untrained one: train_ddpm.py --init-only); "
                   "default: that of an all-zero mask row")
    p.add_argument("--v-full", type=number_or_file, default=None, help="shapley: the behaviour with all training "
                   "data, a number or a behaviours file of one model; default: that of an all-one mask row")
    p.add_argument("--behavior", default="fid", help="a key of the behaviours file (fid, loss, kid, ...), "
                   "or class:K (the share of samples of class K); auto: fid when the file has it, else its first")
    p.add_argument("--prior", default=None, help="hybrid: another method's attributions file (a baseline's, "
                   "attributions/baseline-ekfac-ref.npz, its scores of --behavior; or any file with `scores`)")
    p.add_argument("--max-models", type=positive_int, default=None, help="use the first n rows only")
    p.add_argument("--folds", type=at_least_two, default=5, help="cross-validation folds choosing the regularisation")
    p.add_argument("--seed", type=int, default=0, help="seed of the cross-validation folds")
    return p.parse_args(argv)


def number_or_file(text):
    """--v-empty / --v-full: a finite number, or the path of a behaviours file (read in main)."""
    try:
        value = float(text)
    except ValueError:
        return text
    if not np.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def one_value(v, behavior, what):
    """A --v-empty / --v-full value: itself, or the chosen behaviour of the one model of a behaviours file."""
    if v is None or isinstance(v, float):
        return v
    values = behavior_values(load_behaviors(v), behavior)
    if len(values) != 1:
        raise DataError(f"{what} {v}: a behaviours file of one model, not {len(values)}")
    return float(values[0])


def fit_banzhaf(X, y):
    """score_j = mean(y | j in S) - mean(y | j not in S); 0 where j is always in or always out."""
    inside = X.sum(0)
    outside = len(X) - inside
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = (X.T @ y) / inside - ((1 - X).T @ y) / outside
    scores = np.where((inside > 0) & (outside > 0), scores, 0.0)
    return scores, float(y.mean()), dict(method="banzhaf", model="banzhaf", alpha=0.0)


def fit_datamodel(X, y, folds=5, seed=0):
    """Lasso and Ridge, each with its regularisation chosen by cross-validation; keep the one with the
    lower cross-validated squared error. Returns (scores, intercept, info)."""
    import sklearn
    from sklearn.linear_model import Lasso, LassoCV, Ridge, RidgeCV
    from sklearn.model_selection import KFold, cross_val_score
    folds = max(2, min(folds, len(y)))
    cv = KFold(folds, shuffle=True, random_state=seed)
    scale = float(np.var(y)) * len(y) or 1.0
    # sklearn checks every array and parameter again in each of the ~60 fits of a cross-validation: a third of the time
    # on a small pool (eval_lds fits hundreds). The parameters are these constants, and the arrays are checked once
    # here (a non-finite one keeps sklearn's checks, and so its error); the fits are the same to the bit.
    finite = bool(np.isfinite(X).all() and np.isfinite(y).all())
    with sklearn.config_context(assume_finite=finite, skip_parameter_validation=True):
        ridge = RidgeCV(alphas=np.logspace(-3, 4, 30) * X.shape[0] / 4).fit(X, y)  # range relative to row norms
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence chatter on small pools
            lasso = LassoCV(cv=cv, alphas=40, max_iter=5000, random_state=seed).fit(X, y)
            candidates = {"ridge": Ridge(alpha=ridge.alpha_), "lasso": Lasso(alpha=lasso.alpha_, max_iter=5000)}
            errors = {name: -cross_val_score(m, X, y, cv=cv, scoring="neg_mean_squared_error").mean()
                      for name, m in candidates.items()}
    best = min(errors, key=errors.get)
    model = ridge if best == "ridge" else lasso
    info = dict(method="datamodel", model=best, alpha=float(model.alpha_),
                cv_mse_ridge=errors["ridge"], cv_mse_lasso=errors["lasso"], y_var=scale / len(y))
    return model.coef_.astype(np.float64), float(model.intercept_), info


def shapley_regression(X, y, v_empty=None, v_full=None):
    """KernelSHAP's weighted regression (Lundberg & Lee 2017, Theorem 2), as fit_shapley and fit_hybrid solve it:
    (A, b, w, Z, v_empty, v_full). Each subset of size s between 1 and n - 1 has the Shapley kernel's weight
    (n - 1) / (s (n - s)) over how often its size was drawn (relative to C(n, s)): all 2^n subsets give the exact
    values, and subsets whose sizes follow the kernel (make_kernel_masks) get equal weights, as KernelSHAP samples them.
    The unknowns theta = (a, psi_1 .. psi_{n-1}) describe the additive game a + sum_{j in S} psi_j whose last value
    psi_n = v(full) - a - sum_{j < n} psi_j makes it meet v(full) (efficiency); A theta ~ b on the subsets Z."""
    n = X.shape[1]
    size = X.sum(1).round().astype(int)
    if v_empty is None:
        if not (size == 0).any():
            raise DataError("shapley needs v(empty): an all-zero mask row or --v-empty")
        v_empty = float(y[size == 0].mean())
    if v_full is None:
        if not (size == n).any():
            raise DataError("shapley needs v(full): an all-one mask row or --v-full")
        v_full = float(y[size == n].mean())
    inner = (size > 0) & (size < n)  # the two ends have infinite kernel weight: they are the constraints
    if inner.sum() < 2:
        raise DataError("shapley needs subsets of sizes between 1 and n - 1 (make_subsets.py --alpha shapley)")
    Z, s = X[inner], size[inner]
    sizes, counts = np.unique(s, return_counts=True)
    drawn = dict(zip(sizes.tolist(), counts.tolist()))
    w = (n - 1) / (s * (n - s) * np.array([drawn[k] for k in s.tolist()], dtype=np.float64))
    A = np.column_stack([1 - Z[:, -1], Z[:, :-1] - Z[:, -1:]])
    b = y[inner] - Z[:, -1] * v_full
    return A, b, w, Z, float(v_empty), float(v_full)


def game_values(theta, v_full):
    """(a, psi): the additive game's intercept and its n values (the last one from efficiency)."""
    a, rest = theta[0], theta[1:]
    return a, np.append(rest, v_full - a - rest.sum())


def shapley_from_game(a, psi, v_empty):
    """Shapley values of the game that is additive (a + sum psi) on nonempty subsets and v(empty) at the empty set.
    Shapley values are linear in the game, and a game that differs from v only at the empty set, by d, has every
    value larger by d / n (the jump is shared equally). So the fit uses a game whose v(empty) = a is fitted as the
    value that makes it closest to additive, then shifts its values by (a - v(empty)) / n: exact with all subsets, and
    from sampled ones far less noisy when v(empty) is far from what the subsets suggest (an untrained model's FID
    against that of any trained one), which the weighted fit would otherwise force onto small and large subsets
    alike."""
    return psi + (a - v_empty) / len(psi)


def fit_shapley(X, y, v_empty=None, v_full=None):
    """KernelSHAP (Lundberg & Lee 2017): Shapley values phi minimise sum_S pi(S) (v(S) - v(empty) - sum_{j in S}
    phi_j)^2 subject to sum_j phi_j = v(full) - v(empty), with the Shapley kernel pi(S) = (n - 1) / (C(n, |S|) |S|
    (n - |S|)) (shapley_regression; least norm where fewer subsets than players leave it underdetermined), then
    shared the jump to v(empty) (shapley_from_game)."""
    A, b, w, _, v_empty, v_full = shapley_regression(X, y, v_empty, v_full)
    root = np.sqrt(w)
    a, psi = game_values(np.linalg.lstsq(A * root[:, None], b * root, rcond=None)[0], v_full)
    return shapley_from_game(a, psi, v_empty), v_empty, dict(method="shapley", model="kernelshap", alpha=0.0,
                                                              v_full=v_full)


# The hybrid's strengths of the pull toward the prior, relative to the regression's own scale (the mean diagonal of
# its weighted normal matrix): 0 is KernelSHAP itself, inf the prior alone (scaled to the behaviour by one fitted c).
HYBRID_STRENGTHS = (0.0, *np.logspace(-3, 3, 13).tolist(), np.inf)


def solve_hybrid(A, b, w, Z, v_full, prior, strength):
    """theta = (a, psi_1..psi_{n-1}) and c minimising sum_S w (A theta - b)^2 + lam ||psi - c prior||^2: KernelSHAP's
    regression with its values pulled toward a multiple c of the prior (c fitted with them: the prior's units and
    sign need not be the behaviour's). strength is lam over the regression's scale; inf: psi = c prior exactly, then
    a = v(full) - c sum(prior) and only c is fitted. Returns (a, psi, c)."""
    n = Z.shape[1]
    root = np.sqrt(w)
    if np.isinf(strength):
        x = (Z @ prior - prior.sum()) * root  # y = v(full) + c (sum_{j in S} prior_j - sum_j prior_j)
        r = (b + Z[:, -1] * v_full - v_full) * root  # b + z_n v(full) is y itself
        c = float(x @ r / (x @ x)) if x @ x > 0 else 0.0
        return v_full - c * prior.sum(), c * prior, c
    Aw = A * root[:, None]
    P = np.zeros((n, n))  # psi = P theta + q
    P[np.arange(n - 1), np.arange(1, n)] = 1.0
    P[n - 1] = -1.0
    q = np.zeros(n)
    q[-1] = v_full
    lam = strength * float((Aw ** 2).sum()) / A.shape[1]
    design = np.vstack([np.column_stack([Aw, np.zeros(len(Aw))]),
                        math.sqrt(lam) * np.column_stack([P, -prior])])
    target = np.concatenate([b * root, -math.sqrt(lam) * q])
    solution = np.linalg.lstsq(design, target, rcond=None)[0]
    a, psi = game_values(solution[:-1], v_full)
    return a, psi, float(solution[-1])


def fit_hybrid(X, y, prior, v_empty=None, v_full=None, folds=5, seed=0):
    """KernelSHAP shrunk toward a cheap gradient method's scores (the prior: EK-FAC influence against the reference
    images, say): the unlearned models' Shapley regression with a ridge pull of the values toward c * prior
    (solve_hybrid), its strength chosen by cross-validation on the pool's own subsets (the squared error of each
    left-out subset's predicted behaviour). Strength 0 is KernelSHAP; infinite strength the prior alone, scaled to the
    behaviour. The models correct the gradient where the behaviour is not what it linearises (FID), and the
    gradient steadies the regression where the models are few or noisy. (On a well-determined pool a control
    variate that enters the regression linearly would change nothing: the pull is what carries the prior.)"""
    from sklearn.model_selection import KFold
    prior = np.asarray(prior, dtype=np.float64)
    if prior.shape != (X.shape[1],) or not np.isfinite(prior).all():
        raise DataError(f"the hybrid's prior needs one finite score per unit ({X.shape[1]}), got shape {prior.shape}")
    A, b, w, Z, v_empty, v_full = shapley_regression(X, y, v_empty, v_full)
    y_inner = b + Z[:, -1] * v_full
    k = max(2, min(folds, len(b)))
    errors = np.zeros(len(HYBRID_STRENGTHS))
    for train, test in KFold(k, shuffle=True, random_state=seed).split(b):
        for i, strength in enumerate(HYBRID_STRENGTHS):
            a, psi, _ = solve_hybrid(A[train], b[train], w[train], Z[train], v_full, prior, strength)
            errors[i] += ((a + Z[test] @ psi - y_inner[test]) ** 2).sum()
    best = int(np.argmin(errors))  # the first (weakest) of equal errors
    a, psi, c = solve_hybrid(A, b, w, Z, v_full, prior, HYBRID_STRENGTHS[best])
    return shapley_from_game(a, psi, v_empty), v_empty, dict(
        method="hybrid", model="kernelshap+prior", alpha=float(HYBRID_STRENGTHS[best]), c=c, v_full=v_full,
        cv_mse=dict(zip(map(str, HYBRID_STRENGTHS), (errors / len(b)).tolist())))


def fit_surrogate_shap(X, y, v_empty=None, v_full=None, seed=0, trees=900, depth=5, published=False):
    """SurrogateSHAP (the seed authors' lab, 2026): gradient-boosted trees fitted to the coalition values instead of
    KernelSHAP's weighted linear fit (XGBoost: 900 trees of depth 5, learning rate 0.05, 80% of the rows each tree),
    the full coalition as one row more where its value is given; then the trees' own game g(S) = f(1_S) read by
    interventional TreeSHAP against the empty coalition (tree_shapley): its Shapley values and pairwise interactions,
    exactly. Its prediction of a coalition's value is quadratic (predict).
    v(empty) is not a row of the trees' data here (SurrogateSHAP's has it): ours is an untrained model's behaviour,
    far from every trained model's, and as a row it bends the whole fit (a planted additive game of 10 players and 80
    kernel-sampled coalitions: LDS 0.43 with it, 0.93 without). As in fit_shapley, the jump from the trees' g(empty)
    to v(empty) is shared equally instead: each value shifts by (g(empty) - v(empty)) / n (Shapley values are linear
    in the game), so they sum to v(full) - v(empty); the interactions and the prediction are the trees'.
    published=True fits it as its authors' release does: v(empty) and v(full) both rows of the trees' data, the trees'
    values unshifted (the estimator surrogate-shap-published)."""
    import xgboost
    n = X.shape[1]
    rows, values = [X], [y]
    for given, row in ((v_full, np.ones((1, n))), (v_empty if published else None, np.zeros((1, n)))):
        if given is not None:
            rows.append(row)
            values.append([given])
    model = xgboost.XGBRegressor(n_estimators=trees, max_depth=depth, learning_rate=0.05, subsample=0.8,
                                 random_state=seed, n_jobs=1, tree_method="exact")
    model.fit(np.concatenate(rows), np.concatenate(values))
    phi, interactions = tree_shapley(leaf_paths(model.get_booster()), n)
    base = float(model.predict(np.zeros((1, n)))[0])  # g(empty)
    shift = 0.0 if v_empty is None or published else (base - v_empty) / n
    return phi + shift, base, dict(method="surrogate-shap-published" if published else "surrogate-shap",
                                   model="xgboost", alpha=0.0, interactions=interactions, regressor=model,
                                   phi=phi, v_empty=base if v_empty is None else float(v_empty))


def leaf_paths(booster):
    """[(leaf value, A, B)] of every leaf of every tree: a coalition S reaches the leaf through the splits of its
    0/1 indicator exactly when A is in S and B is not (a leaf no indicator reaches is left out)."""
    def walk(node, allowed):
        if "leaf" in node:
            if all(allowed.values()):
                yield (float(node["leaf"]), [j for j, a in allowed.items() if a == {1}],
                       [j for j, a in allowed.items() if a == {0}])
            return
        j, cut = int(node["split"].lstrip("f")), float(node["split_condition"])
        children = {c["nodeid"]: c for c in node["children"]}
        for child, values in ((node["yes"], {v for v in (0, 1) if v < cut}),
                              (node["no"], {v for v in (0, 1) if not v < cut})):
            yield from walk(children[child], {**allowed, j: allowed.get(j, {0, 1}) & values})
    return [leaf for tree in booster.get_dump(dump_format="json") for leaf in walk(json.loads(tree), {})]


def tree_shapley(leaves, n):
    """(phi (n,), M (n, n)): the Shapley values and interactions of the game g(S) = sum of the leaves S reaches,
    from each leaf's game v 1[A in S, B out of S] in closed form (a = |A|, b = |B|; Beta integrals of the
    Shapley weights): phi_i = v (a-1)! b! / (a+b)! for i in A, -v a! (b-1)! / (a+b)! for i in B; the Shapley
    interaction index I_ij = v (a-2)! b! / (a+b-1)! within A, v a! (b-2)! / (a+b-1)! within B, -v (a-1)! (b-1)!
    / (a+b-1)! across. M is SHAP's interaction matrix: M_ij = I_ij / 2 off the diagonal, M_ii = phi_i - sum_j M_ij
    (each row sums to phi_i), so g(empty) + sum_{i, j in S} M_ij is the quadratic prediction of g(S)."""
    leaves = [leaf for leaf in leaves if leaf[1] or leaf[2]]  # a leaf every coalition reaches: a constant
    in_a, in_b = np.zeros((len(leaves), n)), np.zeros((len(leaves), n))  # each leaf's A and B as 0/1 rows
    for k, (_, A, B) in enumerate(leaves):
        in_a[k, A], in_b[k, B] = 1.0, 1.0
    v = np.array([leaf[0] for leaf in leaves])
    a, b = in_a.sum(1).astype(int), in_b.sum(1).astype(int)
    table = np.array([math.factorial(k) for k in range(n + 1)], dtype=float)  # a + b <= n
    f = table.__getitem__

    def coefficient(top_a, top_b, bottom, valid):  # v top_a! top_b! / bottom!, where valid (0 elsewhere)
        return np.where(valid, v * f(np.maximum(top_a, 0)) * f(np.maximum(top_b, 0)) / f(np.maximum(bottom, 0)), 0.0)
    phi = in_a.T @ coefficient(a - 1, b, a + b, a >= 1) - in_b.T @ coefficient(a, b - 1, a + b, b >= 1)
    cross = coefficient(a - 1, b - 1, a + b - 1, (a >= 1) & (b >= 1))
    inter = (in_a * coefficient(a - 2, b, a + b - 1, a >= 2)[:, None]).T @ in_a \
        + (in_b * coefficient(a, b - 2, a + b - 1, b >= 2)[:, None]).T @ in_b \
        - (in_a * cross[:, None]).T @ in_b - (in_b * cross[:, None]).T @ in_a
    np.fill_diagonal(inter, 0.0)
    M = inter / 2
    M[np.diag_indices(n)] = phi - M.sum(1)
    return phi, M


PREDICTIONS = {  # how a fit predicts a coalition's value; "additive" is every row's common column
    "additive": "intercept + sum_{i in S} score_i",
    "quadratic": "SurrogateSHAP's, ours: g(empty) + sum_{i, j in S} M_ij (exact on a game of pairs)",
    "quadratic-authors": "SurrogateSHAP's, as its authors' predict_quadratic: v(empty) + sum_{i in S} phi_i + "
                         "1/2 sum_{i != j in S} M_ij",
}


def predict(X, scores, intercept, info, how="additive"):
    """An estimator's prediction of each coalition's value (rows of X, 0/1), `how` one of PREDICTIONS: additive for
    every estimator; the two quadratic ones where the fit has interactions (SurrogateSHAP's M, SHAP's convention: M_ij
    half the Shapley interaction index, each row summing to phi_i), the trees' g(empty) as intercept for ours."""
    if how == "additive":
        return X @ scores + intercept
    M = info["interactions"]
    if how == "quadratic":
        return intercept + np.einsum("ki,ij,kj->k", X, M, X)
    off = (M + M.T) / 2
    np.fill_diagonal(off, 0.0)
    return info.get("v_empty", intercept) + X @ info.get("phi", scores) + 0.5 * np.einsum("ki,ij,kj->k", X, off, X)


@dataclass(frozen=True)
class Estimator:
    title: str  # the report's name for it
    fit: Callable  # fit(X, y, folds, seed, v_empty, v_full, prior) -> (scores, intercept, info)
    ends: bool  # uses v(empty) and v(full): a run gives them from its untrained and full (or pruned) models
    kernel: bool  # needs subsets whose sizes follow the Shapley kernel
    choice: bool  # among those retraining's side of the budget curve picks its best from (eval_lds.estimators)
    prior: bool = False  # needs another method's scores (fit_datamodel.py --prior; eval_lds.py --prior)
    subset: Callable = None  # the rows of a pool of n models it fits, subset(n) (None: all): its models


ESTIMATORS = {  # fit_datamodel.py --method
    "datamodel": Estimator("datamodel", lambda X, y, folds, seed, ve, vf, prior: fit_datamodel(X, y, folds, seed),
                           ends=False, kernel=False, choice=True),
    "banzhaf": Estimator("Banzhaf values", lambda X, y, folds, seed, ve, vf, prior: fit_banzhaf(X, y),
                         ends=False, kernel=False, choice=True),
    "shapley": Estimator("Shapley values", lambda X, y, folds, seed, ve, vf, prior: fit_shapley(X, y, ve, vf),
                         ends=True, kernel=True, choice=True),
    # a second of trees a fit: not among retraining's choices at every budget and draw (it would add minutes to
    # the default's evaluation); its own run or fit_datamodel.py --method surrogate-shap measure it
    "surrogate-shap": Estimator("SurrogateSHAP",
                                lambda X, y, folds, seed, ve, vf, prior: fit_surrogate_shap(X, y, ve, vf, seed),
                                ends=True, kernel=False, choice=False),
    "surrogate-shap-published": Estimator("SurrogateSHAP, as published",
                                          lambda X, y, folds, seed, ve, vf, prior:
                                          fit_surrogate_shap(X, y, ve, vf, seed, published=True),
                                          ends=True, kernel=False, choice=False),
    # Paired sampling against unpaired at equal models (Covert and Lee 2021): a Shapley-kernel pool is drawn in pairs,
    # each subset followed by its complement (data.make_kernel_masks), so its first half is paired and one subset of
    # each of those pairs and the next is as many independent draws
    "shapley-paired-half": Estimator("Shapley values of the pool's first half (paired)",
                                     lambda X, y, folds, seed, ve, vf, prior: fit_shapley(X, y, ve, vf),
                                     ends=True, kernel=True, choice=False, subset=lambda n: np.arange(n // 4 * 2)),
    "shapley-unpaired-half": Estimator("Shapley values of one subset of each pair (unpaired), as many",
                                       lambda X, y, folds, seed, ve, vf, prior: fit_shapley(X, y, ve, vf),
                                       ends=True, kernel=True, choice=False,
                                       subset=lambda n: np.arange(0, n // 4 * 4, 2)),
    # the unlearned models and a gradient method together: not a retraining estimator (its prior is a method's)
    "hybrid": Estimator("Shapley values pulled toward a gradient prior",
                        lambda X, y, folds, seed, ve, vf, prior: fit_hybrid(X, y, prior, ve, vf, folds, seed),
                        ends=True, kernel=True, choice=False, prior=True),
}


def attribute(X, y, method="datamodel", folds=5, seed=0, v_empty=None, v_full=None, prior=None):
    """(scores, intercept, info) of the estimator `method` of ESTIMATORS on models X (0/1 rows) and behaviours y."""
    if len(y) < 2:
        raise DataError(f"need at least 2 models to fit attributions, got {len(y)}")
    if ESTIMATORS[method].prior and prior is None:
        raise DataError(f"--method {method} needs a prior: another method's scores (--prior)")
    if ESTIMATORS[method].subset is not None:
        keep = ESTIMATORS[method].subset(len(y))
        if len(keep) < 2:
            raise DataError(f"--method {method} fits {len(keep)} of the {len(y)} models: too few")
        X, y = np.asarray(X)[keep], np.asarray(y)[keep]
    return ESTIMATORS[method].fit(X, y, folds, seed, v_empty, v_full, prior)


def largest_first(values, seed=0):
    """Indices from the largest value to the smallest, ties in a seeded random order: a stable sort would hand every
    tie to the lowest ids, and a ranking of a constant or degenerate score would then depend on how units were
    numbered (eval_lds's ranks by fault, bench/counterfactual.py's removal sets)."""
    values = np.asarray(values, dtype=np.float64)
    return np.lexsort((np.random.default_rng(seed).permutation(len(values)), -values))


def load_prior(path, behavior):
    """One score per unit from another method's attributions file: a baseline's row for `behavior`
    (scores_by_behavior), or its `scores`."""
    f = load_npz(path, "prior attributions file", ())
    if "scores_by_behavior" in f:
        keys = json.loads(str(f["behaviors"]))
        if behavior not in keys:
            raise DataError(f"--prior {path} has no scores of {behavior} (it has {', '.join(keys)})")
        return np.asarray(f["scores_by_behavior"][keys.index(behavior)], dtype=np.float64)
    if "scores" not in f:
        raise DataError(f"--prior {path} has neither scores nor scores_by_behavior")
    return np.asarray(f["scores"], dtype=np.float64)


def check(args):
    """What main would refuse once it reads the behaviours (tools/one_process.py --check): --behavior is one."""
    check_behavior_key(args.behavior, "--behavior")


def main(args):
    masks = load_masks(args.masks)
    beh = load_behaviors(args.behaviors)
    args.behavior = headline(args.behavior, behavior_keys(beh))
    rows, X, y = aligned(masks, beh, args.behavior, args.masks)
    if args.max_models is not None:
        rows, X, y = rows[:args.max_models], X[:args.max_models], y[:args.max_models]
    v_empty, v_full = (one_value(v, args.behavior, what) for v, what in ((args.v_empty, "--v-empty"),
                                                                          (args.v_full, "--v-full")))
    prior = load_prior(args.prior, args.behavior) if args.prior else None
    scores, intercept, info = attribute(X, y, args.method, args.folds, args.seed, v_empty, v_full, prior)
    extra = {"interactions": info["interactions"]} if "interactions" in info else {}  # SurrogateSHAP's M
    save_npz(args.out, scores=scores, intercept=intercept, method=args.method, behavior=args.behavior,
             model=info["model"], alpha=info["alpha"], rows=rows, n_models=len(rows), **extra)
    direction = better(beh, args.behavior)
    unit = "contributors" if load_groups(args.masks) is not None else "images"
    # harmful: raises a behaviour where lower is better, lowers one where higher is better
    harm = {"lower": scores, "higher": -scores}.get(direction)
    where = (f"most harmful {unit} {largest_first(harm)[:5].tolist()}" if harm is not None else
             f"{unit} that raise it most {largest_first(scores)[:5].tolist()}")
    print(f"wrote {args.out}: {args.method} ({info['model']}, alpha {info['alpha']:.3g}) on {len(rows)} models, "
          f"{args.behavior}; {where}")


if __name__ == "__main__":
    run(main, parse_args())

"""Attributions from a mask file and a behaviours file: one score per training image.

    python fit_datamodel.py --masks runs/x/masks/unlearn.npy --behaviors runs/x/behaviors/unlearn.npz \\
        --out runs/x/attributions/unlearn.npz [--method datamodel|banzhaf|shapley] [--behavior fid|class:K]

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

Behaviours: `fid` (the paper's) or `class:K`, the share of generated images classified as class K.
Sign convention: gamma = FID, lower is better, so a positive score means including the image raises
FID (harmful). For class:K a positive score means the image makes class K more frequent.
Rows with several models (training seeds) are averaged. numpy/scipy/scikit-learn only.
"""
import argparse
import warnings

import numpy as np

from data import (ArgumentParser, DataError, at_least_two, load_groups, load_masks, positive_int, row_sha256, run,
                  save_npz)


def parse_args(argv=None):
    p = ArgumentParser(__doc__)
    p.add_argument("--masks", required=True, help="mask file the behaviours' rows come from")
    p.add_argument("--behaviors", required=True, help="behaviours file (compute_fid.py)")
    p.add_argument("--out", required=True, help="attributions file to write (.npz)")
    p.add_argument("--method", choices=["datamodel", "banzhaf", "shapley"], default="datamodel")
    p.add_argument("--v-empty", type=number_or_file, default=None, help="shapley: the behaviour with no training "
                   "data, a number or a behaviours file of one model (an untrained one: train_ddpm.py --init-only); "
                   "default: that of an all-zero mask row")
    p.add_argument("--v-full", type=number_or_file, default=None, help="shapley: the behaviour with all training "
                   "data, a number or a behaviours file of one model; default: that of an all-one mask row")
    p.add_argument("--behavior", default="fid", help="fid, or class:K (share of samples classified as K)")
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


def load_npz(path, what, required=()):
    """The arrays of an .npz file as a dict; refuse a missing or unreadable file, or one without `required`."""
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except FileNotFoundError:
        raise DataError(f"{what} not found: {path}")
    except Exception as e:
        raise DataError(f"cannot read {what} {path}: {type(e).__name__}")
    missing = [k for k in required if k not in arrays]
    if missing:
        raise DataError(f"{path} is not a {what} (no {', '.join(missing)})")
    return arrays


def load_behaviors(path):
    """A behaviours file of compute_fid.py, checked: one finite FID per entry, every per-entry array
    of the same length, class histograms with at least one sample."""
    beh = load_npz(path, "behaviours file", ("index", "mask_sha256", "fid"))
    m = len(beh["fid"])
    for key in ("index", "mask_sha256", "fid", "class_hist", "seconds", "train_seconds"):
        if key in beh and (beh[key].ndim == 0 or len(beh[key]) != m):
            raise DataError(f"{path}: '{key}' has {beh[key].size} entries but 'fid' has {m}")
    if beh["fid"].dtype.kind not in "fiu" or not np.isfinite(beh["fid"]).all():
        raise DataError(f"{path}: FID must be finite numbers ({int(np.sum(~np.isfinite(beh['fid'].astype(float))))} "
                        f"are not)")
    if "class_hist" in beh and beh["class_hist"].size and (beh["class_hist"].ndim != 2 or
                                                           (beh["class_hist"].sum(1) <= 0).any()):
        raise DataError(f"{path}: 'class_hist' must be (models, classes) counts with at least one sample per model")
    return beh


def behavior_values(beh, behavior):
    """The chosen behaviour per entry: FID, or the share of samples of class K."""
    if behavior == "fid":
        return beh["fid"].astype(np.float64)
    if behavior.startswith("class:"):
        if "class_hist" not in beh:
            raise DataError("these behaviours have no class histogram (computed with inception features?)")
        try:
            k = int(behavior[6:])
        except ValueError:
            raise DataError(f"bad behaviour {behavior!r}: use class:K with an integer K")
        hist = beh["class_hist"].astype(np.float64)
        if not 0 <= k < hist.shape[1]:
            raise DataError(f"class {k} is out of range 0..{hist.shape[1] - 1}")
        return hist[:, k] / hist.sum(1)
    raise DataError(f"unknown behaviour {behavior!r}: use fid or class:K")


def aligned(masks, beh, behavior, masks_name="masks"):
    """(rows (M,), X (M, N) float, y (M,)): one entry per mask row, seeds averaged, checked by sha256."""
    index, sha = beh["index"].astype(int), beh["mask_sha256"]
    if (index < 0).any() or (index >= len(masks)).any():
        raise DataError(f"behaviours name rows outside the {len(masks)} rows of {masks_name}")
    for i, s in zip(index, sha):
        if str(s) != row_sha256(masks[i]):
            raise DataError(f"behaviour of row {i} does not match row {i} of {masks_name} (sha256 differs)")
    values = behavior_values(beh, behavior)
    rows = np.unique(index)
    y = np.array([values[index == r].mean() for r in rows])
    return rows, masks[rows].astype(np.float64), y


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
    from sklearn.linear_model import Lasso, LassoCV, Ridge, RidgeCV
    from sklearn.model_selection import KFold, cross_val_score
    folds = max(2, min(folds, len(y)))
    cv = KFold(folds, shuffle=True, random_state=seed)
    scale = float(np.var(y)) * len(y) or 1.0
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


def fit_shapley(X, y, v_empty=None, v_full=None):
    """KernelSHAP (Lundberg & Lee 2017, Theorem 2): Shapley values phi minimise
    sum_S pi(S) (v(S) - v(empty) - sum_{j in S} phi_j)^2 subject to sum_j phi_j = v(full) - v(empty), with
    the Shapley kernel pi(S) = (n - 1) / (C(n, |S|) |S| (n - |S|)). Each row is weighted by pi over how
    often its size was drawn relative to C(n, |S|): all 2^n subsets give the exact values, and subsets
    whose sizes follow the kernel (make_kernel_masks) get equal weights, as KernelSHAP samples them."""
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
    # Shapley values are linear in the game, and a game that differs from v only at the empty set, by d,
    # has every value larger by d / n (the jump is shared equally). So the fit uses the game v_a, v with
    # v(empty) = a fitted as the value that makes it closest to additive, and shifts its values by
    # (a - v(empty)) / n: exact with all subsets, and from sampled ones far less noisy when v(empty) is far
    # from what the subsets suggest (an untrained model's FID against that of any trained one), which the
    # weighted fit would otherwise force onto small and large subsets alike. Efficiency: phi_n = v(full)
    # - a - sum_{j < n} phi_j (least norm where fewer subsets than players leave it underdetermined).
    A = np.column_stack([1 - Z[:, -1], Z[:, :-1] - Z[:, -1:]])
    b = y[inner] - Z[:, -1] * v_full
    root = np.sqrt(w)
    solution = np.linalg.lstsq(A * root[:, None], b * root, rcond=None)[0]
    a, rest = solution[0], solution[1:]
    scores = np.append(rest, v_full - a - rest.sum()) + (a - v_empty) / n
    return scores, float(v_empty), dict(method="shapley", model="kernelshap", alpha=0.0, v_full=float(v_full))


def attribute(X, y, method="datamodel", folds=5, seed=0, v_empty=None, v_full=None):
    if len(y) < 2:
        raise DataError(f"need at least 2 models to fit attributions, got {len(y)}")
    if method == "banzhaf":
        return fit_banzhaf(X, y)
    if method == "shapley":
        return fit_shapley(X, y, v_empty, v_full)
    return fit_datamodel(X, y, folds, seed)


def main(args):
    masks = load_masks(args.masks)
    beh = load_behaviors(args.behaviors)
    rows, X, y = aligned(masks, beh, args.behavior, args.masks)
    if args.max_models is not None:
        rows, X, y = rows[:args.max_models], X[:args.max_models], y[:args.max_models]
    v_empty, v_full = (one_value(v, args.behavior, what) for v, what in ((args.v_empty, "--v-empty"),
                                                                          (args.v_full, "--v-full")))
    scores, intercept, info = attribute(X, y, args.method, args.folds, args.seed, v_empty, v_full)
    save_npz(args.out, scores=scores, intercept=intercept, method=args.method, behavior=args.behavior,
             model=info["model"], alpha=info["alpha"], rows=rows, n_models=len(rows))
    top = np.argsort(-scores)[:5]
    print(f"wrote {args.out}: {args.method} ({info['model']}, alpha {info['alpha']:.3g}) on {len(rows)} models, "
          f"{args.behavior}; most harmful {'contributors' if load_groups(args.masks) is not None else 'images'} "
          f"{top.tolist()}")


if __name__ == "__main__":
    run(main, parse_args())

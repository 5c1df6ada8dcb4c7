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

Behaviours (--behavior): any key of the behaviours file (compute_fid.py: fid, the paper's, kid, is, precision,
recall, density, coverage, entropy, loss, elbo) or class:K, the share of generated images of class K.
Sign convention: a positive score means including the image raises the behaviour. For FID (lower is
better) that is harmful; for a behaviour where higher is better (precision, ...) it is helpful.
Rows with several models (training seeds) are averaged. numpy/scipy/scikit-learn only.
"""
import argparse
import json
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
    p.add_argument("--behavior", default="fid", help="a key of the behaviours file (fid, loss, kid, ...), "
                   "or class:K (the share of samples of class K)")
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


def behavior_keys(beh):
    """The behaviours a behaviours file holds, in its order: its `behaviors` list (compute_fid.py), or fid and
    class for a file written before there were others."""
    if "behaviors" in beh:
        return [str(k) for k in json.loads(str(beh["behaviors"]))]
    return ["fid"] + (["class"] if "class_hist" in beh and beh["class_hist"].size else [])


def better(beh, key):
    """Which way the behaviour `key` is better ("lower", "higher"), or None (a class share), as the file says."""
    if key.startswith("class:"):
        return None
    table = json.loads(str(beh["behavior_table"])) if "behavior_table" in beh else {"fid": {"better": "lower"}}
    return (table.get(key) or {}).get("better")


def _per_entry(beh, key):
    """The array behind a behaviour key (class: the soft shares, or the argmax counts of an older file)."""
    if key == "class":
        return beh["class_share"] if "class_share" in beh else beh.get("class_hist")
    return beh.get(key)


def load_behaviors(path):
    """A behaviours file of compute_fid.py, checked: every behaviour it lists is there, finite, one entry per
    model, and class shares or counts have at least one sample per model."""
    beh = load_npz(path, "behaviours file", ("index", "mask_sha256"))
    keys = behavior_keys(beh)
    missing = [k for k in keys if _per_entry(beh, k) is None]
    if missing or not keys:
        raise DataError(f"{path} is not a behaviours file (no {', '.join(missing) or 'behaviour'})")
    m = len(beh["index"])
    for key in ["mask_sha256", "seconds", "train_seconds"] + keys:
        a = _per_entry(beh, key) if key in keys else beh.get(key)
        if a is not None and (a.ndim == 0 or len(a) != m):
            raise DataError(f"{path}: '{key}' has {a.size} entries but 'index' has {m}")
    for key in keys:
        a = _per_entry(beh, key)
        if a.dtype.kind not in "fiu" or not np.isfinite(a.astype(float)).all():
            raise DataError(f"{path}: '{key}' must be finite numbers ({int(np.sum(~np.isfinite(a.astype(float))))} "
                            f"are not)")
    if "class" in keys and (_per_entry(beh, "class").ndim != 2 or (_per_entry(beh, "class").sum(1) <= 0).any()):
        raise DataError(f"{path}: class shares must be (models, classes) with at least one sample per model")
    return beh


def behavior_values(beh, behavior):
    """The chosen behaviour per entry: a key of the file (fid, loss, ...), or class:K, the share of class K
    among the samples (soft: the mean softmax probability; older files: the share of argmax labels)."""
    keys = behavior_keys(beh)
    if behavior.startswith("class:"):
        if "class" not in keys:
            raise DataError("these behaviours have no class shares (computed with inception features?)")
        try:
            k = int(behavior[6:])
        except ValueError:
            raise DataError(f"bad behaviour {behavior!r}: use class:K with an integer K")
        shares = _per_entry(beh, "class").astype(np.float64)
        if not 0 <= k < shares.shape[1]:
            raise DataError(f"class {k} is out of range 0..{shares.shape[1] - 1}")
        return shares[:, k] / shares.sum(1)
    if behavior == "class" or behavior not in keys:
        raise DataError(f"unknown behaviour {behavior!r}: this file has "
                        + ", ".join(k if k != "class" else "class:K" for k in keys))
    return beh[behavior].astype(np.float64)


def values_by_row(beh, behavior, seed=None):
    """{mask row: behaviour} of a behaviours file's models: one training seed's, or the mean over its seeds."""
    values, rows = behavior_values(beh, behavior), beh["index"].astype(int)
    keep = np.ones(len(rows), dtype=bool) if seed is None else beh["seed"].astype(int) == seed
    return {int(r): float(values[keep & (rows == r)].mean()) for r in np.unique(rows[keep])}


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


def largest_first(values, seed=0):
    """Indices from the largest value to the smallest, ties in a seeded random order: a stable sort would hand every
    tie to the lowest ids, and a ranking of a constant or degenerate score would then depend on how units were
    numbered (eval_lds's ranks by fault, bench/counterfactual.py's removal sets)."""
    values = np.asarray(values, dtype=np.float64)
    return np.lexsort((np.random.default_rng(seed).permutation(len(values)), -values))


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

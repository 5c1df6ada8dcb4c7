"""Judge attributions by the linear datamodeling score (LDS; Park et al. 2023) against models really
retrained from scratch, compare unlearning- and retraining-based attributions at equal compute, and
write the report with its figures.

    python eval_lds.py --run runs/x                 # the whole report: runs/x/report.md, figures/
    python eval_lds.py --attributions runs/x/attributions/unlearn.npz \\
        --masks runs/x/masks/lds.npy --behaviors runs/x/behaviors/lds.npz     # one LDS, with its interval

LDS = Spearman correlation, over the K held-out subsets S_k, between the behaviour of the models
retrained on S_k (averaged over training seeds) and the prediction intercept + sum_{j in S_k} score_j.
The interval is a 95% bootstrap over held-out subsets. The budget curve counts training compute in
units of one retraining: retraining-based attributions at budget b use b retrained models; unlearning
pays its pruning and fine-tune once, then as many unlearned models as the rest of the budget buys.
numpy/scipy/scikit-learn/matplotlib only.
"""
import argparse
import json
import os

import numpy as np
from scipy.stats import rankdata

from data import ArgumentParser, DataError, atomic_write, fraction, load_dataset, load_groups, load_masks, run, save_grid
from fit_datamodel import aligned, attribute, behavior_values, load_behaviors, load_npz

POOLS = ("unlearn", "retrain")  # the two ways of making models for the datamodel
BOOTSTRAP = 2000


def parse_args(argv=None):
    p = ArgumentParser(__doc__)
    p.add_argument("--run", default=None, help="run folder: evaluate everything and write report.md")
    p.add_argument("--attributions", default=None, help="one attributions file (with --masks, --behaviors)")
    p.add_argument("--masks", default=None, help="held-out mask file (lds.npy)")
    p.add_argument("--behaviors", default=None, help="behaviours of the held-out retrained models")
    p.add_argument("--data", default="digits", help="the training data, to show the most harmful/helpful images")
    p.add_argument("--corrupt", type=fraction, default=0.0)
    p.add_argument("--corrupt-seed", type=int, default=0)
    p.add_argument("--budgets", type=parse_budgets, default=None, help="comma-separated budgets in retraining units "
                   "(default: 2, 4, 8, ... up to the number of retrained models)")
    p.add_argument("--class-behavior", default="auto", help="class:K for the class-proportion behaviour; auto: "
                   "the class whose share varies most across the unlearned models")
    p.add_argument("--method", choices=["datamodel", "shapley"], default="datamodel",
                   help="the attributions of both pools: datamodel, or Shapley values (KernelSHAP; needs pools of "
                   "Shapley-kernel subsets, behaviors/untrained.npz for v(empty), and v(all) from full.npz for "
                   "retraining and pruned.npz, the pruned model fine-tuned on all data, for unlearning)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and the CV folds")
    return p.parse_args(argv)


def parse_budgets(text):
    """'2,4,8' -> [2.0, 4.0, 8.0] (an argparse type)."""
    try:
        budgets = [float(b) for b in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: use comma-separated numbers of retrainings, e.g. 2,4,8")
    if not all(np.isfinite(b) and b > 0 for b in budgets):
        raise argparse.ArgumentTypeError(f"{text!r}: every budget must be a positive number")
    return sorted(set(budgets))


# ----------------------------------------------------------------------------------------------
# The score and its uncertainty

def lds(scores, intercept, X, y):
    """Spearman correlation between predicted and actual behaviours of held-out subsets."""
    return spearman(X @ scores + intercept, y)


def spearman(pred, y):
    """Spearman's rho: Pearson's r of the ranks (ties averaged); a constant prediction (a datamodel that
    chose all-zero scores) ranks nothing, so it counts as 0 rather than undefined."""
    return float(pearson_rows(rankdata(pred)[None], rankdata(y)[None])[0])


def bootstrap_lds(preds, y, seed=0, n=BOOTSTRAP):
    """LDS of each prediction vector in `preds` on n resamples of the held-out subsets (the same
    resamples for all, so differences are paired). Returns (len(preds), n); a resample where a
    prediction is constant counts as 0. All resamples at once: Spearman's rho is Pearson's r of the
    ranks (ties averaged), so one rankdata over the (n, K) resampled values replaces n spearmanr calls
    (those took ~20 s of a quick run's report)."""
    rng = np.random.default_rng(seed)
    y = np.asarray(y)
    idx = np.stack([rng.integers(0, len(y), len(y)) for _ in range(n)])  # one draw per resample, in order
    rank_y = rankdata(y[idx], axis=1)
    return np.stack([pearson_rows(rankdata(np.asarray(p)[idx], axis=1), rank_y) for p in preds])


def pearson_rows(a, b):
    """Pearson's r of each row of a with the same row of b; 0 where either row is constant."""
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    norm = np.sqrt((a * a).sum(1) * (b * b).sum(1))
    return np.divide((a * b).sum(1), norm, out=np.zeros(len(a)), where=norm > 0)


def interval(samples):
    lo, hi = np.percentile(samples, [2.5, 97.5])
    return float(lo), float(hi)


def models_for_budget(budget, unit, per_model, fixed=0.0, available=None):
    """How many models a budget of `budget` retraining units (`unit` seconds each) pays for, at
    `per_model` seconds a model after a one-off `fixed` cost; capped at `available`."""
    n = int(np.floor((budget * unit - fixed) / per_model + 1e-9)) if budget * unit > fixed else 0
    return max(0, min(n, available if available is not None else n))


# ----------------------------------------------------------------------------------------------
# The report

def _pool(run_dir, name, behavior):
    masks = load_masks(os.path.join(run_dir, "masks", f"{name}.npy"))
    beh = load_behaviors(os.path.join(run_dir, "behaviors", f"{name}.npz"))
    rows, X, y = aligned(masks, beh, behavior, f"masks/{name}.npy")
    seconds = np.array([beh["train_seconds"][beh["index"] == r].mean() for r in rows])
    return dict(rows=rows, X=X, y=y, seconds=seconds, beh=beh)


def _optional(run_dir, name):
    path = os.path.join(run_dir, "behaviors", f"{name}.npz")
    return load_behaviors(path) if os.path.exists(path) else None


def choose_class(run_dir):
    beh = load_behaviors(os.path.join(run_dir, "behaviors", "unlearn.npz"))
    if "class_hist" not in beh:
        return None
    share = beh["class_hist"] / beh["class_hist"].sum(1, keepdims=True)
    return f"class:{int(np.argmax(share.var(0)))}"


def estimator(run_dir, method, seed):
    """fit(pool, behavior, X, y) -> (scores, intercept, info): the run's attribution method for both pools.
    Shapley values need v(empty), an untrained model's behaviour, and v(all) of each pool: the model
    trained on all data for retraining, the pruned model fine-tuned on all data for unlearning."""
    if method == "datamodel":
        return lambda name, behavior, X, y: attribute(X, y, "datamodel", seed=seed)
    ends = {}
    for key in ("untrained", "full", "pruned"):
        beh = _optional(run_dir, key)
        if beh is None:
            raise DataError(f"--method shapley needs {run_dir}/behaviors/{key}.npz")
        ends[key] = beh
    v_all = {"retrain": "full", "unlearn": "pruned"}

    def fit(name, behavior, X, y):
        one = lambda key: float(behavior_values(ends[key], behavior)[0])  # noqa: E731
        return attribute(X, y, "shapley", v_empty=one("untrained"), v_full=one(v_all[name]))
    return fit


def paired_test(boot_a, boot_b):
    """(95% interval of a - b, two-sided p) from paired bootstrap resamples of two LDS."""
    diff = boot_a - boot_b
    return interval(diff), float(min(1.0, 2 * min((diff <= 0).mean(), (diff >= 0).mean())))


def budget_curve(pools, held, budgets, unit, prune_seconds, seed, fit, behavior):
    """LDS of both methods at each budget, with bootstrap intervals and a paired test. Budgets count
    training time (the paper's accounting); the `_sampled` entries count each model's sampling time too
    (a budget of b retrainings then pays b retrained models with their samples, and as many unlearned
    models with theirs as the same seconds buy)."""
    rows = []
    sampling = {name: float(pools[name]["beh"]["seconds"].mean()) for name in POOLS}
    for b in budgets:
        n = {"retrain": models_for_budget(b, unit, pools["retrain"]["seconds"].mean(), 0.0, len(pools["retrain"]["y"])),
             "unlearn": models_for_budget(b, unit, pools["unlearn"]["seconds"].mean(), prune_seconds,
                                          len(pools["unlearn"]["y"]))}
        n_sampled = models_for_budget(b, unit + sampling["retrain"], pools["unlearn"]["seconds"].mean()
                                      + sampling["unlearn"], prune_seconds, len(pools["unlearn"]["y"]))
        preds, row = [], dict(budget=b)
        for name in POOLS:
            p = pools[name]
            row[f"n_{name}"] = n[name]
            if n[name] < 2:
                preds.append(None)
                continue
            scores, intercept, info = fit(name, behavior, p["X"][:n[name]], p["y"][:n[name]])
            preds.append(held["X"] @ scores + intercept)
            row[f"lds_{name}"] = spearman(preds[-1], held["y"])
            row[f"model_{name}"] = info["model"]
            row[f"all_zero_{name}"] = not np.any(scores)
        ok = [p for p in preds if p is not None]
        if ok:
            boot = bootstrap_lds(ok, held["y"], seed)
            names = [name for name, p in zip(POOLS, preds) if p is not None]
            for name, samples in zip(names, boot):
                row[f"ci_{name}"] = interval(samples)
            if len(ok) == 2:  # unlearn - retrain, paired over the same resamples
                row["diff_ci"], row["p_value"] = paired_test(boot[0], boot[1])
        row["n_unlearn_sampled"] = n_sampled
        if n_sampled >= 2 and preds[1] is not None:
            p = pools["unlearn"]
            scores, intercept, _ = fit("unlearn", behavior, p["X"][:n_sampled], p["y"][:n_sampled])
            pred = held["X"] @ scores + intercept
            row["lds_unlearn_sampled"] = spearman(pred, held["y"])
            boot = bootstrap_lds([pred, preds[1]], held["y"], seed)
            row["diff_ci_sampled"], row["p_value_sampled"] = paired_test(boot[0], boot[1])
        rows.append(row)
    return rows


def _fmt(row, name):
    if f"lds_{name}" not in row:
        return "n/a"
    lo, hi = row[f"ci_{name}"]
    zero = " (all-zero fit)" if row.get(f"all_zero_{name}") else ""
    return f"{row[f'lds_{name}']:.3f} [{lo:.2f}, {hi:.2f}]{zero}"


def plot_curves(curves, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.8), squeeze=False)
    for ax, (behavior, rows) in zip(axes[0], curves.items()):
        for name, color in (("unlearn", "C0"), ("retrain", "C1")):
            pts = [(r["budget"], r[f"lds_{name}"], *r[f"ci_{name}"]) for r in rows if f"lds_{name}" in r]
            if not pts:
                continue
            b, v, lo, hi = map(np.array, zip(*pts))
            ax.plot(b, v, "o-", color=color, label={"unlearn": "sparsified unlearning", "retrain": "retraining"}[name])
            ax.fill_between(b, lo, hi, color=color, alpha=0.2)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("training compute (units of one retraining)")
        ax.set_ylabel("LDS")
        ax.set_title(f"LDS vs budget: {behavior}")
        ax.axhline(0, color="grey", lw=0.5)
        ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)


def plot_scatter(points, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(points), figsize=(4.5 * len(points), 4), squeeze=False)
    for ax, (title, (pred, actual)) in zip(axes[0], points.items()):
        ax.scatter(pred, actual, s=14)
        ax.set_xlabel("predicted (sum of attributions)")
        ax.set_ylabel("actual (retrained from scratch)")
        ax.set_title(f"{title}\nSpearman {spearman(pred, actual):.3f}")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)


def examples(images, chosen, groups, per_row=8):
    """The chosen images; or, per image row of the grid, up to `per_row` images of each chosen contributor."""
    if groups is None:
        return images[chosen]
    rows = []
    for c in chosen[:per_row]:
        mine = images[groups == c][:per_row]
        rows.append(np.concatenate([mine, np.full((per_row - len(mine),) + mine.shape[1:], 255, np.uint8)]))
    return np.concatenate(rows)


def detection_auc(scores, corrupted):
    from sklearn.metrics import roc_auc_score
    labels = np.zeros(len(scores), dtype=bool)
    labels[corrupted] = True
    return float(roc_auc_score(labels, scores))


RECIPE = ("steps", "batch_size", "lr", "warmup", "lr_schedule", "ema_decay", "grad_clip", "hflip", "arch")


def training_recipes(run_dir):
    """{stage: recipe} of the full model, one retrained baseline model and one ground-truth model, read from
    their checkpoints: the paper trains all three with one procedure, and unlearning approximates it."""
    from ddpm import load_checkpoint
    found = {}
    for stage, where in (("full model", "full.pt"), ("retraining baseline", "models/retrain"),
                         ("ground truth", "models/lds")):
        path = os.path.join(run_dir, where)
        if os.path.isdir(path):
            files = sorted(f for f in os.listdir(path) if f.endswith(".pt") and not f.startswith("."))
            path = os.path.join(path, files[0]) if files else None
        if path and os.path.exists(path):
            a = load_checkpoint(path).get("args") or {}
            found[stage] = {k: a.get(k) for k in RECIPE}
    return found


def describe_recipes(recipes):
    if not recipes:
        return "n/a"
    first = next(iter(recipes.values()))
    text = (f"{first['steps']} steps, batch {first['batch_size']}, lr {first['lr']:g} ({first['lr_schedule']}, "
            f"warm-up {first['warmup']}), EMA {first['ema_decay']:g}")
    if all(r == first for r in recipes.values()):
        return f"{text}: one recipe for the {', '.join(recipes)}"
    return "**differ**: " + "; ".join(f"{stage} {r['steps']} steps, batch {r['batch_size']}, lr {r['lr']:g}"
                                      for stage, r in recipes.items())


def check_one_reference(behaviors):
    """Refuse a run whose FIDs were measured against different reference sets (compute_fid --ref-data)."""
    refs = {(str(b.get("ref_data", "")), str(b.get("ref_sha256", ""))) for b in behaviors}
    if len(refs) > 1:
        raise DataError("the behaviours of this run were measured against different FID reference sets: "
                        + "; ".join(f"{name or 'training data'} ({sha[:12] or 'unrecorded'})" for name, sha in sorted(refs)))


def evaluate_run(args):
    run_dir = args.run
    fig_dir = os.path.join(run_dir, "figures")
    class_behavior = choose_class(run_dir) if args.class_behavior == "auto" else args.class_behavior
    behaviors = ["fid"] + ([class_behavior] if class_behavior else [])
    full, pruned = _optional(run_dir, "full"), _optional(run_dir, "pruned")
    fid2, fid_seeds = _optional(run_dir, "fid2"), _optional(run_dir, "fid_seeds")
    corrupted_path = os.path.join(run_dir, "corrupted.npy")
    corrupted = np.load(corrupted_path) if os.path.exists(corrupted_path) else None
    # every input is read before the first figure is written: bad input leaves the run folder as it was
    ds = load_dataset(args.data, corrupt=args.corrupt, corrupt_seed=args.corrupt_seed)
    groups = load_groups(os.path.join(run_dir, "masks", "unlearn.npy"), n=len(ds))
    recipes = training_recipes(run_dir)

    pools_fid = {name: _pool(run_dir, name, "fid") for name in POOLS}
    held_fid = _pool(run_dir, "lds", "fid")
    check_one_reference([pools_fid[name]["beh"] for name in POOLS] + [held_fid["beh"]] +
                        [b for b in (full, pruned) if b is not None])
    unit = float(pools_fid["retrain"]["seconds"].mean())  # one retraining, in seconds
    prune_seconds = float(pruned["train_seconds"][0]) if pruned is not None else 0.0
    n_retrain = len(pools_fid["retrain"]["y"])
    if args.budgets:
        budgets = args.budgets
    else:
        budgets = sorted({b for b in (2, 4, 8, 16, 32, 64) if b <= n_retrain} | {n_retrain})
    fit = estimator(run_dir, args.method, args.seed)
    results = dict(budgets=budgets, unit_seconds=unit, prune_seconds=prune_seconds, behaviors={}, method=args.method)
    curves, scatter, attributions = {}, {}, {}
    for behavior in behaviors:
        pools = pools_fid if behavior == "fid" else {name: _pool(run_dir, name, behavior) for name in POOLS}
        held = held_fid if behavior == "fid" else _pool(run_dir, "lds", behavior)
        curves[behavior] = budget_curve(pools, held, budgets, unit, prune_seconds, args.seed, fit, behavior)
        # with every model of each pool: independent of measured wall times, so reruns reproduce it exactly
        lds_all = {}
        for name in POOLS:
            scores, intercept, _ = fit(name, behavior, pools[name]["X"], pools[name]["y"])
            lds_all[name] = dict(n=len(pools[name]["y"]), lds=lds(scores, intercept, held["X"], held["y"]))
        results["behaviors"][behavior] = dict(curve=curves[behavior], k_heldout=len(held["y"]), lds_all=lds_all)
        if behavior == "fid":
            top = curves[behavior][-1]
            for name in POOLS:
                n = top[f"n_{name}"]
                if n < 2:  # the largest budget buys too few models for a fit
                    continue
                scores, intercept, _ = fit(name, behavior, pools[name]["X"][:n], pools[name]["y"][:n])
                attributions[name] = scores
                scatter[f"{name} (budget {top['budget']:g}, {n} models)"] = (held["X"] @ scores + intercept, held["y"])
    os.makedirs(fig_dir, exist_ok=True)
    plot_curves(curves, os.path.join(fig_dir, "lds_vs_budget.png"))
    plot_scatter(scatter, os.path.join(fig_dir, "predicted_vs_actual.png"))

    # attributions from every unlearned model: the images, and how well they find corrupted ones
    all_scores, _, all_info = fit("unlearn", "fid", pools_fid["unlearn"]["X"], pools_fid["unlearn"]["y"])
    order = np.argsort(-all_scores)
    save_grid(examples(ds.images, order[:16], groups), os.path.join(fig_dir, "most_harmful.png"), nrow=8)
    save_grid(examples(ds.images, order[::-1][:16], groups), os.path.join(fig_dir, "most_helpful.png"), nrow=8)
    if corrupted is not None and groups is not None:  # a contributor is bad when most of its images are
        corrupted = np.flatnonzero(np.bincount(groups[corrupted], minlength=groups.max() + 1) > 0.5 * np.bincount(groups))
    results["unit"] = "contributor" if groups is not None else "image"
    if corrupted is not None and len(corrupted):
        results["auc"] = {name: detection_auc(s, corrupted) for name, s in attributions.items()}
        results["auc"]["unlearn_all"] = detection_auc(all_scores, corrupted)
        banzhaf, _, _ = attribute(pools_fid["unlearn"]["X"], pools_fid["unlearn"]["y"], "banzhaf")
        results["auc"]["unlearn_all_banzhaf"] = detection_auc(banzhaf, corrupted)
        if args.method != "datamodel":  # the other estimators on the same unlearned models
            datamodel, _, _ = attribute(pools_fid["unlearn"]["X"], pools_fid["unlearn"]["y"], "datamodel", seed=args.seed)
            results["auc"]["unlearn_all_datamodel"] = detection_auc(datamodel, corrupted)

    # Table 1 analogue
    t = dict(
        fid_full=float(full["fid"][0]) if full is not None else None,
        fid_pruned=float(pruned["fid"][0]) if pruned is not None else None,
        fid2_unlearn_vs_retrain=(float(fid2["fid"].mean()), float(fid2["fid"].std())) if fid2 is not None else None,
        fid_retrain_vs_retrain_other_seed=(float(fid_seeds["fid"].mean()), float(fid_seeds["fid"].std()))
        if fid_seeds is not None else None,
        seconds_retrain=unit, seconds_unlearn=float(pools_fid["unlearn"]["seconds"].mean()),
        seconds_prune_once=prune_seconds,
        seconds_behavior_retrain=float(pools_fid["retrain"]["beh"]["seconds"].mean()),
        seconds_behavior_unlearn=float(pools_fid["unlearn"]["beh"]["seconds"].mean()))
    t["speedup"] = t["seconds_retrain"] / t["seconds_unlearn"]
    if t["fid2_unlearn_vs_retrain"] and t["fid_retrain_vs_retrain_other_seed"]:
        t["fid2_ratio"] = t["fid2_unlearn_vs_retrain"][0] / t["fid_retrain_vs_retrain_other_seed"][0]
    held_seeds = np.bincount(held_fid["beh"]["index"].astype(int))
    t["ground_truth_seeds"] = [int(held_seeds[held_seeds > 0].min()), int(held_seeds.max())]
    t["recipes"] = recipes
    results["table1"] = t
    results["unlearn_all_model"] = all_info["model"]
    atomic_write(os.path.join(run_dir, "results.json"), lambda f: f.write(json.dumps(results, indent=1).encode()))
    report = render_report(results, run_dir, corrupted, ds, order)
    atomic_write(os.path.join(run_dir, "report.md"), lambda f: f.write(report.encode()))
    return results


def _auc(aucs, name):
    return f"{aucs[name]:.3f}" if name in aucs else "n/a (too few models)"


def render_report(r, run_dir, corrupted, ds, order):
    t = r["table1"]
    pm = lambda v: f"{v[0]:.2f} ± {v[1]:.2f}" if v else "n/a"  # noqa: E731
    num = lambda v: f"{v:.2f}" if v is not None else "n/a"  # noqa: E731
    seeds = lambda v: "n/a" if not v else str(v[0]) if v[0] == v[1] else f"{v[0]} to {v[1]}"  # noqa: E731
    lines = [f"# Data attribution report: {os.path.basename(os.path.abspath(run_dir))}", "",
             "Sign convention: the behaviour gamma is FID (lower is better); a **positive score means including "
             "that training image raises FID (harmful)**. For a class share, a positive score means the image makes "
             "that class more frequent among generated images.", "",
             "## Table 1 analogue", "", "| quantity | value |", "| --- | --- |",
             f"| FID vs real data, full model | {num(t['fid_full'])} |",
             f"| FID vs real data, pruned (and fine-tuned) model | {num(t['fid_pruned'])} |",
             f"| FID between unlearned and retrained models on the same subsets (FID2) | {pm(t['fid2_unlearn_vs_retrain'])} |",
             f"| FID between two retrainings of one subset, different seeds | {pm(t['fid_retrain_vs_retrain_other_seed'])} |",
             f"| FID2 ratio: unlearned vs retrained / two retraining seeds | {num(t.get('fid2_ratio'))} |",
             f"| training recipe | {describe_recipes(t.get('recipes'))} |",
             f"| ground truth: training seeds averaged per held-out subset | {seeds(t.get('ground_truth_seeds'))} |",
             f"| wall time per model: retraining from scratch | {t['seconds_retrain']:.1f} s |",
             f"| wall time per model: sparsified unlearning | {t['seconds_unlearn']:.2f} s |",
             f"| pruning + fine-tune, once | {t['seconds_prune_once']:.1f} s |",
             f"| speed ratio retrain / unlearn | {t['speedup']:.1f}x |",
             f"| behaviour (sampling) per model: retrained / unlearned | {t['seconds_behavior_retrain']:.1f} s / "
             f"{t['seconds_behavior_unlearn']:.1f} s |", "",
             "Budgets count training compute, as the paper does, in units of one retraining "
             f"({r['unit_seconds']:.1f} s); the unlearning method pays pruning + fine-tune once. The last two columns "
             "count each model's sampling time too (a user renting a GPU pays for both): a budget of b then pays b "
             "retrained models with their samples, and as many unlearned models with theirs as the same seconds buy.", ""]
    for behavior, b in r["behaviors"].items():
        lines += [f"## LDS vs budget: {behavior} (K = {b['k_heldout']} held-out subsets, 95% bootstrap intervals)", "",
                  "| budget | unlearned models | LDS unlearning | retrained models | LDS retraining | difference [95%] | p "
                  "| sampling counted: unlearned models, LDS, difference (p) |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for row in b["curve"]:
            diff = (f"{row['lds_unlearn'] - row['lds_retrain']:+.3f} [{row['diff_ci'][0]:+.2f}, {row['diff_ci'][1]:+.2f}]"
                    if "diff_ci" in row else "n/a")
            p = f"{row['p_value']:.3f}" if "p_value" in row else "n/a"
            sampled = (f"{row['n_unlearn_sampled']}, {row['lds_unlearn_sampled']:.3f}, "
                       f"{row['lds_unlearn_sampled'] - row['lds_retrain']:+.3f} (p = {row['p_value_sampled']:.3f})"
                       if "lds_unlearn_sampled" in row else f"{row.get('n_unlearn_sampled', 'n/a')}, n/a")
            lines.append(f"| {row['budget']:g} | {row['n_unlearn']} | {_fmt(row, 'unlearn')} | {row['n_retrain']} | "
                         f"{_fmt(row, 'retrain')} | {diff} | {p} | {sampled} |")
        a = b["lds_all"]
        lines += ["", f"With every model of each pool: unlearning ({a['unlearn']['n']} models) LDS "
                  f"{a['unlearn']['lds']:.3f}, retraining ({a['retrain']['n']} models) LDS {a['retrain']['lds']:.3f}.", ""]
    lines += ["![LDS vs budget](figures/lds_vs_budget.png)", "", "![predicted vs actual](figures/predicted_vs_actual.png)", ""]
    method = "Shapley values" if r.get("method") == "shapley" else "datamodel"
    lines += [f"## Most harmful and most helpful training {r['unit']}s (unlearning {method}, all unlearned models, FID)",
              "",
              "Most harmful (raise FID most):", "", "![most harmful](figures/most_harmful.png)", "",
              "Most helpful (lower FID most):", "", "![most helpful](figures/most_helpful.png)", ""]
    if "auc" in r:
        a = r["auc"]
        if r["unit"] == "contributor":  # each row of the figures is one contributor
            title, top = "## Finding the bad contributors", 8
            what = (f"{len(corrupted)} of {len(order)} contributors gave mostly corrupted images (each row of the figures "
                    f"above is one contributor). Detection AUC of the attribution scores (bad = positive)")
            found = f"{int(np.isin(order[:top], corrupted).sum())} of the {top} most harmful contributors are bad."
        else:
            title, top = "## Finding the corrupted images", 16
            what = (f"{len(corrupted)} of {len(ds)} training images are corrupted (replaced by noise, or named bad by the "
                    f"dataset). Detection AUC of the attribution scores (corrupted = positive)")
            found = f"{int(np.isin(order[:top], corrupted).sum())} of the {top} most harmful images are corrupted."
        lines += [title, "", f"{what}, {method}: unlearning at the largest budget {_auc(a, 'unlearn')}, "
                  f"retraining at the largest budget {_auc(a, 'retrain')}; unlearning with every unlearned model {a['unlearn_all']:.3f} "
                  f"(Banzhaf {a['unlearn_all_banzhaf']:.3f}"
                  + (f", datamodel {a['unlearn_all_datamodel']:.3f}" if "unlearn_all_datamodel" in a else "")
                  + f"). {found}", ""]
    return "\n".join(lines)


def headline(r):
    parts = []
    for behavior, b in r["behaviors"].items():
        row = b["curve"][-1]
        parts.append(f"LDS {behavior} at budget {row['budget']:g}: unlearning {_fmt(row, 'unlearn')} vs retraining "
                     f"{_fmt(row, 'retrain')}" + (f" (p = {row['p_value']:.3f})" if "p_value" in row else ""))
    if "auc" in r:
        parts.append(f"{'bad-contributor' if r.get('unit') == 'contributor' else 'corrupted-image'} AUC "
                     f"{r['auc']['unlearn_all']:.3f}")
    return "; ".join(parts)


def main(args):
    if args.run:
        if not os.path.isdir(args.run):
            raise DataError(f"run folder not found: {args.run}")
        results = evaluate_run(args)
        print(headline(results))
        print(f"wrote {os.path.join(args.run, 'report.md')} and figures/")
        return
    if not (args.attributions and args.masks and args.behaviors):
        raise DataError("give --run RUN, or --attributions, --masks and --behaviors")
    att = load_npz(args.attributions, "attributions file", ("scores", "intercept", "behavior"))
    if not np.isfinite(att["scores"]).all():
        raise DataError(f"{args.attributions}: scores must be finite")
    masks = load_masks(args.masks)
    if len(att["scores"]) != masks.shape[1]:
        raise DataError(f"attributions have {len(att['scores'])} scores but {args.masks} has width {masks.shape[1]}")
    _, X, y = aligned(masks, load_behaviors(args.behaviors), str(att["behavior"]), args.masks)
    pred = X @ att["scores"] + float(att["intercept"])
    lo, hi = interval(bootstrap_lds([pred], y, args.seed)[0])
    print(f"LDS {spearman(pred, y):.3f} [95% {lo:.3f}, {hi:.3f}] over {len(y)} held-out subsets")


if __name__ == "__main__":
    run(main, parse_args())

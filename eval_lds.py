"""Judge attributions by the linear datamodeling score (LDS; Park et al. 2023) against models really
retrained from scratch, compare unlearning- and retraining-based attributions at equal compute, and
write the report with its figures.

    python eval_lds.py --run runs/x                 # the whole report: runs/x/report.md, figures/
    python eval_lds.py --run runs/x --headline loss # lead with another behaviour
    python eval_lds.py --attributions runs/x/attributions/unlearn.npz \\
        --masks runs/x/masks/lds.npy --behaviors runs/x/behaviors/lds.npz     # one LDS, with its interval

LDS = Spearman correlation, over the K held-out subsets S_k, between the behaviour of the models
retrained on S_k (averaged over training seeds) and the prediction intercept + sum_{j in S_k} score_j.
The interval is a 95% bootstrap over held-out subsets. Every behaviour all pools have is scored (the
report leads with one, --headline). The budget curve counts training compute (MACs, as each checkpoint
records them: the same report on any day, and after any resumption) in units of one retraining:
retraining-based attributions at budget b use b retrained models; unlearning pays its pruning and
fine-tune once, then as many unlearned models as the rest of the budget buys; beside it the same budgets
in measured wall time, and with each model's behaviour counted. A run without held-out retrainings
(K = 0) gets an attribution-only report. numpy/scipy/scikit-learn/matplotlib only: no torch.
"""
import argparse
import json
import os

import numpy as np
from scipy.stats import rankdata

from data import ArgumentParser, DataError, atomic_write, fraction, load_dataset, load_groups, load_masks, run, save_grid
from fit_datamodel import aligned, attribute, behavior_keys, behavior_values, better, load_behaviors, load_npz

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
    p.add_argument("--class-behavior", default="auto", help="class:K for the class-share behaviour; auto: "
                   "the class whose share varies most across the unlearned models")
    p.add_argument("--headline", default="auto", help="the behaviour the report leads with (its figures, images and "
                   "detection); auto: fid when computed, else the first")
    p.add_argument("--only", type=lambda s: [k for k in s.split(",") if k], default=None,
                   help="comma-separated behaviours to score (default: every behaviour all pools have)")
    p.add_argument("--method", choices=["datamodel", "banzhaf", "shapley"], default="datamodel",
                   help="the attributions of both pools: datamodel, Banzhaf values (Wang & Jia 2023: the semivalue "
                   "most robust to noisy behaviours; half-subset pools), or Shapley values (KernelSHAP; needs pools of "
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
    """How many models a budget of `budget` retraining units (`unit` each) pays for, at `per_model` a model
    after a one-off `fixed` cost; capped at `available`."""
    n = int(np.floor((budget * unit - fixed) / per_model + 1e-9)) if budget * unit > fixed else 0
    return max(0, min(n, available if available is not None else n))


# ----------------------------------------------------------------------------------------------
# The report

def _pool(run_dir, name, behavior):
    masks = load_masks(os.path.join(run_dir, "masks", f"{name}.npy"))
    beh = load_behaviors(os.path.join(run_dir, "behaviors", f"{name}.npz"))
    rows, X, y = aligned(masks, beh, behavior, f"masks/{name}.npy")

    def per_row(key, default=np.nan):  # a per-model quantity, averaged over a row's models (training seeds)
        a = beh[key].astype(np.float64) if key in beh else np.full(len(beh["index"]), default)
        return np.array([a[beh["index"] == r].mean() for r in rows])
    sampling, loss = per_row("seconds", 0.0), per_row("loss_seconds", 0.0)
    return dict(rows=rows, X=X, y=y, beh=beh, seconds=per_row("train_seconds"), macs=per_row("train_macs"),
                behavior_seconds=sampling + loss, sampling_seconds=sampling, loss_seconds=loss,
                behavior_macs=per_row("behavior_macs"))


def _optional(run_dir, name):
    path = os.path.join(run_dir, "behaviors", f"{name}.npz")
    return load_behaviors(path) if os.path.exists(path) else None


def choose_class(beh):
    """class:K of the class whose share varies most across the unlearned models (None without class shares)."""
    if "class" not in behavior_keys(beh):
        return None
    shares = np.stack([behavior_values(beh, f"class:{k}") for k in range(beh["class_share" if "class_share" in beh
                                                                            else "class_hist"].shape[1])], 1)
    return f"class:{int(np.argmax(shares.var(0)))}"


def estimator(run_dir, method, seed):
    """fit(pool, behavior, X, y) -> (scores, intercept, info): the run's attribution method for both pools.
    Shapley values need v(empty), an untrained model's behaviour, and v(all) of each pool: the model
    trained on all data for retraining, the pruned model fine-tuned on all data for unlearning."""
    if method in ("datamodel", "banzhaf"):
        return lambda name, behavior, X, y: attribute(X, y, method, seed=seed)
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


ACCOUNTINGS = {  # how a budget is counted: (what one retraining costs, what one unlearned model costs)
    "compute": "training compute (MACs: 3 x forward MACs per image x images seen; the same on any day)",
    "time": "measured wall time of training",
    "with_behavior": "training and behaviour (sampling, loss) together",
}


def costs_of(pools, pruned):
    """{accounting: (one retraining, one unlearned model, the one-off pruning and fine-tune)}: the mean per-model
    cost of each pool in training MACs (when every checkpoint recorded them), wall seconds, and MACs (or seconds)
    with each model's behaviour counted too."""
    r, u = pools["retrain"], pools["unlearn"]
    prune_seconds = float(pruned["train_seconds"][0]) if pruned is not None else 0.0
    prune_macs = float(pruned["train_macs"][0]) if pruned is not None and "train_macs" in pruned else np.nan
    costs = {"time": (r["seconds"].mean(), u["seconds"].mean(), prune_seconds)}
    if np.isfinite([r["macs"].mean(), u["macs"].mean(), prune_macs]).all():
        costs["compute"] = (r["macs"].mean(), u["macs"].mean(), prune_macs)
        if np.isfinite([r["behavior_macs"].mean(), u["behavior_macs"].mean()]).all():
            costs["with_behavior"] = (r["macs"].mean() + r["behavior_macs"].mean(),
                                      u["macs"].mean() + u["behavior_macs"].mean(), prune_macs)
    else:  # checkpoints of an older version recorded wall times only
        costs["with_behavior"] = (r["seconds"].mean() + r["behavior_seconds"].mean(),
                                  u["seconds"].mean() + u["behavior_seconds"].mean(), prune_seconds)
    return {a: tuple(float(v) for v in costs[a]) for a in ACCOUNTINGS if a in costs}


def budget_curve(pools, held, budgets, costs, seed, fit, behavior, accountings):
    """LDS of both methods at each budget (in units of one retraining), with bootstrap intervals and a paired
    test, for each accounting of `accountings` (the first is the row's main one; the paper counts training
    compute). Fits of the same number of models are shared between accountings."""
    fits = {}

    def predict(name, n):
        if (name, n) not in fits:
            scores, intercept, info = fit(name, behavior, pools[name]["X"][:n], pools[name]["y"][:n])
            fits[name, n] = (held["X"] @ scores + intercept, info, not np.any(scores))
        return fits[name, n]

    rows = []
    for b in budgets:
        row = dict(budget=b)
        for a in accountings:
            unit, per_unlearned, fixed = costs[a]
            n = {"retrain": models_for_budget(b, 1.0, 1.0, 0.0, len(pools["retrain"]["y"])),
                 "unlearn": models_for_budget(b, unit, per_unlearned, fixed, len(pools["unlearn"]["y"]))}
            out = row if a == accountings[0] else row.setdefault(a, {})
            preds = {}
            for name in POOLS:
                out[f"n_{name}"] = n[name]
                if n[name] >= 2:
                    preds[name], info, zero = predict(name, n[name])
                    out[f"lds_{name}"] = spearman(preds[name], held["y"])
                    out[f"model_{name}"], out[f"all_zero_{name}"] = info["model"], zero
            if preds:
                boot = bootstrap_lds(list(preds.values()), held["y"], seed)
                for name, samples in zip(preds, boot):
                    out[f"ci_{name}"] = interval(samples)
                if len(preds) == 2:  # unlearn - retrain, paired over the same resamples
                    out["diff_ci"], out["p_value"] = paired_test(boot[0], boot[1])
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
    cols = min(4, len(curves))
    rows = -(-len(curves) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.flat[len(curves):]:
        ax.axis("off")
    for ax, (behavior, curve) in zip(axes.flat, curves.items()):
        for name, color in (("unlearn", "C0"), ("retrain", "C1")):
            pts = [(r["budget"], r[f"lds_{name}"], *r[f"ci_{name}"]) for r in curve if f"lds_{name}" in r]
            if not pts:
                continue
            b, v, lo, hi = map(np.array, zip(*pts))
            ax.plot(b, v, "o-", color=color, label={"unlearn": "sparsified unlearning", "retrain": "retraining"}[name])
            ax.fill_between(b, lo, hi, color=color, alpha=0.2)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("training compute (retrainings)")
        ax.set_ylabel("LDS")
        ax.set_title(f"LDS vs budget: {behavior}")
        ax.axhline(0, color="grey", lw=0.5)
        ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
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


def harm(scores, direction):
    """Scores turned so that larger means more harmful: as they are where lower is better (FID), negated where
    higher is better (precision); None where the behaviour has no better direction (a class share)."""
    return {"lower": scores, "higher": -scores}.get(direction)


RECIPE = ("steps", "batch_size", "lr", "warmup", "lr_schedule", "ema_decay", "grad_clip", "hflip", "arch")


def training_recipes(run_dir):
    """{stage: recipe} of the full model, one retrained baseline model and one ground-truth model, as their
    behaviours files recorded the checkpoints' arguments (no torch needed): the paper trains all three with one
    procedure, and unlearning approximates it."""
    found = {}
    for stage, name in (("full model", "full"), ("retraining baseline", "retrain"), ("ground truth", "lds")):
        beh = _optional(run_dir, name)
        if beh is not None and "args" in beh and len(beh["args"]):
            a = json.loads(str(beh["args"][0]))
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


UNLEARN_SETTINGS = ("steps", "batch_size", "lr", "warmup", "ema_decay", "ascent_weight", "rank", "batches")


def unlearning_method(beh):
    """The unlearned pool's method and its settings, as its behaviours file recorded them (one per pool)."""
    method = str(beh["method"]) if "method" in beh else "gd"
    a = json.loads(str(beh["args"][0])) if "args" in beh and len(beh["args"]) else {}
    a = {k: v for k, v in a.items() if (k != "ascent_weight" or method == "neggrad") and (k != "rank" or method == "lora")}
    settings = ", ".join(f"{k.replace('_', ' ')} {a[k]:g}" if isinstance(a[k], float) else f"{k.replace('_', ' ')} {a[k]}"
                         for k in UNLEARN_SETTINGS if a.get(k) is not None)
    return method, settings


def check_one_reference(behaviors):
    """Refuse a run whose FIDs were measured against different reference sets (compute_fid --ref-data)."""
    refs = {(str(b.get("ref_data", "")), str(b.get("ref_sha256", ""))) for b in behaviors}
    if len(refs) > 1:
        raise DataError("the behaviours of this run were measured against different FID reference sets: "
                        + "; ".join(f"{name or 'training data'} ({sha[:12] or 'unrecorded'})" for name, sha in sorted(refs)))


def run_behaviors(pool_behaviors, class_behavior, headline, only=None):
    """The behaviours every pool has (class as class:K), the headline first."""
    common = [k for k in behavior_keys(pool_behaviors[0]) if all(k in behavior_keys(b) for b in pool_behaviors[1:])]
    keys = [class_behavior if k == "class" else k for k in common if k != "class" or class_behavior]
    if only:
        keys = [k for k in keys if k in only or (k.startswith("class:") and "class" in only)]
    if headline == "auto":
        headline = "fid" if "fid" in keys else keys[0] if keys else None
    if headline not in keys:
        raise DataError(f"headline behaviour {headline!r} is not in every pool's behaviours ({', '.join(keys)})")
    return [headline] + [k for k in keys if k != headline]


def evaluate_attribution_only(args):
    """A run without held-out retrainings (K = 0; FULL= a model one already has): the attributions from every
    unlearned model, the most harmful and helpful images, detection of the known-bad ones; no LDS."""
    run_dir = args.run
    fig_dir = os.path.join(run_dir, "figures")
    full, pruned = _optional(run_dir, "full"), _optional(run_dir, "pruned")
    corrupted_path = os.path.join(run_dir, "corrupted.npy")
    corrupted = np.load(corrupted_path) if os.path.exists(corrupted_path) else None
    ds = load_dataset(args.data, corrupt=args.corrupt, corrupt_seed=args.corrupt_seed)
    groups = load_groups(os.path.join(run_dir, "masks", "unlearn.npy"), n=len(ds))
    unlearn_beh = load_behaviors(os.path.join(run_dir, "behaviors", "unlearn.npz"))
    class_behavior = choose_class(unlearn_beh) if args.class_behavior == "auto" else args.class_behavior
    behaviors = run_behaviors([unlearn_beh], class_behavior, args.headline, args.only)
    headline = behaviors[0]
    check_one_reference([unlearn_beh] + [b for b in (full, pruned) if b is not None])
    fit = estimator(run_dir, args.method, args.seed)
    bad = corrupted
    if corrupted is not None and groups is not None:
        bad = np.flatnonzero(np.bincount(groups[corrupted], minlength=groups.max() + 1) > 0.5 * np.bincount(groups))
    results = dict(method=args.method, headline=headline, attribution_only=True, behaviors={},
                   unit="contributor" if groups is not None else "image",
                   unlearning=dict(zip(("method", "settings"), unlearning_method(unlearn_beh))))
    scores_of = {}
    for behavior in behaviors:
        p = _pool(run_dir, "unlearn", behavior)
        scores, intercept, info = fit("unlearn", behavior, p["X"], p["y"])
        scores_of[behavior] = scores
        entry = dict(better=better(unlearn_beh, behavior), n=len(p["y"]), spread=float(np.std(p["y"], ddof=1)),
                     model=info["model"])
        if bad is not None and len(bad) and entry["better"]:
            entry["auc_all"] = detection_auc(harm(scores, entry["better"]), bad)
        results["behaviors"][behavior] = entry
    p = _pool(run_dir, "unlearn", headline)
    direction = results["behaviors"][headline]["better"]
    ranking = harm(scores_of[headline], direction)
    order = np.argsort(-(ranking if ranking is not None else scores_of[headline]))
    if bad is not None and len(bad) and direction:
        results["auc"] = dict(unlearn_all=results["behaviors"][headline]["auc_all"])
        banzhaf, _, _ = attribute(p["X"], p["y"], "banzhaf")
        results["auc"]["unlearn_all_banzhaf"] = detection_auc(harm(banzhaf, direction), bad)
    results["table1"] = dict(
        fid_full=float(full["fid"][0]) if full is not None and "fid" in full else None,
        fid_pruned=float(pruned["fid"][0]) if pruned is not None and "fid" in pruned else None,
        seconds_unlearn=float(p["seconds"].mean()), macs_unlearn=float(p["macs"].mean()),
        seconds_prune_once=float(pruned["train_seconds"][0]) if pruned is not None else None,
        seconds_behavior_unlearn=float(p["behavior_seconds"].mean()), seconds_sampling=float(p["sampling_seconds"].mean()),
        seconds_loss=float(p["loss_seconds"].mean()))
    os.makedirs(fig_dir, exist_ok=True)
    save_grid(examples(ds.images, order[:16], groups), os.path.join(fig_dir, "most_harmful.png"), nrow=8)
    save_grid(examples(ds.images, order[::-1][:16], groups), os.path.join(fig_dir, "most_helpful.png"), nrow=8)
    atomic_write(os.path.join(run_dir, "attributions", "all_behaviors.npz"),
                 lambda f: np.savez(f, **{k.replace(":", "_"): v for k, v in scores_of.items()}))
    atomic_write(os.path.join(run_dir, "results.json"), lambda f: f.write(json.dumps(results, indent=1).encode()))
    atomic_write(os.path.join(run_dir, "report.md"),
                 lambda f: f.write(render_attribution_only(results, run_dir, bad, ds, order).encode()))
    return results


def render_attribution_only(r, run_dir, corrupted, ds, order):
    t, headline, method = r["table1"], r["headline"], r["unlearning"]
    hb = r["behaviors"][headline]
    num = lambda v: f"{v:.2f}" if v is not None else "n/a"  # noqa: E731
    estimator_name = {"shapley": "Shapley values", "banzhaf": "Banzhaf values"}.get(r.get("method"), "datamodel")
    lines = [f"# Data attribution report: {os.path.basename(os.path.abspath(run_dir))} (attribution only)", "",
             "**No LDS was measured.** This run has no held-out subsets retrained from scratch (K = 0), so nothing "
             "here says how well the attributions predict what retraining would do. Measuring it (the linear "
             "datamodeling score) needs models retrained from scratch on held-out subsets with the recipe that made "
             "the attributed model: its architecture, noise schedule, steps, batch size and learning rate; a "
             "different recipe would judge the attributions against another model's behaviour. Rerun with K > 0 "
             "(FULL= a checkpoint that records its recipe, or TRAIN_STEPS, BATCH and TRAIN_FLAGS that reproduce "
             "it) to measure it.", "",
             f"Headline behaviour: **{headline}** ({hb['better'] or 'no better direction'} is better). Attributions: "
             f"{estimator_name} of {hb['n']} unlearned models. Unlearning method: **{method['method']}** "
             f"({method['settings'] or 'settings n/a'}).", "",
             "Sign convention: a positive score means including that image raises the behaviour; for FID (lower is "
             "better) a **positive score means including that training image raises FID (harmful)**.", "",
             "| quantity | value |", "| --- | --- |",
             f"| FID vs the reference, full model / pruned (and fine-tuned) model | {num(t['fid_full'])} / "
             f"{num(t['fid_pruned'])} |",
             f"| pruning + fine-tune, once | {num(t['seconds_prune_once'])} s |",
             f"| per unlearned model: training compute, wall time | {_gmacs(t['macs_unlearn'])}, "
             f"{t['seconds_unlearn']:.2f} s |",
             f"| per unlearned model: sampling (every sampled behaviour) / loss and elbo (no sampling) | "
             f"{t['seconds_sampling']:.2f} s / {t['seconds_loss']:.2f} s |", "",
             "## Every behaviour", "", "| behaviour | better | spread across the unlearned models | detection AUC |",
             "| --- | --- | --- | --- |"]
    for behavior, b in r["behaviors"].items():
        auc = f"{b['auc_all']:.3f}" if "auc_all" in b else "n/a"
        lines.append(f"| {behavior}{' (headline)' if behavior == headline else ''} | {b['better'] or '-'} | "
                     f"{b['spread']:.4g} | {auc} |")
    lines += ["", "The scores of every behaviour: attributions/all_behaviors.npz (one array per behaviour).", "",
              f"## Most harmful and most helpful training {r['unit']}s ({headline})", "",
              "Most harmful:", "", "![most harmful](figures/most_harmful.png)", "",
              "Most helpful:", "", "![most helpful](figures/most_helpful.png)", ""]
    if "auc" in r:
        top = 8 if r["unit"] == "contributor" else 16
        lines += [f"## Finding the {'bad contributors' if r['unit'] == 'contributor' else 'corrupted images'}", "",
                  f"{len(corrupted)} {r['unit']}s are known to be bad. Detection AUC ({headline}; bad = harmful): "
                  f"{r['auc']['unlearn_all']:.3f} ({estimator_name}; Banzhaf {r['auc']['unlearn_all_banzhaf']:.3f}). "
                  f"{int(np.isin(order[:top], corrupted).sum())} of the {top} most harmful {r['unit']}s are bad.", ""]
    return "\n".join(lines)


def evaluate_run(args):
    run_dir = args.run
    if not os.path.exists(os.path.join(run_dir, "masks", "lds.npy")):  # K = 0: no ground truth to score against
        return evaluate_attribution_only(args)
    fig_dir = os.path.join(run_dir, "figures")
    full, pruned = _optional(run_dir, "full"), _optional(run_dir, "pruned")
    fid2, fid_seeds = _optional(run_dir, "fid2"), _optional(run_dir, "fid_seeds")
    corrupted_path = os.path.join(run_dir, "corrupted.npy")
    corrupted = np.load(corrupted_path) if os.path.exists(corrupted_path) else None
    # every input is read before the first figure is written: bad input leaves the run folder as it was
    ds = load_dataset(args.data, corrupt=args.corrupt, corrupt_seed=args.corrupt_seed)
    groups = load_groups(os.path.join(run_dir, "masks", "unlearn.npy"), n=len(ds))
    recipes = training_recipes(run_dir)
    unlearn_beh = load_behaviors(os.path.join(run_dir, "behaviors", "unlearn.npz"))
    class_behavior = choose_class(unlearn_beh) if args.class_behavior == "auto" else args.class_behavior
    pool_beh = [unlearn_beh] + [load_behaviors(os.path.join(run_dir, "behaviors", f"{n}.npz")) for n in ("retrain", "lds")]
    behaviors = run_behaviors(pool_beh, class_behavior, args.headline, args.only)
    headline = behaviors[0]
    pools_of = {b: {name: _pool(run_dir, name, b) for name in POOLS + ("lds",)} for b in behaviors}
    check_one_reference(pool_beh + [b for b in (full, pruned) if b is not None])
    first = pools_of[headline]
    costs = costs_of(first, pruned)
    accountings = [a for a in ACCOUNTINGS if a in costs]
    n_retrain = len(first["retrain"]["y"])
    budgets = args.budgets or sorted({b for b in (2, 4, 8, 16, 32, 64) if b <= n_retrain} | {n_retrain})
    fit = estimator(run_dir, args.method, args.seed)
    results = dict(budgets=budgets, costs={a: dict(zip(("retrain", "unlearn", "fixed"), c)) for a, c in costs.items()},
                   accounting=accountings[0], behaviors={}, method=args.method, headline=headline,
                   unlearning=dict(zip(("method", "settings"), unlearning_method(unlearn_beh))))
    # the unit of the budget curve (kept under its old names for readers of results.json)
    results["unit_seconds"], results["prune_seconds"] = costs["time"][0], costs["time"][2]
    curves, scatter, attributions, all_scores = {}, {}, {}, {}
    results["unit"] = "contributor" if groups is not None else "image"
    bad = corrupted
    if corrupted is not None and groups is not None:  # a contributor is bad when most of its images are
        bad = np.flatnonzero(np.bincount(groups[corrupted], minlength=groups.max() + 1) > 0.5 * np.bincount(groups))
    for behavior in behaviors:
        pools, held = pools_of[behavior], pools_of[behavior]["lds"]
        direction = better(pools["unlearn"]["beh"], behavior)
        # the headline behaviour in every accounting; the others in the main one (each fit costs ~1 s)
        curves[behavior] = budget_curve(pools, held, budgets, costs, args.seed, fit, behavior,
                                        accountings if behavior == headline else accountings[:1])
        # with every model of each pool: independent of measured wall times, so reruns reproduce it exactly
        lds_all, fitted = {}, {}
        for name in POOLS:
            fitted[name] = fit(name, behavior, pools[name]["X"], pools[name]["y"])
            lds_all[name] = dict(n=len(pools[name]["y"]), lds=lds(fitted[name][0], fitted[name][1], held["X"], held["y"]))
        entry = dict(curve=curves[behavior], k_heldout=len(held["y"]), lds_all=lds_all, better=direction)
        all_scores[behavior] = fitted["unlearn"][0]
        if bad is not None and len(bad) and direction:
            entry["auc_all"] = detection_auc(harm(fitted["unlearn"][0], direction), bad)
        results["behaviors"][behavior] = entry
    # the headline behaviour: the scatter, the images, and the detection at the largest budget
    pools, held = first, first["lds"]
    top = curves[headline][-1]
    for name in POOLS:
        n = top[f"n_{name}"]
        if n < 2:  # the largest budget buys too few models for a fit
            continue
        scores, intercept, _ = fit(name, headline, pools[name]["X"][:n], pools[name]["y"][:n])
        attributions[name] = scores
        scatter[f"{name} (budget {top['budget']:g}, {n} models)"] = (held["X"] @ scores + intercept, held["y"])
    direction = results["behaviors"][headline]["better"]
    ranking = harm(all_scores[headline], direction)
    order = np.argsort(-(ranking if ranking is not None else all_scores[headline]))
    if bad is not None and len(bad) and direction:
        results["auc"] = {name: detection_auc(harm(s, direction), bad) for name, s in attributions.items()}
        results["auc"]["unlearn_all"] = detection_auc(harm(all_scores[headline], direction), bad)
        banzhaf, _, _ = attribute(pools["unlearn"]["X"], pools["unlearn"]["y"], "banzhaf")
        results["auc"]["unlearn_all_banzhaf"] = detection_auc(harm(banzhaf, direction), bad)
        if args.method != "datamodel":  # the other estimators on the same unlearned models
            datamodel, _, _ = attribute(pools["unlearn"]["X"], pools["unlearn"]["y"], "datamodel", seed=args.seed)
            results["auc"]["unlearn_all_datamodel"] = detection_auc(harm(datamodel, direction), bad)
    os.makedirs(fig_dir, exist_ok=True)
    plot_curves(curves, os.path.join(fig_dir, "lds_vs_budget.png"))
    plot_scatter(scatter, os.path.join(fig_dir, "predicted_vs_actual.png"))
    save_grid(examples(ds.images, order[:16], groups), os.path.join(fig_dir, "most_harmful.png"), nrow=8)
    save_grid(examples(ds.images, order[::-1][:16], groups), os.path.join(fig_dir, "most_helpful.png"), nrow=8)

    # Table 1 analogue
    u, r = pools["unlearn"], pools["retrain"]
    t = dict(
        fid_full=float(full["fid"][0]) if full is not None and "fid" in full else None,
        fid_pruned=float(pruned["fid"][0]) if pruned is not None and "fid" in pruned else None,
        fid2_unlearn_vs_retrain=(float(fid2["fid"].mean()), float(fid2["fid"].std())) if fid2 is not None else None,
        fid_retrain_vs_retrain_other_seed=(float(fid_seeds["fid"].mean()), float(fid_seeds["fid"].std()))
        if fid_seeds is not None else None,
        seconds_retrain=float(r["seconds"].mean()), seconds_unlearn=float(u["seconds"].mean()),
        seconds_prune_once=costs["time"][2],
        seconds_behavior_retrain=float(r["behavior_seconds"].mean()),
        seconds_behavior_unlearn=float(u["behavior_seconds"].mean()),
        seconds_sampling=float(np.concatenate([r["sampling_seconds"], u["sampling_seconds"]]).mean()),
        seconds_loss=float(np.concatenate([r["loss_seconds"], u["loss_seconds"]]).mean()))
    t["speedup"] = t["seconds_retrain"] / t["seconds_unlearn"]
    if "compute" in costs:
        t["macs_retrain"], t["macs_unlearn"], t["macs_prune_once"] = costs["compute"]
        t["compute_ratio"] = t["macs_retrain"] / t["macs_unlearn"]
    if t["fid2_unlearn_vs_retrain"] and t["fid_retrain_vs_retrain_other_seed"]:
        t["fid2_ratio"] = t["fid2_unlearn_vs_retrain"][0] / t["fid_retrain_vs_retrain_other_seed"][0]
    held_seeds = np.bincount(held["beh"]["index"].astype(int))
    t["ground_truth_seeds"] = [int(held_seeds[held_seeds > 0].min()), int(held_seeds.max())]
    t["recipes"] = recipes
    results["table1"] = t
    atomic_write(os.path.join(run_dir, "results.json"), lambda f: f.write(json.dumps(results, indent=1).encode()))
    report = render_report(results, run_dir, bad, ds, order)
    atomic_write(os.path.join(run_dir, "report.md"), lambda f: f.write(report.encode()))
    return results


def _auc(aucs, name):
    return f"{aucs[name]:.3f}" if name in aucs else "n/a (too few models)"


def _gmacs(v):
    return f"{v / 1e9:,.1f} GMACs" if v >= 1e8 else f"{v / 1e6:,.2f} MMACs"


def _diff(row):
    if "diff_ci" not in row:
        return "n/a", "n/a"
    return (f"{row['lds_unlearn'] - row['lds_retrain']:+.3f} [{row['diff_ci'][0]:+.2f}, {row['diff_ci'][1]:+.2f}]",
            f"{row['p_value']:.3f}")


def render_report(r, run_dir, corrupted, ds, order):
    t = r["table1"]
    pm = lambda v: f"{v[0]:.2f} ± {v[1]:.2f}" if v else "n/a"  # noqa: E731
    num = lambda v: f"{v:.2f}" if v is not None else "n/a"  # noqa: E731
    seeds = lambda v: "n/a" if not v else str(v[0]) if v[0] == v[1] else f"{v[0]} to {v[1]}"  # noqa: E731
    headline, method = r["headline"], r["unlearning"]
    hb = r["behaviors"][headline]
    lines = [f"# Data attribution report: {os.path.basename(os.path.abspath(run_dir))}", "",
             f"Headline behaviour: **{headline}** ({hb['better'] or 'no better direction'} is better); the report's "
             f"first table and figures, and the images below, are for it. Every behaviour the run computed has its LDS "
             f"vs budget further down. Unlearning method: **{method['method']}** ({method['settings'] or 'settings n/a'}).",
             "",
             "Sign convention: a positive score means including that image raises the behaviour. For FID (lower is "
             "better) a **positive score means including that training image raises FID (harmful)**; where higher is "
             "better (precision, recall, density, coverage, IS, entropy) a positive score is helpful. For a class share, "
             "a positive score means the image makes that class more frequent among generated images.", "",
             "## Table 1 analogue", "", "| quantity | value |", "| --- | --- |",
             f"| FID vs real data, full model | {num(t['fid_full'])} |",
             f"| FID vs real data, pruned (and fine-tuned) model | {num(t['fid_pruned'])} |",
             f"| FID between unlearned and retrained models on the same subsets (FID2) | {pm(t['fid2_unlearn_vs_retrain'])} |",
             f"| FID between two retrainings of one subset, different seeds | {pm(t['fid_retrain_vs_retrain_other_seed'])} |",
             f"| FID2 ratio: unlearned vs retrained / two retraining seeds | {num(t.get('fid2_ratio'))} |",
             f"| training recipe | {describe_recipes(t.get('recipes'))} |",
             f"| ground truth: training seeds averaged per held-out subset | {seeds(t.get('ground_truth_seeds'))} |"]
    if "compute_ratio" in t:
        lines += [f"| training compute per model: retraining / unlearning | {_gmacs(t['macs_retrain'])} / "
                  f"{_gmacs(t['macs_unlearn'])} (**{t['compute_ratio']:.1f}x**) |",
                  f"| pruning + fine-tune, once | {_gmacs(t['macs_prune_once'])}, {t['seconds_prune_once']:.1f} s |"]
    else:
        lines.append(f"| pruning + fine-tune, once | {t['seconds_prune_once']:.1f} s |")
    lines += [f"| wall time per model: retraining / unlearning (measured) | {t['seconds_retrain']:.1f} s / "
              f"{t['seconds_unlearn']:.2f} s ({t['speedup']:.1f}x) |",
              f"| behaviour per model: sampling (every sampled behaviour) / loss and elbo (no sampling) | "
              f"{t['seconds_sampling']:.2f} s / {t['seconds_loss']:.2f} s |",
              f"| behaviour per model, all together: retrained / unlearned | {t['seconds_behavior_retrain']:.1f} s / "
              f"{t['seconds_behavior_unlearn']:.1f} s |", ""]
    acc = r["accounting"]
    lines += [f"Budgets are counted in {ACCOUNTINGS[acc]}, in units of one retraining, as the paper counts them; the "
              "unlearning method pays pruning + fine-tune once. For the headline behaviour two more columns count "
              "the budget in measured wall time of training (another day, or a resumed run, measures other seconds) "
              "and with each model's behaviour counted too (a user renting a GPU pays for both).", "",
              "## Every behaviour", "",
              f"| behaviour | better | LDS unlearning, all {hb['lds_all']['unlearn']['n']} models | LDS retraining, all "
              f"{hb['lds_all']['retrain']['n']} models | largest budget: LDS unlearning / retraining (p) | "
              f"detection AUC, all unlearned models |", "| --- | --- | --- | --- | --- | --- |"]
    for behavior, b in r["behaviors"].items():
        row = b["curve"][-1]
        p = f" (p = {row['p_value']:.3f})" if "p_value" in row else ""
        lines.append(f"| {behavior}{' (headline)' if behavior == headline else ''} | {b['better'] or '-'} | "
                     f"{b['lds_all']['unlearn']['lds']:.3f} | {b['lds_all']['retrain']['lds']:.3f} | "
                     f"{row.get('lds_unlearn', float('nan')):.3f} / {row.get('lds_retrain', float('nan')):.3f}{p} | "
                     f"{b['auc_all']:.3f} |" if "auc_all" in b else
                     f"| {behavior} | {b['better'] or '-'} | {b['lds_all']['unlearn']['lds']:.3f} | "
                     f"{b['lds_all']['retrain']['lds']:.3f} | {row.get('lds_unlearn', float('nan')):.3f} / "
                     f"{row.get('lds_retrain', float('nan')):.3f}{p} | n/a |")
    lines.append("")
    for behavior, b in r["behaviors"].items():
        extra = [a for a in ("time", "with_behavior") if a in b["curve"][0]]
        lines += [f"## LDS vs budget: {behavior} (K = {b['k_heldout']} held-out subsets, 95% bootstrap intervals)", "",
                  "| budget | unlearned models | LDS unlearning | retrained models | LDS retraining | difference [95%] | p "
                  + "".join(f"| {'wall time' if a == 'time' else 'behaviour counted'}: unlearned models, LDS, "
                            f"difference (p) " for a in extra) + "|",
                  "| --- " * (7 + len(extra)) + "|"]
        for row in b["curve"]:
            diff, p = _diff(row)
            cells = [f"{row['budget']:g}", str(row["n_unlearn"]), _fmt(row, "unlearn"), str(row["n_retrain"]),
                     _fmt(row, "retrain"), diff, p]
            for a in extra:
                o = row[a]
                cells.append(f"{o['n_unlearn']}, {o['lds_unlearn']:.3f}, {o['lds_unlearn'] - o['lds_retrain']:+.3f} "
                             f"(p = {o['p_value']:.3f})" if "p_value" in o else f"{o['n_unlearn']}, n/a")
            lines.append("| " + " | ".join(cells) + " |")
        a = b["lds_all"]
        lines += ["", f"With every model of each pool: unlearning ({a['unlearn']['n']} models) LDS "
                  f"{a['unlearn']['lds']:.3f}, retraining ({a['retrain']['n']} models) LDS {a['retrain']['lds']:.3f}.", ""]
    lines += ["![LDS vs budget](figures/lds_vs_budget.png)", "", "![predicted vs actual](figures/predicted_vs_actual.png)", ""]
    estimator_name = {"shapley": "Shapley values", "banzhaf": "Banzhaf values"}.get(r.get("method"), "datamodel")
    lines += [f"## Most harmful and most helpful training {r['unit']}s (unlearning {estimator_name}, all unlearned "
              f"models, {headline})", "",
              f"Most harmful ({'raise' if hb['better'] == 'lower' else 'lower'} {headline} most):", "",
              "![most harmful](figures/most_harmful.png)", "",
              f"Most helpful ({'lower' if hb['better'] == 'lower' else 'raise'} {headline} most):", "",
              "![most helpful](figures/most_helpful.png)", ""]
    if "auc" in r:
        a = r["auc"]
        if r["unit"] == "contributor":  # each row of the figures is one contributor
            title, top = "## Finding the bad contributors", 8
            what = (f"{len(corrupted)} of {len(order)} contributors gave mostly corrupted images (each row of the figures "
                    f"above is one contributor). Detection AUC of the attribution scores ({headline}; bad = harmful)")
        else:
            title, top = "## Finding the corrupted images", 16
            what = (f"{len(corrupted)} of {len(ds)} training images are corrupted (replaced by noise, or named bad by the "
                    f"dataset). Detection AUC of the attribution scores ({headline}; corrupted = harmful)")
        found = (f"{int(np.isin(order[:top], corrupted).sum())} of the {top} most harmful "
                 f"{r['unit']}s are {'bad' if r['unit'] == 'contributor' else 'corrupted'}.")
        lines += [title, "", f"{what}, {estimator_name}: unlearning at the largest budget {_auc(a, 'unlearn')}, "
                  f"retraining at the largest budget {_auc(a, 'retrain')}; unlearning with every unlearned model {a['unlearn_all']:.3f} "
                  f"(Banzhaf {a['unlearn_all_banzhaf']:.3f}"
                  + (f", datamodel {a['unlearn_all_datamodel']:.3f}" if "unlearn_all_datamodel" in a else "")
                  + f"). {found}", ""]
    return "\n".join(lines)


def headline(r):
    if r.get("attribution_only"):
        auc = r.get("auc", {}).get("unlearn_all")
        return (f"attribution only (no LDS: K = 0): {r['behaviors'][r['headline']]['n']} unlearned models, "
                f"{r['headline']}" + (f"; {r['unit']} detection AUC {auc:.3f}" if auc is not None else ""))
    b = r["behaviors"][r["headline"]]
    row = b["curve"][-1]
    parts = [f"LDS {r['headline']} at budget {row['budget']:g}: unlearning {_fmt(row, 'unlearn')} vs retraining "
             f"{_fmt(row, 'retrain')}" + (f" (p = {row['p_value']:.3f})" if "p_value" in row else "")]
    if "auc" in r:
        parts.append(f"{'bad-contributor' if r.get('unit') == 'contributor' else 'corrupted-image'} AUC "
                     f"{r['auc']['unlearn_all']:.3f}")
    return "; ".join(parts) + f" ({len(r['behaviors'])} behaviours in the report)"


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

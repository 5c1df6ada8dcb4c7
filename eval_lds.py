"""Judge attributions by the linear datamodeling score (LDS; Park et al. 2023) against models really
retrained from scratch: the method (sparsified unlearning), the same estimator on retrained models at equal
compute, and the field's baselines (baselines.py), side by side; then write the report with its figures.

    python eval_lds.py --run runs/x                 # the whole report: runs/x/report.md, figures/
    python eval_lds.py --run runs/x --headline loss # lead with another behaviour
    python eval_lds.py --attributions runs/x/attributions/unlearn.npz \\
        --masks runs/x/masks/lds.npy --behaviors runs/x/behaviors/lds.npz     # one LDS, with its interval

LDS = Spearman correlation, over the K held-out subsets S_k, between the behaviour of the models
retrained on S_k (averaged over training seeds) and the prediction intercept + sum_{j in S_k} score_j.
At each budget the budget's models are drawn at random from their pool --draws times (the one fit on the whole
pool where the budget buys all of it): the LDS is the mean over the draws, and its 95% interval is of that mean over
resamples of the held-out subsets; differences between methods are paired (the same held-out resamples; stats.py).
Retraining takes, at each budget, the estimator of the registry that predicts its own pool's left-out models best
(never chosen on the held-out subsets); the preset's declared comparisons get Holm and TOST p-values and the
minimum detectable difference; and the report states the compute at which unlearning reaches the strongest
retraining comparator (leave-one-out where the run has it). With CEILING retrainings (a second seed of some held-out
subsets) it gives the LDS a perfect predictor could reach. Every behaviour all pools have is scored (the report
leads with one, --headline). Compute is counted in units of one retraining: training compute (MACs, as each
checkpoint records them: the same report on any day, and after any resumption), and beside it measured wall time
and compute with each model's behaviour.
The budget curve gives retraining-based attributions b retrained models at budget b; unlearning pays its pruning
and fine-tune once, then as many unlearned models as the rest of the budget buys. A run without held-out
retrainings (K = 0) gets an attribution-only report. numpy/scipy/scikit-learn/matplotlib only: no torch.

The run is read once (load_run: every file, checked, before anything is written), evaluated (evaluate: numbers
only) and rendered (report.py: the markdown and the figures).
"""
import argparse
import json
import os
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import norm

import report
import runfolder
from data import (ArgumentParser, DataError, add_data_args, atomic_write, comma_list_type, dataset_from_args,
                  open_fraction, positive_float, positive_int, run, save_npz)
from fit_datamodel import ESTIMATORS, PREDICTIONS, attribute, largest_first, predict
from runfolder import (aligned, behavior_keys, behavior_values, better, load_behaviors, load_groups, load_masks,
                       load_npz, optional_behaviors, values_by_row)
from stats import (BOOTSTRAP, auc_permutation_p, bootstrap_lds, bootstrap_p, crossing, declared_family, holm, interval,
                   jackknife_inference, lds_per_draw, mean_lds, resolved_comparison, spearman, two_sided_p)

POOLS = ("unlearn", "retrain")  # the two ways of making models for the datamodel
VALIDATION_FOLDS = 5  # retraining's estimator is chosen on its own pool: the models a draw left out, or 5 folds
MIN_VALIDATION = 4  # the fewest left-out models a draw's validation scores on (fewer: the folds)


def parse_args(argv=None):
    p = ArgumentParser(__doc__)
    add_data_args(p)
    p.add_argument("--run", default=None, help="run folder: evaluate everything and write report.md")
    p.add_argument("--attributions", default=None, help="one attributions file (with --masks, --behaviors)")
    p.add_argument("--masks", default=None, help="held-out mask file (lds.npy)")
    p.add_argument("--behaviors", default=None, help="behaviours of the held-out retrained models")
    p.add_argument("--budgets", type=parse_budgets, default=None, help="comma-separated budgets in retraining units "
                   "(default: 2, 4, 8, ... up to the number of retrained models)")
    p.add_argument("--class-behavior", default="auto", help="class:K for the class-share behaviour; auto: "
                   "the class whose share varies most across the unlearned models")
    p.add_argument("--headline", default="auto", help="the behaviour the report leads with (its figures, images and "
                   "detection); auto: fid when computed, else the first")
    p.add_argument("--only", type=comma_list_type(), default=None,
                   help="comma-separated behaviours to score (default: every behaviour all pools have)")
    p.add_argument("--method", choices=list(ESTIMATORS), default="datamodel",
                   help="the attributions of both pools: datamodel, Banzhaf values (Wang & Jia 2023: the semivalue "
                   "most robust to noisy behaviours; half-subset pools), or Shapley values (KernelSHAP; needs pools of "
                   "Shapley-kernel subsets, behaviors/untrained.npz for v(empty), and v(all) from full.npz for "
                   "retraining and pruned.npz, the pruned model fine-tuned on all data, for unlearning)")
    p.add_argument("--draws", type=positive_int, default=50, help="random draws of each budget's models from their "
                   "pool (the one fit on the whole pool where the budget buys all of it): the LDS is their mean, and its "
                   "interval and tests are of that mean over resamples of the held-out subsets")
    p.add_argument("--draws-other", type=positive_int, default=10, help="draws for the behaviours other than the "
                   "headline (a datamodel fit costs ~0.3-1 s; the headline's budget table is the verdict)")
    p.add_argument("--also", type=comma_list_type(), default=[],
                   help="comma-separated estimators of fit_datamodel.ESTIMATORS that are not among retraining's choices "
                   "(surrogate-shap), each fitted to the unlearned models as a row of the comparison of its own, judged "
                   "as the others (its draws cost its fits: about a second each for SurrogateSHAP's trees)")
    p.add_argument("--prior", default="ekfac-ref", help="the baseline whose scores an --also estimator with a prior "
                   "(hybrid) pulls the unlearned models' fit toward; its compute is charged to that row")
    p.add_argument("--verdict-draws", type=positive_int, default=64, help="subsamples (9 in 10) of the unlearned "
                   "models whose fits give each unit's standard error (verdicts.csv: interval, Holm p, harmful / "
                   "helpful / undecided)")
    p.add_argument("--compare", type=comma_list_type(), default=["retraining"], help="the declared comparisons, "
                   "unlearning against each, the primary first (keys: retraining at equal compute, retraining-all, "
                   "budget:B for retraining at budget B of the curve, loo, a baseline's name such as trak-ref, an "
                   "--also estimator such as surrogate-shap; A/B for row A minus row B, e.g. hybrid/loo): the family "
                   "the report tests (Holm-adjusted p for a difference, TOST p for equivalence within --margin, the "
                   "minimum detectable difference); the "
                   "README's ahead / level / behind come from these alone. A preset declares them (COMPARE)")
    p.add_argument("--margin", type=positive_float, default=0.10, help="the equivalence margin of LDS (level: the difference "
                   "lies within +-margin by TOST)")
    p.add_argument("--alpha", type=open_fraction, default=0.05, help="the family's error rate (Holm)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap, the draws and the CV folds")
    args = p.parse_args(argv)
    unknown = [k for k in args.also if k not in ESTIMATORS]
    if unknown:
        p.error(f"--also: unknown estimator {', '.join(unknown)} (one of {', '.join(ESTIMATORS)})")
    return args


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
# The run, loaded once

@dataclass
class Pool:
    """One pool of models (unlearned, retrained, held-out): one entry per mask row, training seeds averaged."""
    rows: np.ndarray
    X: np.ndarray  # (rows, units) float: the subset indicators
    y: dict  # behaviour -> (rows,) values
    beh: dict  # the behaviours file itself
    train_macs: np.ndarray
    train_seconds: np.ndarray
    sampling_seconds: np.ndarray
    loss_seconds: np.ndarray
    behavior_macs: np.ndarray


@dataclass
class Run:
    """Everything the evaluation reads of a run folder."""
    dir: str
    ds: object  # data.Dataset: the training images (figures of the most harmful ones)
    real: np.ndarray  # the first clean training images (the report's real-vs-generated picture)
    groups: np.ndarray  # each image's contributor, or None (a per-image run)
    unit: str  # "contributor" or "image"
    bad: np.ndarray  # the known-bad units (indices), or None
    bad_kinds: dict  # fault kind -> its bad units
    behaviors: list  # the behaviours scored, the headline first
    directions: dict  # behaviour -> "lower", "higher" or None
    pools: dict  # "unlearn", "retrain", "lds" -> Pool (only "unlearn" when K = 0)
    ends: dict  # "full", "pruned", "untrained", "fid2", "fid_seeds", "quality" -> behaviours file or None
    recipes: dict
    unlearning: dict  # the unlearned pool's method and settings
    baselines: dict = field(default_factory=dict)  # name -> its attributions file (baselines.py)

    @property
    def headline(self):
        return self.behaviors[0]

    @property
    def attribution_only(self):
        return "lds" not in self.pools


def load_run(args):
    """Read and check every file of a run folder that the evaluation needs: bad input is refused before anything
    is written."""
    run_dir = args.run
    if not os.path.isdir(run_dir):
        raise DataError(f"run folder not found: {run_dir}")
    names = ("unlearn",) if not os.path.exists(runfolder.masks(run_dir, "lds")) else POOLS + ("lds",)
    ends = {k: optional_behaviors(run_dir, k) for k in ("full", "pruned", "untrained", "fid2", "fid_seeds", "quality")}
    ds = dataset_from_args(args)
    groups = load_groups(runfolder.masks(run_dir, "unlearn"), n=len(ds))
    files = {name: load_behaviors(runfolder.behaviors(run_dir, name)) for name in names}
    class_behavior = choose_class(files["unlearn"]) if args.class_behavior == "auto" else args.class_behavior
    behaviors = run_behaviors(list(files.values()), class_behavior, args.headline, args.only)
    check_one_reference(list(files.values()) + [b for k, b in ends.items() if k in ("full", "pruned") and b is not None])
    pools = {name: load_pool(run_dir, name, files[name], behaviors) for name in names}
    ceiling_file = runfolder.behaviors(run_dir, "lds_ceiling")  # CEILING=N: held-out subsets, another seed
    if "lds" in pools and os.path.exists(ceiling_file):
        pools["lds_ceiling"] = load_pool(run_dir, "lds", load_behaviors(ceiling_file), behaviors)
    bad, bad_kinds = bad_units(run_dir, ds, groups)
    n_units = pools["unlearn"].X.shape[1]
    real = ds.images[np.setdiff1d(np.arange(len(ds)), ds.corrupted)[:64]]  # clean images: no second load of the data
    return Run(dir=run_dir, ds=ds, real=real, groups=groups, unit="contributor" if groups is not None else "image", bad=bad,
               bad_kinds=bad_kinds, behaviors=behaviors, directions={b: better(files["unlearn"], b) for b in behaviors},
               pools=pools, ends=ends, recipes=training_recipes(dict(files, full=ends["full"])),
               unlearning=dict(zip(("method", "settings"), unlearning_method(files["unlearn"]))),
               baselines=load_baselines(run_dir, n_units))


def load_pool(run_dir, name, beh, behaviors):
    path = runfolder.masks(run_dir, name)
    masks, y = load_masks(path), {}
    for behavior in behaviors:
        rows, X, y[behavior] = aligned(masks, beh, behavior, runfolder.relative(run_dir, path))

    def per_row(key, default=np.nan):  # a per-model quantity, averaged over a row's models (training seeds)
        a = beh[key].astype(np.float64) if key in beh else np.full(len(beh["index"]), default)
        return np.array([a[beh["index"] == r].mean() for r in rows])
    return Pool(rows=rows, X=X, y=y, beh=beh, train_macs=per_row("train_macs"), train_seconds=per_row("train_seconds"),
                sampling_seconds=per_row("seconds", 0.0), loss_seconds=per_row("loss_seconds", 0.0),
                behavior_macs=per_row("behavior_macs"))


def bad_units(run_dir, ds, groups):
    """(the known-bad units, {fault kind: its bad units}): the run's corrupted images (corrupted.npy), or the
    contributors most of whose images are corrupted, each of the kind most of its corrupted images have (the
    dataset's planted faults; `corrupted` for images it does not know); (None, {}) when the run names none."""
    path = runfolder.corrupted(run_dir)
    if not os.path.exists(path):
        return None, {}
    corrupted = np.load(path)
    kind_of = {int(i): k for k, idx in ds.faults.items() for i in idx}
    kinds = np.array([kind_of.get(int(i), "corrupted") for i in corrupted], dtype=object)
    if groups is None:
        return corrupted, {k: corrupted[kinds == k] for k in dict.fromkeys(kinds)}
    g = groups.max() + 1
    bad = np.flatnonzero(np.bincount(groups[corrupted], minlength=g) > 0.5 * np.bincount(groups, minlength=g))
    counts = {k: np.bincount(groups[corrupted[kinds == k]], minlength=g) for k in dict.fromkeys(kinds)}
    by_kind = {}
    for unit in bad:
        by_kind.setdefault(max(counts, key=lambda k: counts[k][unit]), []).append(unit)
    return bad, {k: np.array(v) for k, v in by_kind.items()}


def load_baselines(run_dir, n_units):
    """{name: attributions file} of baselines.py's outputs in the run (attributions/baseline-NAME.npz)."""
    folder, found = runfolder.attributions_dir(run_dir), {}
    for f in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if runfolder.baseline_name(f):
            b = load_npz(os.path.join(folder, f), "baseline attributions file",
                         ("scores_by_behavior", "behaviors", "macs", "seconds"))
            if b["scores_by_behavior"].shape[1] != n_units or not np.isfinite(b["scores_by_behavior"]).all():
                raise DataError(f"{folder}/{f}: scores must be finite, one per {n_units} units")
            found[runfolder.baseline_name(f)] = b
    return dict(sorted(found.items(), key=lambda kv: int(kv[1].get("order", 0))))  # baselines.py's table order


def choose_class(beh):
    """class:K of the class whose share varies most across the unlearned models (None without class shares)."""
    if "class" not in behavior_keys(beh):
        return None
    n_classes = beh["class_share" if "class_share" in beh else "class_hist"].shape[1]
    shares = np.stack([behavior_values(beh, f"class:{k}") for k in range(n_classes)], 1)
    return f"class:{int(np.argmax(shares.var(0)))}"


def run_behaviors(pool_behaviors, class_behavior, headline, only=None):
    """The behaviours every pool has (class as class:K), the headline first."""
    common = [k for k in behavior_keys(pool_behaviors[0]) if all(k in behavior_keys(b) for b in pool_behaviors[1:])]
    keys = [class_behavior if k == "class" else k for k in common if k != "class" or class_behavior]
    if only:
        keys = [k for k in keys if k in only or (k.startswith("class:") and "class" in only)]
    headline = runfolder.headline(headline, keys)
    if headline not in keys:
        raise DataError(f"headline behaviour {headline!r} is not in every pool's behaviours ({', '.join(keys)})")
    return [headline] + [k for k in keys if k != headline]


def check_one_reference(behaviors):
    """Refuse a run whose FIDs were measured against different reference sets (compute_fid --ref-data)."""
    refs = {(str(b.get("ref_data", "")), str(b.get("ref_sha256", ""))) for b in behaviors}
    if len(refs) > 1:
        raise DataError("the behaviours of this run were measured against different FID reference sets: "
                        + "; ".join(f"{name or 'training data'} ({sha[:12] or 'unrecorded'})" for name, sha in sorted(refs)))


RECIPE = ("steps", "batch_size", "lr", "warmup", "lr_schedule", "ema_decay", "grad_clip", "hflip", "arch")


def training_recipes(files):
    """{stage: recipe} of the full model, one retrained baseline model and one ground-truth model, as their
    behaviours files recorded the checkpoints' arguments (no torch needed): the paper trains all three with one
    procedure, and unlearning approximates it."""
    found = {}
    for stage, name in (("full model", "full"), ("retraining baseline", "retrain"), ("ground truth", "lds")):
        beh = files.get(name)
        if beh is not None and "args" in beh and len(beh["args"]):
            a = json.loads(str(beh["args"][0]))
            found[stage] = {k: a.get(k) for k in RECIPE}
    return found


UNLEARN_SETTINGS = ("steps", "batch_size", "lr", "warmup", "ema_decay", "ascent_weight", "rank", "batches")


def unlearning_method(beh):
    """The unlearned pool's method and its settings, as its behaviours file recorded them (one per pool)."""
    method = str(beh["method"]) if "method" in beh else "gd"
    a = json.loads(str(beh["args"][0])) if "args" in beh and len(beh["args"]) else {}
    a = {k: v for k, v in a.items() if (k != "ascent_weight" or method == "neggrad") and (k != "rank" or method == "lora")}
    settings = ", ".join(f"{k.replace('_', ' ')} {a[k]:g}" if isinstance(a[k], float) else f"{k.replace('_', ' ')} {a[k]}"
                         for k in UNLEARN_SETTINGS if a.get(k) is not None)
    return method, settings


# ----------------------------------------------------------------------------------------------
# The score and its uncertainty

def lds(scores, intercept, X, y, info=None):
    """Spearman correlation between predicted (fit_datamodel.predict) and actual behaviours of held-out subsets."""
    return spearman(predict(X, scores, intercept, info or {}), y)


def paired_test(boot_a, boot_b):
    """(95% interval of a - b, two-sided p as (c + 1) / (B + 1)) from paired bootstrap resamples of two LDS."""
    diff = boot_a - boot_b
    return interval(diff), bootstrap_p(diff)


def detection_auc(scores, corrupted):
    from sklearn.metrics import roc_auc_score
    labels = np.zeros(len(scores), dtype=bool)
    labels[corrupted] = True
    return float(roc_auc_score(labels, scores))


def harm(scores, direction):
    """Scores turned so that larger means more harmful: as they are where lower is better (FID), negated where
    higher is better (precision); None where the behaviour has no better direction (a class share)."""
    return {"lower": scores, "higher": -scores}.get(direction)


# ----------------------------------------------------------------------------------------------
# The estimator of both pools

def estimator(run, method, seed, prior=None):
    """fit(pool, behavior, X, y) -> (scores, intercept, info): one estimator of fit_datamodel.ESTIMATORS for both
    pools. Shapley values (and SurrogateSHAP) need v(empty), an untrained model's behaviour, and v(all) of each
    pool: the model trained on all data for retraining, the pruned model fine-tuned on all data for unlearning. An
    estimator with a prior (hybrid) takes the baseline `prior`'s scores of the behaviour (prior_scores)."""
    with_prior = (lambda behavior: prior_scores(run, prior, behavior)) if ESTIMATORS[method].prior else \
        (lambda behavior: None)
    if not ESTIMATORS[method].ends:
        return lambda name, behavior, X, y: attribute(X, y, method, seed=seed, prior=with_prior(behavior))
    if not ends_of(run):
        missing = [runfolder.behaviors(run.dir, k) for k in ("untrained", "full", "pruned") if run.ends[k] is None]
        raise DataError(f"--method {method} needs {', '.join(missing)}")
    v_all = {"retrain": "full", "unlearn": "pruned"}

    def fit(name, behavior, X, y):
        one = lambda key: float(behavior_values(run.ends[key], behavior)[0])  # noqa: E731
        return attribute(X, y, method, seed=seed, v_empty=one("untrained"), v_full=one(v_all[name]),
                         prior=with_prior(behavior))
    return fit


def prior_scores(run, name, behavior):
    """The baseline `name`'s scores of `behavior` (None where it has none: the estimator's row leaves that behaviour
    out)."""
    keys = json.loads(str(run.baselines[name]["behaviors"]))
    return run.baselines[name]["scores_by_behavior"][keys.index(behavior)] if behavior in keys else None


def estimators(run, method, seed, also=(), prior=None):
    """{estimator: fit} of the registry, the run's own first, then retraining's choices (the retraining side of the
    headline's budget curve takes the best of them at each budget), then `also` (rows of their own). Those that need
    Shapley-kernel subsets only where the pools follow the kernel (the run's method needs it), and those that use
    v(empty) only where the run has it."""
    kernel, ends = ESTIMATORS[method].kernel, ends_of(run)
    names = [method] + [m for m, e in ESTIMATORS.items() if m != method and e.choice and (not e.kernel or kernel)
                        and (not e.ends or ends)]
    for m in also:
        if ESTIMATORS[m].kernel and not kernel:
            raise DataError(f"--also {m} needs pools of Shapley-kernel subsets (METHOD=shapley)")
        if ESTIMATORS[m].prior and prior not in run.baselines:
            raise DataError(f"--also {m}: its prior {prior} is not among this run's baselines "
                            f"({', '.join(run.baselines) or 'none'}): run it (BASELINES) or name another (--prior)")
        names += [m] if m not in names else []
    return {m: estimator(run, m, seed, prior) for m in names}


def ends_of(run):
    """Whether the run has v(empty) and v(all) of both pools (an untrained, the full and the pruned model's
    behaviours)."""
    return all(run.ends[key] is not None for key in ("untrained", "full", "pruned"))


def choices_of(fits):
    """The estimators retraining's side picks its best from: the run's own and the registry's choices."""
    return [m for m in fits.fitters if m == fits.method or ESTIMATORS[m].choice]


# ----------------------------------------------------------------------------------------------
# Compute, in units of one retraining

ACCOUNTINGS = {  # how a budget is counted: (what one retraining costs, what one unlearned model costs)
    "compute": "training compute (MACs: 3 x forward MACs per image x images seen; the same on any day)",
    "time": "measured wall time of training",
    "with_behavior": "training and behaviour (sampling, loss) together",
}


def costs_of(run):
    """{accounting: (one retraining, one unlearned model, the one-off pruning and fine-tune)}: the mean per-model
    cost of each pool in training MACs (when every checkpoint recorded them), wall seconds, and MACs (or seconds)
    with each model's behaviour counted too."""
    r, u, pruned = run.pools["retrain"], run.pools["unlearn"], run.ends["pruned"]
    prune_seconds = float(pruned["train_seconds"][0]) if pruned is not None else 0.0
    prune_macs = float(pruned["train_macs"][0]) if pruned is not None and "train_macs" in pruned else np.nan
    costs = {"time": (r.train_seconds.mean(), u.train_seconds.mean(), prune_seconds)}
    if np.isfinite([r.train_macs.mean(), u.train_macs.mean(), prune_macs]).all():
        costs["compute"] = (r.train_macs.mean(), u.train_macs.mean(), prune_macs)
        if np.isfinite([r.behavior_macs.mean(), u.behavior_macs.mean()]).all():
            costs["with_behavior"] = (r.train_macs.mean() + r.behavior_macs.mean(),
                                      u.train_macs.mean() + u.behavior_macs.mean(), prune_macs)
    else:  # checkpoints of an older version recorded wall times only
        costs["with_behavior"] = (r.train_seconds.mean() + (r.sampling_seconds + r.loss_seconds).mean(),
                                  u.train_seconds.mean() + (u.sampling_seconds + u.loss_seconds).mean(), prune_seconds)
    return {a: tuple(float(v) for v in costs[a]) for a in ACCOUNTINGS if a in costs}


def models_for_budget(budget, unit, per_model, fixed=0.0, available=None):
    """How many models a budget of `budget` retraining units (`unit` each) pays for, at `per_model` a model
    after a one-off `fixed` cost; capped at `available`."""
    n = int(np.floor((budget * unit - fixed) / per_model + 1e-9)) if budget * unit > fixed else 0
    return max(0, min(n, available if available is not None else n))


def unlearning_units(costs, n, accounting):
    """What pruning once and n unlearned models cost, in retrainings."""
    unit, per_model, fixed = costs[accounting]
    return (fixed + n * per_model) / unit


# ----------------------------------------------------------------------------------------------
# LDS vs budget: unlearning against retraining

class Fits:
    """The estimators' fits of a pool's models, each computed once: on the first n models (the figures), and on D
    seeded random draws of n models (the budget curve and the comparison; one fit of the datamodel costs ~0.3-1 s).
    fitters: {estimator: fit function}, the run's own estimator first; prior: the baseline an estimator with a
    prior (hybrid) takes its scores from."""

    def __init__(self, run, fitters, draws=50, seed=0, draws_other=10, prior=None):
        self.run, self.fitters, self.method, self.draws, self.seed = run, fitters, next(iter(fitters)), draws, seed
        self.draws_other, self.prior = draws_other, prior  # draws of the behaviours other than the headline
        self.done, self.drawn, self.validation = {}, {}, {}

    def fit(self, name, behavior, X, y, estimator=None):
        return self.fitters[estimator or self.method](name, behavior, X, y)

    def __call__(self, name, behavior, n=None, estimator=None):
        pool = self.run.pools[name]
        n = len(pool.rows) if n is None else n
        key = (name, behavior, n, estimator or self.method)
        if key not in self.done:
            self.done[key] = self.fit(name, behavior, pool.X[:n], pool.y[behavior][:n], estimator)
        return self.done[key]

    def predict(self, name, behavior, n=None):
        return predict(self.run.pools["lds"].X, *self(name, behavior, n))

    def rows(self, name, n, draws=None):
        """(D, n) rows of pool `name` that the budget's D draws take: n at random without replacement, seeded by
        pool and n (every estimator and behaviour sees the same draws: paired); where n covers the whole pool, the
        one fit on all of it (no draw counts a model twice)."""
        draws = draws or self.draws
        size = len(self.run.pools[name].rows)
        if n >= size:
            return np.arange(size)[None]
        rng = np.random.default_rng([self.seed, POOLS.index(name), n])
        return np.stack([rng.choice(size, n, replace=False) for _ in range(draws)])

    def drawn_predictions(self, name, behavior, n, estimator=None, draws=None):
        """(predictions (D, K) of the held-out subsets, how many draws chose all-zero scores) of the estimator fitted
        on each of the D draws of n models. Each draw's fit also predicts the pool's models it left out: their mean
        Spearman is the estimator's validation score (self.validation), which never sees a held-out subset."""
        estimator = estimator or self.method
        key = (name, behavior, n, estimator, draws or self.draws)
        if key not in self.drawn:
            pool, X_held = self.run.pools[name], self.run.pools["lds"].X
            preds, zero, valid = [], 0, []
            for rows in self.rows(name, n, draws):
                scores, intercept, info = self.fit(name, behavior, pool.X[rows], pool.y[behavior][rows], estimator)
                preds.append(predict(X_held, scores, intercept, info))
                zero += not np.any(scores)
                rest = np.setdiff1d(np.arange(len(pool.rows)), rows)
                if len(rest) >= MIN_VALIDATION:
                    valid.append(spearman(predict(pool.X[rest], scores, intercept, info), pool.y[behavior][rest]))
            self.drawn[key] = (np.stack(preds), zero)
            self.validation[key] = float(np.mean(valid)) if valid else self.cross_validated(name, behavior, estimator)
        return self.drawn[key]

    def cross_validated(self, name, behavior, estimator):
        """The estimator's mean Spearman on each of VALIDATION_FOLDS folds of the pool, fitted on the other folds
        (seeded folds): its validation score where a budget takes (nearly) the whole pool."""
        pool = self.run.pools[name]
        order = np.random.default_rng([self.seed, POOLS.index(name), 7]).permutation(len(pool.rows))
        scores = []
        for fold in np.array_split(order, VALIDATION_FOLDS):
            train = np.setdiff1d(order, fold)
            if len(fold) < 2 or len(train) < 2:
                continue
            s, b, info = self.fit(name, behavior, pool.X[train], pool.y[behavior][train], estimator)
            scores.append(spearman(predict(pool.X[fold], s, b, info), pool.y[behavior][fold]))
        return float(np.mean(scores)) if scores else 0.0


def chosen_drawn(fits, name, behavior, n, choices, draws, y):
    """(estimator, its predictions (D, K), {estimator: mean LDS on the held-out subsets}, its all-zero draws,
    {estimator: validation score}) of the estimator of `choices` with the best validation score on its own pool
    (fits.validation: the pool's models each draw left out, or folds of the pool): the held-out subsets that score it
    never choose it."""
    tried = {m: fits.drawn_predictions(name, behavior, n, m, draws) for m in choices}
    valid = {m: fits.validation[(name, behavior, n, m, draws or fits.draws)] for m in choices}
    best = max(choices, key=lambda m: valid[m])
    means = {m: mean_lds(p, y) for m, (p, _) in tried.items()}
    return best, tried[best][0], means, tried[best][1], valid


def budget_curve(run, fits, behavior, budgets, costs, accountings, seed, estimators=None, draws=None):
    """LDS of both methods at each budget (in units of one retraining), each the mean over D draws of the budget's
    models (the one fit on the whole pool where the budget buys it), with an interval and a paired test of that mean
    from a bootstrap over the held-out subsets, for each accounting of `accountings` (the first is the row's main one;
    the paper counts training compute). Unlearning uses the run's estimator; retraining the one of `estimators` that
    validates best on the retraining pool itself at that budget (chosen_drawn: never on the held-out subsets)."""
    y, n_units = run.pools["lds"].y[behavior], run.pools["unlearn"].X.shape[1]
    estimators = estimators or [fits.method]
    rows = []
    for b in budgets:
        row = dict(budget=b)
        for a in accountings:
            unit, per_unlearned, fixed = costs[a]
            n = {"retrain": models_for_budget(b, 1.0, 1.0, 0.0, len(run.pools["retrain"].rows)),
                 "unlearn": models_for_budget(b, unit, per_unlearned, fixed, len(run.pools["unlearn"].rows))}
            out = row if a == accountings[0] else row.setdefault(a, {})
            preds = {}
            for name in POOLS:
                out[f"n_{name}"] = n[name]
                if n[name] < 2:
                    continue
                best, preds[name], means, zero, valid = chosen_drawn(
                    fits, name, behavior, n[name], estimators if name == "retrain" else [fits.method], draws, y)
                out.update({f"lds_{name}": means[best], f"sd_{name}": float(lds_per_draw(preds[name], y).std()),
                            f"estimator_{name}": best, f"draws_{name}": len(preds[name]),
                            f"all_zero_{name}": zero == len(preds[name]),
                            f"whole_pool_{name}": n[name] >= len(run.pools[name].rows),
                            f"underdetermined_{name}": n[name] < n_units})
                if len(means) > 1:
                    out[f"lds_by_estimator_{name}"] = means
                    out[f"validation_by_estimator_{name}"] = valid
            if preds:
                boot = bootstrap_lds(list(preds.values()), y, seed)
                for name, samples in zip(preds, boot):
                    out[f"ci_{name}"] = interval(samples)
                if len(preds) == 2:  # unlearn - retrain, paired over the same held-out resamples
                    out["diff_ci"], out["p_value"] = paired_test(boot[0], boot[1])
                    out["n_boot"] = BOOTSTRAP
                    if a == accountings[0]:  # (a declared family's candidate, budget:B, and its predictions:
                        out["diff_boot"] = boot[0] - boot[1]  # evaluate takes them out)
                        out["preds"] = preds
        rows.append(row)
    return rows


def matching_compute(run, fits, behavior, target, costs, accounting, seed):
    """The compute at which unlearning's LDS curve (mean over draws of n unlearned models, n = 4, 8, ... all) reaches
    `target`'s (the strongest retraining comparator: its name, predictions (D, K), compute and LDS): one statistic,
    stats.crossing (the curve's monotone fit, the crossing interpolated between model counts; inf where the fit never
    reaches it), for the point and for every resample of the held-out subsets, which give its 95% interval."""
    name, target_pred, target_compute, target_lds = target
    y, size = run.pools["lds"].y[behavior], len(run.pools["unlearn"].rows)
    ns = sorted({n for n in (4, 8, 16, 32, 64, 128, 256, 512) if n < size} | {size})
    preds = [fits.drawn_predictions("unlearn", behavior, n)[0] for n in ns]
    boot = bootstrap_lds(preds + [target_pred], y, seed)
    units = np.array([unlearning_units(costs, n, accounting) for n in ns])
    means = [mean_lds(p, y) for p in preds]
    per_resample = [crossing(units, boot[:-1, i], boot[-1, i]) for i in range(boot.shape[1])]
    return dict(target=name, target_lds=target_lds, target_compute=target_compute,
                curve=[dict(n=n, compute=float(u), lds=m) for n, u, m in zip(ns, units, means)],
                compute=crossing(units, means, mean_lds(target_pred, y)),
                ci=tuple(float(np.quantile(per_resample, q, method=m))
                         for q, m in ((0.025, "lower"), (0.975, "higher"))),
                reached_share=float(np.isfinite(per_resample).mean()))


def ceiling(run, behavior, seed):
    """The LDS a perfect predictor could reach against this run's ground truth, from the held-out subsets retrained
    with one more seed (pool lds_ceiling): r = Spearman between two single-seed ground truths of the same subsets;
    the ground truth averages m seeds, whose reliability is m r / (1 + (m - 1) r) (Spearman-Brown), and a perfect
    predictor correlates with it at the square root of that. 95% interval by resampling the subsets. None without
    those retrainings."""
    extra = run.pools.get("lds_ceiling")
    if extra is None:
        return None
    held = run.pools["lds"]
    first = values_by_row(held.beh, behavior, seed=0)  # {row: the seed-0 model's behaviour}
    rows = [r for r in extra.rows if r in first]
    a, b = np.array([first[r] for r in rows]), extra.y[behavior][np.isin(extra.rows, rows)]
    m = float(np.mean(np.bincount(held.beh["index"].astype(int))[held.rows]))  # seeds averaged per held-out subset

    def from_r(r):
        r = np.asarray(r, np.float64)
        return np.sqrt(np.clip(m * r / (1 + (m - 1) * r), 0, 1))
    boot = bootstrap_lds([a], b, seed)[0]
    r = spearman(a, b)
    return dict(pairs=len(rows), seeds=m, r=r, r_ci=interval(boot), ceiling=float(from_r(r)),
                ci=interval(from_r(boot)))


# ----------------------------------------------------------------------------------------------
# Every method side by side: unlearning's estimator, retraining's at equal compute and with every model, and
# each baseline, with its compute, its LDS on every behaviour and its detection of the known-bad units

def methods_compared(run, fits, costs, accounting):
    """Every method of the comparison: name, kind, models (and pool), how (a baseline's definition), its scores
    {behaviour: scores} (the fit on the pool's models, for detection), and its compute in units of one retraining's
    training: `compute` counts training (and a baseline's own passes of the full model), `compute_all` each model's
    behaviour too (sampling, loss)."""
    n_u, n_r = len(run.pools["unlearn"].rows), len(run.pools["retrain"].rows)
    unit, per_unlearned, fixed = costs[accounting]
    with_behavior = costs.get("with_behavior", costs[accounting])
    equal = models_for_budget(unlearning_units(costs, n_u, accounting), 1.0, 1.0, 0.0, n_r)

    cost, behavior_cost = ("macs", "behavior_macs") if accounting == "compute" else ("seconds", "behavior_seconds")

    def pool_method(key, name, kind, pool, n, estimator=None):
        own, total = (n * per_unlearned + fixed, n * with_behavior[1] + fixed) if pool == "unlearn" else \
            (n * unit, n * with_behavior[0])
        behaviors = run.behaviors
        if estimator is not None and ESTIMATORS[estimator].prior:  # the prior's own compute is the row's too
            b = run.baselines[fits.prior]
            own, total = own + float(b[cost]), total + float(b[cost]) + float(b.get(behavior_cost, 0.0))
            behaviors = [k for k in behaviors if prior_scores(run, fits.prior, k) is not None]
        # an estimator that fits some of the (unlearned) pool's models is charged those (the pruning stays whole)
        used = len(ESTIMATORS[estimator].subset(n)) if estimator and ESTIMATORS[estimator].subset else n
        own, total = own - (n - used) * per_unlearned, total - (n - used) * with_behavior[1]
        row = dict(key=key, name=name, kind=kind, models=n, pool=pool, compute=own / unit, compute_all=total / unit,
                   how="", scores={b: fits(pool, b, n, estimator)[0] for b in behaviors}, models_fitted=used)
        return row if estimator is None else dict(row, estimator_of_row=estimator)
    methods = [pool_method("unlearning", "sparsified unlearning", "method", "unlearn", n_u)]
    for m in fits.fitters:  # --also: another estimator of the same unlearned models, a row of its own
        if m not in choices_of(fits):
            title = f"{m} toward {fits.prior}" if ESTIMATORS[m].prior else ESTIMATORS[m].title
            methods.append(pool_method(m, f"sparsified unlearning, {title}", "method", "unlearn", n_u, m))
    if equal >= 2:
        methods.append(pool_method("retraining", "retraining, equal compute", "retraining", "retrain", equal))
    if n_r != equal:
        methods.append(pool_method("retraining-all", f"retraining, all {n_r} models", "retraining", "retrain", n_r))
    for name, b in run.baselines.items():
        keys = json.loads(str(b["behaviors"]))
        own, extra = float(b[cost]), float(b.get(behavior_cost, 0.0))
        methods.append(dict(key=name, name=name, kind="baseline", models=0, compute=own / unit, compute_all=(own + extra) / unit,
                            how=str(b["how"]), linearises=str(b.get("linearises", "")),
                            scores={k: b["scores_by_behavior"][keys.index(k)] for k in run.behaviors if k in keys}))
    return methods


def comparison(run, fits, costs, accounting, seed):
    """The report's first table: each method's compute, LDS [95%] on every behaviour with its paired difference
    from unlearning's, and its detection AUC of the known-bad units (overall and per fault kind, with an exact
    permutation p). A method made of a pool's models scores the mean LDS over D draws of its models (retraining: the
    estimator that validates best on its own pool), and every interval and test is of that mean, over resamples of
    the held-out subsets. Returns (methods, {key: (unlearning's LDS minus that method's on the headline, its paired
    resamples)}) for every method but unlearning, and {"A/B": A's minus B's} for any two: the declared family's
    candidates."""
    methods = methods_compared(run, fits, costs, accounting)
    held = run.pools["lds"]
    diffs = {}
    for behavior in run.behaviors:
        have = [m for m in methods if behavior in m["scores"]]  # unlearning first: it scores every behaviour
        preds, points = [], []
        for m in have:
            if "pool" in m:
                choices = [m["estimator_of_row"]] if "estimator_of_row" in m else choices_of(fits) \
                    if m["pool"] == "retrain" and behavior == run.headline else [fits.method]
                draws = fits.draws if behavior == run.headline else min(fits.draws, fits.draws_other)
                best, drawn, means, _, _ = chosen_drawn(fits, m["pool"], behavior, m["models"], choices, draws,
                                                        held.y[behavior])
                m.setdefault("estimator", {})[behavior] = best
                preds.append(drawn)
                points.append(means[best])
            else:
                preds.append(held.X @ m["scores"][behavior])
                points.append(spearman(preds[-1], held.y[behavior]))
        boot = bootstrap_lds(preds, held.y[behavior], seed)
        if behavior == run.headline:
            index = {m["key"]: j for j, m in enumerate(have)}
            diffs = {k: (points[0] - points[j], boot[0] - boot[j]) for k, j in index.items() if j > 0}
            diffs.update({f"{a}/{b}": (points[index[a]] - points[index[b]], boot[index[a]] - boot[index[b]])
                          for a in index for b in index if a != b})  # A/B: A minus B, any two rows
        for j, m in enumerate(have):
            entry = dict(lds=points[j], ci=interval(boot[j]), n_boot=BOOTSTRAP)
            m.setdefault("preds", {})[behavior] = preds[j]  # (strongest_retraining; evaluate drops them)
            if j > 0:
                entry["diff_ci"], entry["p_value"] = paired_test(boot[j], boot[0])
            m.setdefault("lds", {})[behavior] = entry
    for m in methods:  # SurrogateSHAP's own quadratic predictions beside the common additive column
        if m.get("estimator_of_row") and run.headline in m["scores"]:
            m["predictions_lds"] = own_predictions(run, fits, m, seed)
    direction = run.directions[run.headline]
    for m in methods:
        scores = m.pop("scores")
        if run.bad is not None and len(run.bad) and direction and run.headline in scores:
            m.update(detection(harm(scores[run.headline], direction), run, seed))
    return methods, diffs


def own_predictions(run, fits, m, seed):
    """{prediction: {lds, ci}} of each of fit_datamodel.PREDICTIONS the row's fit on all its models makes (the quadratic
    ones where it has interactions: SurrogateSHAP's), on the headline; {} where it has the additive one only. Every
    row's LDS in the comparison is additive (intercept + sum of its scores), so that they compare alike."""
    held = run.pools["lds"]
    scores, intercept, info = fits(m["pool"], run.headline, m["models"], m["estimator_of_row"])
    if "interactions" not in info:
        return {}
    preds = [predict(held.X, scores, intercept, info, how) for how in PREDICTIONS]
    boot = bootstrap_lds(preds, held.y[run.headline], seed)
    return {how: dict(lds=spearman(p, held.y[run.headline]), ci=interval(b))
            for how, p, b in zip(PREDICTIONS, preds, boot)}


def strongest_retraining(methods, behavior):
    """(name, predictions (D, K), compute in retrainings, LDS) of the retraining-based comparator with the highest LDS
    on `behavior`: leave-one-out where the run has it and it leads, else retraining with its models."""
    candidates = [m for m in methods if (m["kind"] == "retraining" or m["name"] == "loo") and behavior in m["lds"]]
    if not candidates:
        return None
    best = max(candidates, key=lambda m: m["lds"][behavior]["lds"])
    return best["name"], np.atleast_2d(best["preds"][behavior]), best["compute"], best["lds"][behavior]["lds"]


def detection(ranking, run, seed=0):
    """AUC of a harm ranking for the known-bad units, overall and for each fault kind against the clean units, and
    the rank (1 = most harmful) of each kind's best-ranked unit."""
    clean = np.setdiff1d(np.arange(len(ranking)), run.bad)
    out = dict(auc=detection_auc(ranking, run.bad), auc_p=auc_permutation_p(ranking, run.bad), auc_by_fault={},
               rank_by_fault={})
    rank = np.empty(len(ranking), dtype=int)
    rank[largest_first(ranking, seed)] = np.arange(1, len(ranking) + 1)  # ties in a seeded random order
    for kind, units in run.bad_kinds.items():
        both = np.concatenate([units, clean])
        out["auc_by_fault"][kind] = detection_auc(ranking[both], np.arange(len(units)))
        out["rank_by_fault"][kind] = int(rank[units].min())
    return out


# ----------------------------------------------------------------------------------------------
# The evaluation: numbers only (report.py renders them)

def evaluate(run, args):
    """results (a dict, results.json): the budget curves of every behaviour, the comparison of every method, the
    detection of the known-bad units, Table 1; plus what the figures need (the headline's attributions)."""
    fits = Fits(run, estimators(run, args.method, args.seed, args.also, args.prior), args.draws, args.seed,
                args.draws_other, args.prior)
    costs = costs_of(run)
    accountings = [a for a in ACCOUNTINGS if a in costs]
    n_retrain = len(run.pools["retrain"].rows)
    budgets = args.budgets or sorted({b for b in (2, 4, 8, 16, 32, 64) if b <= n_retrain} | {n_retrain})
    results = dict(budgets=budgets, costs={a: dict(zip(("retrain", "unlearn", "fixed"), c)) for a, c in costs.items()},
                   accounting=accountings[0], behaviors={}, method=args.method, headline=run.headline,
                   unlearning=run.unlearning, unit=run.unit, draws=args.draws, draws_other=args.draws_other,
                   bootstrap=BOOTSTRAP, estimators=choices_of(fits),
                   unit_seconds=costs["time"][0], prune_seconds=costs["time"][2])  # (old names, for readers)
    for behavior in run.behaviors:
        headline = behavior == run.headline
        results["behaviors"][behavior] = behavior_entry(run, fits, behavior, budgets, costs,
                                                        accountings if headline else accountings[:1], args.seed,
                                                        choices_of(fits) if headline else None,
                                                        args.draws if headline else min(args.draws, args.draws_other))
    results["comparison"], diffs = comparison(run, fits, costs, accountings[0], args.seed)
    predictions = {f"method:{m['key']}": m["preds"][run.headline] for m in results["comparison"]
                   if run.headline in m.get("preds", {})}
    for row in results["behaviors"][run.headline]["curve"]:
        if "diff_boot" in row:
            diffs[f"budget:{row['budget']:g}"] = (row["lds_unlearn"] - row["lds_retrain"], row["diff_boot"])
            predictions.update({f"budget:{row['budget']:g}:{name}": p for name, p in row["preds"].items()})
    fitted = [row["budget"] for row in results["behaviors"][run.headline]["curve"] if "diff_boot" in row]
    resolved = {k: resolved_comparison(k, diffs, fitted) for k in args.compare}
    for b in results["behaviors"].values():
        for row in b["curve"]:
            row.pop("diff_boot", None)
            row.pop("preds", None)
    family = declared_family({k: diffs[r] for k, r in resolved.items() if r in diffs}, args.alpha, args.margin)
    results["declared"] = {k: family.get(k) for k in args.compare}  # None: declared, but this run has no such method
    results["declaration"] = dict(compare=args.compare, margin=args.margin, alpha=args.alpha,
                                  resolved={k: r for k, r in resolved.items() if r != k})
    target = strongest_retraining(results["comparison"], run.headline)  # (the comparator with the highest LDS: what
    # the matching compute is read against, a description of the curve, not a test)
    if target is not None:
        results["matching"] = matching_compute(run, fits, run.headline, target, costs, accountings[0], args.seed)
    for m in results["comparison"]:
        m.pop("preds", None)
    figures = headline_figures(run, fits, results)
    if run.bad is not None and len(run.bad) and run.directions[run.headline]:
        results["auc"] = detection_aucs(run, fits, figures["attributions"], args)
    results["table1"] = table1(run, costs)
    results["verdicts"] = unit_verdicts(run, fits, args.verdict_draws, args.seed)
    figures["predictions"] = dict(predictions, y=run.pools["lds"].y[run.headline], rows=run.pools["lds"].rows)
    return results, figures


def behavior_entry(run, fits, behavior, budgets, costs, accountings, seed, choices=None, draws=None):
    """One behaviour's budget curve (retraining: the best of `choices`, estimators, at each budget; `draws` draws of
    each budget's models), its LDS with every model of each pool (the fit on the pool as it is: the same on every
    rerun), the ceiling of its ground truth where the run has one, and its detection AUC with every unlearned model."""
    held = run.pools["lds"]
    lds_all = {}
    for name in POOLS:
        scores, intercept, info = fits(name, behavior)
        lds_all[name] = dict(n=len(run.pools[name].rows), lds=lds(scores, intercept, held.X, held.y[behavior], info))
    entry = dict(curve=budget_curve(run, fits, behavior, budgets, costs, accountings, seed, choices, draws),
                 k_heldout=len(held.rows), lds_all=lds_all, better=run.directions[behavior],
                 ceiling=ceiling(run, behavior, seed))
    if run.bad is not None and len(run.bad) and entry["better"]:
        entry["auc_all"] = detection_auc(harm(fits("unlearn", behavior)[0], entry["better"]), run.bad)
    return entry


def headline_figures(run, fits, results):
    """What the figures show of the headline behaviour: each pool's attributions at the largest budget (the
    scatter of predicted vs actual), and the units ranked by unlearning's attributions from every model."""
    held, top = run.pools["lds"], results["behaviors"][run.headline]["curve"][-1]
    attributions, scatter = {}, {}
    for name in POOLS:
        n = top[f"n_{name}"]
        if n < 2:  # the largest budget buys too few models for a fit
            continue
        attributions[name] = fits(name, run.headline, n)[0]
        pred = fits.predict(name, run.headline, n)
        scatter[f"{name} (budget {top['budget']:g}, {n} models)"] = (pred, held.y[run.headline],
                                                                   spearman(pred, held.y[run.headline]))
    return dict(attributions=attributions, scatter=scatter, order=ranked(fits("unlearn", run.headline)[0], run))


VERDICT_ALPHA = 0.05  # the chance that any unit of a run is called harmful or helpful wrongly (Holm's family)
# The fewest unlearned models that give an interval: 10 (a subsample of 9 in 10 drops at least one), and twice the
# units (with fewer models than scores the estimator is underdetermined: its subsamples agree with each other, and
# the jackknife's intervals would be far too narrow; seen at 10 models of 40 contributors, every one "significant")
def verdict_min_models(units):
    return max(10, 2 * units)


def unit_verdicts(run, fits, draws, seed, alpha=VERDICT_ALPHA):
    """Each unit's headline score from every unlearned model, its standard error over `draws` subsamples of those
    models (stats.jackknife_inference: the estimator's own variability, over the models it was given), a 95% interval,
    the Holm-adjusted p of score = 0 over all units, and a verdict: harmful or helpful where that p <= alpha (so
    the chance of any wrong call in the run is at most alpha), undecided otherwise. Rows most harmful first."""
    pool, behavior = run.pools["unlearn"], run.headline
    scores = fits("unlearn", behavior)[0]  # the fit on every model, cached: the scores the report ranks
    if len(pool.rows) >= verdict_min_models(pool.X.shape[1]):
        _, se = jackknife_inference(lambda X, y: fits.fit("unlearn", behavior, X, y)[0], pool.X, pool.y[behavior],
                                    draws, [seed, 42], estimates=scores)
        p_holm = holm(two_sided_p(scores, se))
    else:  # too few models to see how the scores vary with them: no interval, no call
        se, p_holm = np.full(len(scores), np.nan), np.ones(len(scores))
    h = harm(scores, run.directions[behavior])
    verdict = (np.full(len(scores), "n/a") if h is None else  # a class share: neither way is harmful
               np.where(p_holm > alpha, "undecided", np.where(h > 0, "harmful", "helpful")))
    z, order = norm.ppf(0.975), ranked(scores, run)
    images = np.bincount(run.groups, minlength=len(scores)) if run.groups is not None else np.ones(len(scores), int)
    bad = np.isin(np.arange(len(scores)), run.bad) if run.bad is not None else np.zeros(len(scores), bool)
    return [dict(rank=r + 1, unit=int(u), score=float(scores[u]), lo=float(scores[u] - z * se[u]),
                 hi=float(scores[u] + z * se[u]), p_holm=float(p_holm[u]), verdict=str(verdict[u]),
                 images=int(images[u]), known_bad=bool(bad[u])) for r, u in enumerate(order)]


def write_verdicts(path, rows, unit, behavior):
    header = f"rank,{unit},score_{behavior},ci95_lo,ci95_hi,p_holm,verdict,images,known_bad\n"
    body = "".join(f"{v['rank']},{v['unit']},{v['score']:.6g},{v['lo']:.6g},{v['hi']:.6g},{v['p_holm']:.4g},"
                   f"{v['verdict']},{v['images']},{int(v['known_bad'])}\n" for v in rows)
    atomic_write(path, lambda f: f.write((header + body).encode()))


def ranked(scores, run):
    """Units from the most harmful to the most helpful for the headline (the largest score first where it has no
    better direction)."""
    ranking = harm(scores, run.directions[run.headline])
    return largest_first(ranking if ranking is not None else scores)


def detection_aucs(run, fits, attributions, args):
    """Detection AUC of the known-bad units: each pool at the largest budget, and every unlearned model with the
    run's estimator, Banzhaf values and (when the run's estimator is another) the datamodel."""
    direction, pool = run.directions[run.headline], run.pools["unlearn"]
    aucs = {name: detection_auc(harm(s, direction), run.bad) for name, s in attributions.items()}
    aucs["unlearn_all"] = detection_auc(harm(fits("unlearn", run.headline)[0], direction), run.bad)
    banzhaf = attribute(pool.X, pool.y[run.headline], "banzhaf")[0]
    aucs["unlearn_all_banzhaf"] = detection_auc(harm(banzhaf, direction), run.bad)
    if args.method != "datamodel":  # the other estimators on the same unlearned models
        datamodel = attribute(pool.X, pool.y[run.headline], "datamodel", seed=args.seed)[0]
        aucs["unlearn_all_datamodel"] = detection_auc(harm(datamodel, direction), run.bad)
    return aucs


def table1(run, costs):
    """The paper's Table 1 at this run's size: model quality, FID2, the recipe, and each model's cost."""
    u, r, full, pruned = run.pools["unlearn"], run.pools["retrain"], run.ends["full"], run.ends["pruned"]
    fid2, fid_seeds = run.ends["fid2"], run.ends["fid_seeds"]
    scalar = lambda beh, key: float(beh[key]) if beh is not None and key in beh and np.isfinite(beh[key]) else None  # noqa: E731
    first = lambda beh, key: float(beh[key][0]) if beh is not None and key in beh else None  # one model's file  # noqa: E731
    t = dict(fid_full=first(full, "fid"), is_full=first(full, "is"),
             fid_floor=scalar(full, "floor_fid"), is_real=scalar(full, "real_is"),
             ddim_full=int(full["ddim_steps"]) if full is not None and "ddim_steps" in full else None,
             fid_pruned=first(pruned, "fid"),
             fid2_unlearn_vs_retrain=(float(fid2["fid"].mean()), float(fid2["fid"].std())) if fid2 is not None else None,
             fid_retrain_vs_retrain_other_seed=(float(fid_seeds["fid"].mean()), float(fid_seeds["fid"].std()))
             if fid_seeds is not None else None,
             seconds_retrain=float(r.train_seconds.mean()), seconds_unlearn=float(u.train_seconds.mean()),
             seconds_prune_once=costs["time"][2],
             seconds_behavior_retrain=float((r.sampling_seconds + r.loss_seconds).mean()),
             seconds_behavior_unlearn=float((u.sampling_seconds + u.loss_seconds).mean()),
             seconds_sampling=float(np.concatenate([r.sampling_seconds, u.sampling_seconds]).mean()),
             seconds_loss=float(np.concatenate([r.loss_seconds, u.loss_seconds]).mean()))
    quality = run.ends["quality"]  # the full model once more with a better sampler (QUALITY_DDIM)
    if first(quality, "fid") is not None:
        t.update(fid_quality=first(quality, "fid"), is_quality=first(quality, "is"), ddim_quality=int(quality["ddim_steps"]))
    # the model-vs-floor ratio at matched sizes (features.matched_floor): m samples and m real images, each against
    # the same half of the reference set
    for name, beh in (("full", full), ("quality", quality)):
        if first(beh, "fid_matched") is not None:
            t.update({f"fid_matched_{name}": first(beh, "fid_matched"), "floor_matched": scalar(beh, "floor_matched"),
                      "matched_m": int(beh["matched_m"]), "matched_n_b": int(beh["matched_n_b"])})
    t["speedup"] = t["seconds_retrain"] / t["seconds_unlearn"]
    if "compute" in costs:
        t["macs_retrain"], t["macs_unlearn"], t["macs_prune_once"] = costs["compute"]
        t["compute_ratio"] = t["macs_retrain"] / t["macs_unlearn"]
    if t["fid2_unlearn_vs_retrain"] and t["fid_retrain_vs_retrain_other_seed"]:
        t["fid2_ratio"] = t["fid2_unlearn_vs_retrain"][0] / t["fid_retrain_vs_retrain_other_seed"][0]
    held_seeds = np.bincount(run.pools["lds"].beh["index"].astype(int))
    t["ground_truth_seeds"] = [int(held_seeds[held_seeds > 0].min()), int(held_seeds.max())]
    t["recipes"] = run.recipes
    return t


def evaluate_attribution_only(run, args):
    """A run without held-out retrainings (K = 0; FULL= a model one already has): the attributions from every
    unlearned model, the most harmful and helpful units, detection of the known-bad ones; no LDS."""
    fits = Fits(run, {args.method: estimator(run, args.method, args.seed)})
    pool, pruned = run.pools["unlearn"], run.ends["pruned"]
    results = dict(method=args.method, headline=run.headline, attribution_only=True, behaviors={}, unit=run.unit,
                   unlearning=run.unlearning)
    scores_of = {}
    for behavior in run.behaviors:
        scores_of[behavior], _, info = fits("unlearn", behavior)
        entry = dict(better=run.directions[behavior], n=len(pool.rows), spread=float(np.std(pool.y[behavior], ddof=1)),
                     model=info["model"])
        if run.bad is not None and len(run.bad) and entry["better"]:
            entry["auc_all"] = detection_auc(harm(scores_of[behavior], entry["better"]), run.bad)
        results["behaviors"][behavior] = entry
    direction = run.directions[run.headline]
    if run.bad is not None and len(run.bad) and direction:
        banzhaf = attribute(pool.X, pool.y[run.headline], "banzhaf")[0]
        results["auc"] = dict(unlearn_all=results["behaviors"][run.headline]["auc_all"],
                              unlearn_all_banzhaf=detection_auc(harm(banzhaf, direction), run.bad))
    full = run.ends["full"]
    results["table1"] = dict(
        fid_full=float(full["fid"][0]) if full is not None and "fid" in full else None,
        fid_pruned=float(pruned["fid"][0]) if pruned is not None and "fid" in pruned else None,
        seconds_unlearn=float(pool.train_seconds.mean()), macs_unlearn=float(pool.train_macs.mean()),
        seconds_prune_once=float(pruned["train_seconds"][0]) if pruned is not None else None,
        seconds_behavior_unlearn=float((pool.sampling_seconds + pool.loss_seconds).mean()),
        seconds_sampling=float(pool.sampling_seconds.mean()), seconds_loss=float(pool.loss_seconds.mean()))
    results["verdicts"] = unit_verdicts(run, fits, args.verdict_draws, args.seed)
    return results, dict(order=ranked(scores_of[run.headline], run), scores_of=scores_of)


def summary(r):
    """The one line main prints: the headline's LDS at the largest budget, or the attribution-only summary."""
    if r.get("attribution_only"):
        auc = r.get("auc", {}).get("unlearn_all")
        return (f"attribution only (no LDS: K = 0): {r['behaviors'][r['headline']]['n']} unlearned models, "
                f"{r['headline']}" + (f"; {r['unit']} detection AUC {auc:.3f}" if auc is not None else ""))
    row = r["behaviors"][r["headline"]]["curve"][-1]
    parts = [f"LDS {r['headline']} at budget {row['budget']:g}: unlearning {report.fmt_lds(row, 'unlearn')} vs "
             f"retraining {report.fmt_lds(row, 'retrain')}"
             + (f" ({report.p_text(row['p_value'], row.get('n_boot', 2000))})" if "p_value" in row else "")]
    if "auc" in r:
        parts.append(f"{'bad-contributor' if r.get('unit') == 'contributor' else 'corrupted-image'} AUC "
                     f"{r['auc']['unlearn_all']:.3f}")
    baselines = [c for c in r.get("comparison", []) if c["kind"] == "baseline" and r["headline"] in c["lds"]]
    if baselines:
        best = max(baselines, key=lambda c: c["lds"][r["headline"]]["lds"])
        parts.append(f"best baseline {best['name']} LDS {best['lds'][r['headline']]['lds']:.3f}")
    return "; ".join(parts) + f" ({len(r['behaviors'])} behaviours in the report)"


def check(args):
    """What main would refuse once it reads the run (tools/one_process.py --check): the headline is a behaviour, and
    every declared comparison names a kind of method (whether this run has it shows in its report)."""
    runfolder.check_behavior_key(args.headline, "--headline")
    for key in args.compare:
        if not comparison_key(key):
            raise DataError(f"--compare: unknown comparison {key} (retraining, retraining-all, budget:B, loo, guda, "
                            f"proxy, a baseline such as trak-ref, or an estimator such as surrogate-shap)")


def comparison_key(key):
    """Whether `key` can name a method of the comparison (methods_compared's keys). (baselines.py imports torch:
    only the settings' check asks, never the evaluation.)"""
    from baselines import BASELINES
    if key.startswith("budget:"):
        try:
            return float(key[7:]) > 0
        except ValueError:
            return False
    if "/" in key:  # A/B: method A minus method B
        a, _, b = key.partition("/")
        return all(k == "unlearning" or (comparison_key(k) and "/" not in k) for k in (a, b)) and a != b
    base = key[:-4] if key.endswith("-ref") else key
    return key in ("retraining", "retraining-all") or base in BASELINES or key in ESTIMATORS


def main(args):
    if args.run:
        run_folder = load_run(args)
        if run_folder.attribution_only:
            results, figures = evaluate_attribution_only(run_folder, args)
        else:
            results, figures = evaluate(run_folder, args)
        atomic_write(runfolder.results(args.run), lambda f: f.write(json.dumps(results, indent=1).encode()))
        write_verdicts(runfolder.verdicts(args.run), results["verdicts"], run_folder.unit, run_folder.headline)
        if "predictions" in figures:
            save_npz(runfolder.predictions(args.run), **{k: np.asarray(v) for k, v in figures["predictions"].items()})
        report.write(run_folder, results, figures)
        print(summary(results))
        print(f"wrote {runfolder.report(args.run)} and {runfolder.figures(args.run)}")
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
    info = {k: att[k] for k in ("interactions",) if k in att}
    for how in ("additive", "quadratic") if info else ("additive",):  # SurrogateSHAP's quadratic prediction too
        pred = predict(X, att["scores"], float(att["intercept"]), info, how)
        lo, hi = interval(bootstrap_lds([pred], y, args.seed)[0])
        print(f"LDS {spearman(pred, y):.3f} [95% {lo:.3f}, {hi:.3f}] over {len(y)} held-out subsets ({how} prediction)")


if __name__ == "__main__":
    run(main, parse_args())

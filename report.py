"""The report of a run: report.md and figures/, rendered from eval_lds.evaluate's numbers (no statistics here,
no torch). eval_lds.py calls write(); the notebook can call the plotting functions on any numbers.

Sections of report.md, in order: how every method compares (unlearning's estimator, retraining's at equal compute,
the field's baselines: compute, LDS, detection); Table 1 (model quality, FID2, recipe, cost per model); every
behaviour; LDS vs budget per behaviour; the most harmful and most helpful training units; finding the bad ones.
"""
import json
import os

import numpy as np

import runfolder
from data import atomic_write, save_grid
from fit_datamodel import ESTIMATORS

ACCOUNTING_WORDS = {"compute": "training compute (MACs: 3 x forward MACs per image x images seen; the same on any day)",
                    "time": "measured wall time of training"}


def write(run, results, figures):
    """report.md and the figures of a run (eval_lds.Run) from its evaluation."""
    fig_dir = runfolder.figures(run.dir)
    os.makedirs(fig_dir, exist_ok=True)
    order = figures["order"]
    if not results.get("attribution_only"):
        plot_curves({b: e["curve"] for b, e in results["behaviors"].items()}, os.path.join(fig_dir, "lds_vs_budget.png"))
        plot_scatter(figures["scatter"], os.path.join(fig_dir, "predicted_vs_actual.png"))
    save_grid(run.real, os.path.join(fig_dir, "real.png"), nrow=8)
    save_grid(examples(run.ds.images, order[:16], run.groups), os.path.join(fig_dir, "most_harmful.png"), nrow=8)
    save_grid(examples(run.ds.images, order[::-1][:16], run.groups), os.path.join(fig_dir, "most_helpful.png"), nrow=8)
    if results.get("attribution_only"):
        atomic_write(runfolder.attributions(run.dir, "all_behaviors"),
                     lambda f: np.savez(f, **{k.replace(":", "_"): v for k, v in figures["scores_of"].items()}))
        text = render_attribution_only(results, run, order)
    else:
        text = render(results, run, order)
    atomic_write(runfolder.report(run.dir), lambda f: f.write(text.encode()))


# ----------------------------------------------------------------------------------------------
# Formatting

def title(method):
    """The report's name of an estimator (fit_datamodel.ESTIMATORS); the datamodel's where a run names none."""
    return ESTIMATORS[method or "datamodel"].title


def link(name):
    """A figure's link in report.md (which lies in the run folder)."""
    return runfolder.relative(".", runfolder.figures(".", name))


def grid_of(run_dir):
    """The sample grid train_ddpm.py writes beside the full model."""
    return runfolder.grid(run_dir, "full")

def fmt_lds(row, name):
    """A budget row's LDS of one pool (the mean over its draws) with its interval."""
    if f"lds_{name}" not in row:
        return "n/a"
    lo, hi = row[f"ci_{name}"]
    zero = " (all-zero fit)" if row.get(f"all_zero_{name}") else ""
    return f"{row[f'lds_{name}']:.3f} [{lo:.2f}, {hi:.2f}]{zero}"


def fmt_p(p, n_boot=2000):
    """A bootstrap p, counted (c + 1) / (B + 1) (stats.bootstrap_p): never 0, its smallest value 2 / (B + 1)."""
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def p_text(p, n_boot=2000):
    """'p = 0.011'."""
    return f"p = {fmt_p(p, n_boot)}"


def fmt_diff(row):
    if "diff_ci" not in row:
        return "n/a", "n/a"
    return (f"{row['lds_unlearn'] - row['lds_retrain']:+.3f} [{row['diff_ci'][0]:+.2f}, {row['diff_ci'][1]:+.2f}]",
            fmt_p(row["p_value"], row.get("n_boot", 2000)))


def fmt_models(row, name):
    """How many models a budget buys of a pool, how many draws of them, and what that means for the fit."""
    n = row[f"n_{name}"]
    if f"draws_{name}" not in row:
        return str(n)
    text = f"{n} (all: one fit" if row.get(f"whole_pool_{name}") else f"{n} ({row[f'draws_{name}']} draws"
    if name == "retrain" and "estimator_retrain" in row:
        text += f"; {title(row['estimator_retrain'])}"
    if row.get(f"underdetermined_{name}"):
        text += "; fewer models than units: underdetermined"
    return text + ")"


def ceiling_text(c):
    """The ground truth's ceiling, or '' where the run has no second seed for it."""
    if not c:
        return ""
    return (f"Ceiling of this ground truth (CEILING={c['pairs']}: held-out subsets retrained with one more seed): two "
            f"single-seed ground truths agree at Spearman {c['r']:.2f} [{c['r_ci'][0]:.2f}, {c['r_ci'][1]:.2f}], so a "
            f"perfect predictor would reach LDS **{c['ceiling']:.2f} [{c['ci'][0]:.2f}, {c['ci'][1]:.2f}]** against "
            f"the mean of {c['seeds']:g} seed(s) used here.")


def gmacs(v):
    return f"{v / 1e9:,.1f} GMACs" if v >= 1e8 else f"{v / 1e6:,.2f} MMACs"


def num(v):
    return f"{v:.2f}" if v is not None else "n/a"


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


# ----------------------------------------------------------------------------------------------
# report.md

def made_by(made_on):
    """Where a bank's rows were retrained, summarised: "on MACHINE (N commits)" per machine and thread count (its
    bank.json lists each commit)."""
    machines = {}
    for entry in made_on:
        commit, _, machine = entry.partition(" on ")
        machines.setdefault(machine, set()).add(commit)
    return "; ".join(f"on {m} at {len(c)} commit{'s' if len(c) > 1 else ''}" for m, c in sorted(machines.items())) + \
        " (each in its bank.json)"


def data_line(run):
    """What the models were trained on, and whether this run planted faults in it (only where a setting asked)."""
    ds, n = run.ds, len(run.ds)
    planted = {k: len(v) for k, v in ds.faults.items() if k != "named"}
    named = len(ds.faults.get("named", []))
    said = (f"**planted faults**: {', '.join(f'{k} ({c} images)' for k, c in planted.items())}, "
            f"{sum(planted.values()) / n:.0%} of the images, altered by this run (CORRUPT, FAULT)" if planted else
            "**used as given: no fault planted**")
    line = (f"Data: `{ds.name}`, {n} images; {said}" + (f"; {named} images the data name as bad (its `corrupted` array)"
                                                        if named else "") + ".")
    bank = os.path.join(run.dir, "bank.json")
    if os.path.exists(bank):  # the retrained models came from a bank (bank.py), made once and committed
        with open(bank) as f:
            b = json.load(f)
        line += (f" Ground truth and retraining pool: `bank/{b['bank']}` ({b['held_out']} held-out subsets, "
                 f"{b['ceiling']} with one more seed; a retraining pool of {b['retrain']}"
                 + (f"; leave-one-out at {len(b['loo_seeds'])} seeds" if b.get("loo_seeds") else "")
                 + f"), retrained {made_by(b['made_on'])}.")
    return line


def verdicts_section(r, run, top=10):
    """The answer a user acts on: the units called harmful or helpful at the run's error rate, then the ranking's
    ends; the whole table in verdicts.csv."""
    rows, unit, headline = r["verdicts"], r["unit"], r["headline"]
    called = {v: [x for x in rows if x["verdict"] == v] for v in ("harmful", "helpful")}
    lines = [f"## Which {unit}s hurt or help {headline}", "",
             f"Each {unit}'s score from every unlearned model, with a 95% interval from subsamples of those models "
             f"(the estimator's own variability: a delete-d jackknife), and a verdict: **harmful** or **helpful** where the Holm-adjusted p "
             f"of score = 0 is at most 0.05 over all {len(rows)} {unit}s (the chance of any wrong call in this run is "
             f"at most 5%), **undecided** otherwise. The whole table: `verdicts.csv` beside this report.", "",
             ", ".join(f"{len(called[v])} {v}" for v in called) + f", {len(rows) - sum(map(len, called.values()))} "
             f"undecided." + ("" if np.isfinite(rows[0]["lo"]) else
                              f" No interval and no call: an interval needs at least twice as many unlearned models "
                              f"as {unit}s (and 10), or the estimator is underdetermined and its intervals too narrow "
                              f"(M = 5 G is a good size)."), "",
             f"| rank | {unit} | score | 95% interval | Holm p | verdict |" + (" known bad |" if run.bad is not None else ""),
             "| --- | --- | --- | --- | --- | --- |" + (" --- |" if run.bad is not None else "")]
    shown = rows if len(rows) <= 2 * top else rows[:top] + rows[-top:]
    for v in shown:
        interval = f"[{v['lo']:.3g}, {v['hi']:.3g}]" if np.isfinite(v["lo"]) else "-"
        lines.append(f"| {v['rank']} | {v['unit']} | {v['score']:.3g} | {interval} | "
                     f"{v['p_holm']:.3g} | {v['verdict']} |" + (f" {'yes' if v['known_bad'] else ''} |"
                                                              if run.bad is not None else ""))
    return lines + ([f"({len(rows) - 2 * top} {unit}s between the {top} most harmful and the {top} most helpful: "
                     f"verdicts.csv)"] if len(rows) > 2 * top else []) + [""]


def render(r, run, order):
    hb, method = r["behaviors"][r["headline"]], r["unlearning"]
    lines = [f"# Data attribution report: {os.path.basename(os.path.abspath(run.dir))}", "", data_line(run), ""]
    lines += verdicts_section(r, run)
    lines += [f"Headline behaviour: **{r['headline']}** ({hb['better'] or 'no better direction'} is better); the report's "
             f"first tables and figures, and the images below, are for it. Every behaviour the run computed has its LDS "
             f"vs budget further down. Unlearning method: **{method['method']}** ({method['settings'] or 'settings n/a'}).",
             "", "Sign convention: a positive score means including that image raises the behaviour. For FID (lower is "
             "better) a **positive score means including that training image raises FID (harmful)**; where higher is "
             "better (precision, recall, density, coverage, IS, entropy) a positive score is helpful. For a class share, "
             "a positive score means the image makes that class more frequent among generated images.", ""]
    lines += comparison_section(r, run) + table1_section(r, run) + behaviors_section(r)
    for behavior, b in r["behaviors"].items():
        lines += budget_section(behavior, b)
    lines += [f"![LDS vs budget]({link('lds_vs_budget.png')})", "",
              f"![predicted vs actual]({link('predicted_vs_actual.png')})",
              ""] + examples_section(r, hb)
    if "auc" in r:
        lines += detection_section(r, run, order)
    return "\n".join(lines)


def comparison_section(r, run):
    """The first table: every method's compute, headline LDS with its difference from unlearning's, and detection;
    then every method's LDS on every behaviour."""
    headline, rows = r["headline"], r.get("comparison", [])
    if not rows:
        return []
    estimator = title(r.get("method"))
    lines = [f"## How the method compares ({headline})", "",
             f"Each method's attributions judged the same way: LDS against the held-out retrained models and the "
             f"detection AUC of the known-bad {run.unit}s. A method made of a pool's models (unlearning, retraining) "
             f"scores the mean LDS over {r.get('draws', 1)} draws of its models, or the one fit on the whole pool "
             f"(retraining with the estimator of {', '.join(r.get('estimators', [])) or 'the run'} that predicts "
             f"its own pool's left-out models best: never chosen on the held-out subsets); each 95% interval and each "
             f"difference from unlearning (paired over the same held-out resamples, two-sided p) is of that mean, "
             f"over {r.get('bootstrap', 2000)} resamples of the held-out subsets. The AUC's p is exact (every "
             f"labelling of as many {run.unit}s bad). "
             f"Compute in units of one retraining's training "
             f"({ACCOUNTING_WORDS.get(r['accounting'], r['accounting'])}): training (unlearning's includes pruning once; "
             f"a baseline's, its own passes of the full model), and with every model's behaviour (sampling, loss) too. "
             f"Unlearning and retraining use {estimator}; each baseline's sign is its definition's (below), never "
             f"fitted to the ground truth.", "",
             f"| method | models | compute (retrainings) | with behaviours | LDS {headline} [95%] | minus unlearning's "
             f"[95%], p | AUC | AUC per fault (rank of its best) |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    # a gradient method against the model's own samples is a linear model of the samples' loss (or, D-TRAK, of its
    # output function on them), which no model here is measured on: judged on the headline apart, without a test
    apart = [c for c in rows if c.get("linearises", "").startswith("samples-")]
    judged = [c for c in rows if c not in apart]
    for c in judged:
        e = c["lds"].get(headline)
        lds = f"{e['lds']:.3f} [{e['ci'][0]:.2f}, {e['ci'][1]:.2f}]" if e else "n/a"
        diff = (f"{e['lds'] - rows[0]['lds'][headline]['lds']:+.3f} [{e['diff_ci'][0]:+.2f}, {e['diff_ci'][1]:+.2f}], "
                f"{fmt_p(e['p_value'], e.get('n_boot', 2000))}" if e and "diff_ci" in e else "-")
        faults = ", ".join(f"{k} {v:.2f} (rank {c['rank_by_fault'][k]})" for k, v in c.get("auc_by_fault", {}).items())
        auc = f"{c['auc']:.3f} (p = {fmt_p(c['auc_p'])})" if "auc_p" in c else f"{c['auc']:.3f}" if "auc" in c else "n/a"
        lines.append(f"| {c['name']} | {c.get('models_fitted', c['models']) or '-'} | {c['compute']:.2f} | "
                     f"{c['compute_all']:.2f} | {lds} | "
                     f"{diff} | {auc} | {faults or '-'} |")
    lines += linearised_section(judged, headline, "loss" in r["behaviors"]) + apart_section(apart, headline)
    lines += own_predictions_section(judged, headline)
    lines += [""] + [t for t in (ceiling_text(r["behaviors"][headline].get("ceiling")), matching_text(r)) if t]
    lines += declared_section(r, rows)
    behaviors = list(r["behaviors"])
    lines += ["", "LDS of every method on every behaviour:", "",
              "| method | " + " | ".join(behaviors) + " |", "| --- " * (len(behaviors) + 1) + "|"]
    for c in rows:
        lines.append(f"| {c['name']} | " + " | ".join(f"{c['lds'][b]['lds']:.3f}" if b in c["lds"] else "-"
                                                      for b in behaviors) + " |")
    definitions = [f"- **{c['name']}**: {c['how']}" for c in rows if c.get("how")]
    return lines + [""] + (["The baselines, as defined (baselines.py):", ""] + definitions + [""] if definitions else [])


def linearised_section(rows, headline, have_loss):
    """Each gradient method against the reference images on what it linearises, the reference images' loss, beside
    its headline LDS."""
    mine = [c for c in rows if c.get("linearises") == "loss"]
    if not mine or headline == "loss":
        return []
    lines = ["", "Gradient methods against the reference images are linear models of those images' loss: their LDS on "
             "it, the behaviour they compute, beside unlearning's:", ""]
    if not have_loss:
        return lines[:-1] + ["(this run measured no loss: BEHAVIORS without `loss`)"]
    unlearning = rows[0]["lds"].get("loss")
    lines += ["| method | LDS on the loss [95%] | unlearning's LDS on the loss |", "| --- | --- | --- |"]
    ours = f"{unlearning['lds']:.3f}" if unlearning else "n/a"
    for c in mine:
        e = c["lds"].get("loss")
        lines.append(f"| {c['name']} | " + (f"{e['lds']:.3f} [{e['ci'][0]:.2f}, {e['ci'][1]:.2f}]" if e else "n/a")
                     + f" | {ours} |")
    return lines


def own_predictions_section(rows, headline):
    """SurrogateSHAP's rows under their own quadratic predictions (ours and its authors'), beside the additive one
    every row of the table is scored with."""
    mine = [c for c in rows if c.get("predictions_lds")]
    if not mine:
        return []
    from fit_datamodel import PREDICTIONS
    lines = ["", f"SurrogateSHAP also predicts a coalition's value from its pairwise interactions; the table above scores "
             f"every row by its additive prediction. Its own predictions, fitted on all its models (LDS {headline} "
             f"[95%]): " + "; ".join(f"*{how}*: {text}" for how, text in PREDICTIONS.items()) + ".", "",
             "| method | " + " | ".join(PREDICTIONS) + " |", "| --- " * (len(PREDICTIONS) + 1) + "|"]
    for c in mine:
        lines.append(f"| {c['name']} | " + " | ".join(
            f"{e['lds']:.3f} [{e['ci'][0]:.2f}, {e['ci'][1]:.2f}]" for e in c["predictions_lds"].values()) + " |")
    return lines


def apart_section(rows, headline):
    """The gradient methods against the model's own samples: what they compute (the samples' loss, or D-TRAK's
    output function on the samples) is measured on no model here, so their LDS on the headline is shown apart, with
    no test and no claim."""
    if not rows:
        return []
    lines = ["", f"Judged on a behaviour they do not compute: gradient methods against the model's own samples predict "
             f"the samples' loss (D-TRAK its output function on them), which no model of this run is measured on; "
             f"their LDS on {headline} is shown for reference only, without a test (the faults are in the samples, so "
             f"the contributors who caused them lower the samples' loss):", "",
             f"| method | compute (retrainings) | LDS {headline} [95%] | AUC |", "| --- | --- | --- | --- |"]
    for c in rows:
        e = c["lds"].get(headline)
        lds = f"{e['lds']:.3f} [{e['ci'][0]:.2f}, {e['ci'][1]:.2f}]" if e else "n/a"
        lines.append(f"| {c['name']} | {c['compute']:.2f} | {lds} | {c['auc']:.3f} |" if "auc" in c else
                     f"| {c['name']} | {c['compute']:.2f} | {lds} | n/a |")
    return lines


def declared_section(r, rows):
    """The declared comparisons (the preset's COMPARE, fixed before the run): each with its difference, interval,
    Holm-adjusted p of a difference, Holm-adjusted TOST p of equivalence within the margin, the smallest difference
    the design detects with 80% power, and the one word the tests allow."""
    declared, how = r.get("declared"), r.get("declaration")
    if not declared:
        return []
    names = {c["key"]: c["name"] for c in rows if "key" in c}
    lines = ["", f"**Declared comparisons** (before the run, the first the primary): unlearning's LDS on "
             f"{r['headline']} minus each method's (or row A's minus row B's, where one reads A *minus* B); Holm's "
             f"correction over the {len(declared)} at alpha {how['alpha']:g}, for a difference and for equivalence within +-{how['margin']:g} (TOST) apart. "
             f"*ahead* / *behind*: a difference shown; *level*: equivalence shown; *undecided*: neither. The minimum "
             f"detectable difference is what this design finds with 80% power.", "",
             "| unlearning minus (or A *minus* B) | difference [95%] | p (Holm) | TOST p (Holm) | minimum detectable | verdict |",
             "| --- | --- | --- | --- | --- | --- |"]
    names["unlearning"] = "sparsified unlearning"
    for key, to in how.get("resolved", {}).items():  # "retraining" where equal compute buys fewer than two
        names[key] = f"retraining at {to[7:]} retrainings (the least compute that buys a fit; unlearning's is less)"
    for j, (key, e) in enumerate(declared.items()):
        a, _, b = key.rpartition("/")  # A/B: row A minus row B; else unlearning minus the row
        name = (f"{names.get(a, a)} *minus* {names.get(b, b)}" if a else names.get(key, key)) + \
            (" (primary)" if j == 0 else "")
        if e is None:
            lines.append(f"| {name} | not in this run | | | | - |")
            continue
        lines.append(f"| {name} | {e['diff']:+.3f} [{e['ci'][0]:+.2f}, {e['ci'][1]:+.2f}] | {fmt_p(e['p'])} | "
                     f"{fmt_p(e['p_equivalence'])} | {e['mdd']:.2f} | **{e['verdict']}** |")
    return lines


def matching_text(r):
    """Where unlearning's LDS reaches the strongest retraining comparator's, in compute."""
    m = r.get("matching")
    if not m:
        return ""
    lo, hi = m["ci"]
    curve = ", ".join(f"{p['n']} models ({p['compute']:.2f}): {p['lds']:.3f}" for p in m["curve"])
    if np.isfinite(m["compute"]):
        verdict = (f"The monotone fit of unlearning's curve reaches it at **{m['compute']:.2f} retrainings** of "
                   f"compute (95% interval {lo:.2f} to {'not reached' if not np.isfinite(hi) else f'{hi:.2f}'}; "
                   f"reached in {m['reached_share']:.0%} of the resamples): {m['target_compute'] / m['compute']:.0f}x "
                   f"less.")
    else:
        verdict = (f"The monotone fit of unlearning's curve does **not** reach it with all its models (reached in "
                   f"{m['reached_share']:.0%} of the resamples).")
    return (f"The strongest retraining comparator here is **{m['target']}**: LDS {m['target_lds']:.3f} at "
            f"{m['target_compute']:.2f} retrainings. {verdict} Unlearning's LDS by the number of its models (compute "
            f"in retrainings; mean over draws): {curve}.")


def quality_rows(t):
    """The full model's FID and IS, with the model-vs-floor ratio at matched sizes where the run measured it (the
    model's first m samples and m real images of one half of the reference set, each against the other half: FID's
    bias shrinks with sample size, so only equal sizes compare); with the behaviours' sampler, and with the quality
    sampler when the run measured one (QUALITY_DDIM)."""
    def times(which):
        fid, floor = t.get(f"fid_matched_{which}"), t.get("floor_matched")
        if fid is None or not floor:
            return ""
        return (f" (at matched sizes, {t['matched_m']} vs {t['matched_n_b']}: {fid:.2f} vs the floor's {floor:.2f}, "
                f"**{fid / floor:.1f}x**)")
    if "fid_quality" not in t:
        return [f"| FID vs real data, full model; its IS | {num(t['fid_full'])}{times('full')}; "
                f"{num(t.get('is_full'))} |"]
    rows = []
    if t["fid_full"] is not None:  # (a run whose behaviours draw no samples has only the quality pass's)
        sampler = f" with DDIM-{t['ddim_full']}, the behaviours' sampler" if t.get("ddim_full") else ""
        rows.append(f"| FID vs real data, full model{sampler}; its IS | {num(t['fid_full'])}{times('full')}; "
                    f"{num(t.get('is_full'))} |")
    return rows + [f"| FID vs real data, full model with DDIM-{t['ddim_quality']}; its IS | "
                   f"**{num(t['fid_quality'])}**{times('quality')}; {num(t.get('is_quality'))} |"]


def table1_section(r, run):
    t = r["table1"]
    pm = lambda v: f"{v[0]:.2f} ± {v[1]:.2f}" if v else "n/a"  # noqa: E731
    seeds = lambda v: "n/a" if not v else str(v[0]) if v[0] == v[1] else f"{v[0]} to {v[1]}"  # noqa: E731
    lines = ["## Table 1 analogue", "", "| quantity | value |", "| --- | --- |",
             f"| the data's own floor: FID between two halves of the reference set; IS of the real images | "
             f"{num(t.get('fid_floor'))}; {num(t.get('is_real'))} |",
             f"| the floor at the model's sample size: FID of {t.get('matched_m', 'm')} real images of one half vs the "
             f"other half | {num(t.get('floor_matched'))} |",
             *quality_rows(t),
             f"| FID vs real data, pruned (and fine-tuned) model | {num(t['fid_pruned'])} |",
             f"| FID between unlearned and retrained models on the same subsets (FID2) | {pm(t['fid2_unlearn_vs_retrain'])} |",
             f"| FID between two retrainings of one subset, different seeds | {pm(t['fid_retrain_vs_retrain_other_seed'])} |",
             f"| FID2 ratio: unlearned vs retrained / two retraining seeds | {num(t.get('fid2_ratio'))} |",
             f"| training recipe | {describe_recipes(t.get('recipes'))} |",
             f"| ground truth: training seeds averaged per held-out subset | {seeds(t.get('ground_truth_seeds'))} |"]
    if "compute_ratio" in t:
        lines += [f"| training compute per model: retraining / unlearning | {gmacs(t['macs_retrain'])} / "
                  f"{gmacs(t['macs_unlearn'])} (**{t['compute_ratio']:.1f}x**) |",
                  f"| pruning + fine-tune, once | {gmacs(t['macs_prune_once'])}, {t['seconds_prune_once']:.1f} s |"]
    else:
        lines.append(f"| pruning + fine-tune, once | {t['seconds_prune_once']:.1f} s |")
    lines += [f"| wall time per model: retraining / unlearning (measured) | {t['seconds_retrain']:.1f} s / "
              f"{t['seconds_unlearn']:.2f} s ({t['speedup']:.1f}x) |",
              f"| behaviour per model: sampling (every sampled behaviour) / loss and elbo (no sampling) | "
              f"{t['seconds_sampling']:.2f} s / {t['seconds_loss']:.2f} s |",
              f"| behaviour per model, all together: retrained / unlearned | {t['seconds_behavior_retrain']:.1f} s / "
              f"{t['seconds_behavior_unlearn']:.1f} s |", ""]
    if not os.path.exists(grid_of(run.dir)):  # (an imported model has no grid beside it)
        return lines
    grid = os.path.basename(grid_of(run.dir))
    return lines + [f"Real images (left) and the full model's samples (right, {grid}, as train_ddpm.py drew them):", "",
                    "| real | generated |", "| --- | --- |", f"| ![real]({link('real.png')}) | ![generated]({grid}) |", ""]


def behaviors_section(r):
    hb = r["behaviors"][r["headline"]]
    lines = [f"Budgets are counted in {ACCOUNTING_WORDS.get(r['accounting'], r['accounting'])}, in units of one "
             "retraining, as the paper counts them; the unlearning method pays pruning + fine-tune once. For the headline "
             "behaviour two more columns count the budget in measured wall time of training (another day, or a resumed "
             "run, measures other seconds) and with each model's behaviour counted too (a user renting a GPU pays for "
             "both).", "", "## Every behaviour", "",
             f"| behaviour | better | LDS unlearning, all {hb['lds_all']['unlearn']['n']} models | LDS retraining, all "
             f"{hb['lds_all']['retrain']['n']} models | largest budget: LDS unlearning / retraining (p) | "
             f"detection AUC, all unlearned models |", "| --- | --- | --- | --- | --- | --- |"]
    for behavior, b in r["behaviors"].items():
        row = b["curve"][-1]
        p = f" ({p_text(row['p_value'], row.get('n_boot', 2000))})" if "p_value" in row else ""
        auc = f"{b['auc_all']:.3f}" if "auc_all" in b else "n/a"
        lines.append(f"| {behavior}{' (headline)' if behavior == r['headline'] else ''} | {b['better'] or '-'} | "
                     f"{b['lds_all']['unlearn']['lds']:.3f} | {b['lds_all']['retrain']['lds']:.3f} | "
                     f"{row.get('lds_unlearn', float('nan')):.3f} / {row.get('lds_retrain', float('nan')):.3f}{p} | "
                     f"{auc} |")
    return lines + [""]


def budget_section(behavior, b):
    extra = [a for a in ("time", "with_behavior") if a in b["curve"][0]]
    lines = [f"## LDS vs budget: {behavior} (K = {b['k_heldout']} held-out subsets)", "",
             "At each budget, each pool's models are drawn at random many times (the one fit on the whole pool where "
             "the budget buys all of it); the LDS is the mean over the draws, and the 95% interval and the paired "
             "two-sided p are of that mean, over resamples of the held-out subsets. Retraining takes, at each budget, "
             "the estimator of the registry that predicts the models of its own pool left out of each draw best "
             "(never chosen on the held-out subsets).", "",
             "| budget | unlearned models | LDS unlearning [95%] | retrained models | LDS retraining [95%] | difference "
             "[95%] | p " + "".join(f"| {'wall time' if a == 'time' else 'behaviour counted'}: unlearned models, LDS, "
                                    f"difference (p) " for a in extra) + "|", "| --- " * (7 + len(extra)) + "|"]
    for row in b["curve"]:
        diff, p = fmt_diff(row)
        cells = [f"{row['budget']:g}", fmt_models(row, "unlearn"), fmt_lds(row, "unlearn"), fmt_models(row, "retrain"),
                 fmt_lds(row, "retrain"), diff, p]
        for a in extra:
            o = row[a]
            cells.append(f"{o['n_unlearn']}, {o['lds_unlearn']:.3f}, {o['lds_unlearn'] - o['lds_retrain']:+.3f} "
                         f"({p_text(o['p_value'], o.get('n_boot', 2000))})" if "p_value" in o
                         else f"{o['n_unlearn']}, n/a")
        lines.append("| " + " | ".join(cells) + " |")
    a = b["lds_all"]
    return lines + ["", f"With every model of each pool (one fit on the pool as it is): unlearning ({a['unlearn']['n']} "
                    f"models) LDS {a['unlearn']['lds']:.3f}, retraining ({a['retrain']['n']} models) LDS "
                    f"{a['retrain']['lds']:.3f}. " + ceiling_text(b.get("ceiling")), ""]


def examples_section(r, hb):
    estimator, headline = title(r.get("method")), r["headline"]
    return [f"## Most harmful and most helpful training {r['unit']}s (unlearning {estimator}, all unlearned "
            f"models, {headline})", "",
            f"Most harmful ({'raise' if hb['better'] == 'lower' else 'lower'} {headline} most):", "",
            f"![most harmful]({link('most_harmful.png')})", "",
            f"Most helpful ({'lower' if hb['better'] == 'lower' else 'raise'} {headline} most):", "",
            f"![most helpful]({link('most_helpful.png')})", ""]


def detection_section(r, run, order):
    a, headline, estimator = r["auc"], r["headline"], title(r.get("method"))
    auc = lambda name: f"{a[name]:.3f}" if name in a else "n/a (too few models)"  # noqa: E731
    kinds = ", ".join(f"{k} ({len(v)})" for k, v in run.bad_kinds.items())
    if r["unit"] == "contributor":  # each row of the figures is one contributor
        heading, top = "## Finding the bad contributors", 8
        what = (f"{len(run.bad)} of {len(order)} contributors gave mostly faulty images ({kinds}; each row of the "
                f"figures above is one contributor). Detection AUC of the attribution scores ({headline}; bad = harmful)")
    else:
        heading, top = "## Finding the corrupted images", 16
        what = (f"{len(run.bad)} of {len(run.ds)} training images are corrupted ({kinds}). Detection AUC of the "
                f"attribution scores ({headline}; corrupted = harmful)")
    found = (f"{int(np.isin(order[:top], run.bad).sum())} of the {top} most harmful {r['unit']}s are "
             f"{'bad' if r['unit'] == 'contributor' else 'corrupted'}.")
    return [heading, "", f"{what}, {estimator}: unlearning at the largest budget {auc('unlearn')}, retraining at the "
            f"largest budget {auc('retrain')}; unlearning with every unlearned model {a['unlearn_all']:.3f} "
            f"(Banzhaf {a['unlearn_all_banzhaf']:.3f}"
            + (f", datamodel {a['unlearn_all_datamodel']:.3f}" if "unlearn_all_datamodel" in a else "")
            + f"). {found}", ""]


def render_attribution_only(r, run, order):
    t, headline, method = r["table1"], r["headline"], r["unlearning"]
    hb, estimator = r["behaviors"][headline], title(r.get("method"))
    lines = [f"# Data attribution report: {os.path.basename(os.path.abspath(run.dir))} (attribution only)", "",
             data_line(run), "",
             "**No LDS was measured.** This run has no held-out subsets retrained from scratch (K = 0), so nothing "
             "here says how well the attributions predict what retraining would do. Measuring it (the linear "
             "datamodeling score) needs models retrained from scratch on held-out subsets with the recipe that made "
             "the attributed model: its architecture, noise schedule, steps, batch size and learning rate; a "
             "different recipe would judge the attributions against another model's behaviour. Rerun with K > 0 "
             "(FULL= a checkpoint that records its recipe, or TRAIN_STEPS, BATCH and TRAIN_FLAGS that reproduce "
             "it) to measure it.", ""] + verdicts_section(r, run) + [
             f"Headline behaviour: **{headline}** ({hb['better'] or 'no better direction'} is better). Attributions: "
             f"{estimator} of {hb['n']} unlearned models. Unlearning method: **{method['method']}** "
             f"({method['settings'] or 'settings n/a'}).", "",
             "Sign convention: a positive score means including that image raises the behaviour; for FID (lower is "
             "better) a **positive score means including that training image raises FID (harmful)**.", "",
             "| quantity | value |", "| --- | --- |",
             f"| FID vs the reference, full model / pruned (and fine-tuned) model | {num(t['fid_full'])} / "
             f"{num(t['fid_pruned'])} |",
             f"| pruning + fine-tune, once | {num(t['seconds_prune_once'])} s |",
             f"| per unlearned model: training compute, wall time | {gmacs(t['macs_unlearn'])}, "
             f"{t['seconds_unlearn']:.2f} s |",
             f"| per unlearned model: sampling (every sampled behaviour) / loss and elbo (no sampling) | "
             f"{t['seconds_sampling']:.2f} s / {t['seconds_loss']:.2f} s |", "",
             "## Every behaviour", "", "| behaviour | better | spread across the unlearned models | detection AUC |",
             "| --- | --- | --- | --- |"]
    for behavior, b in r["behaviors"].items():
        auc = f"{b['auc_all']:.3f}" if "auc_all" in b else "n/a"
        lines.append(f"| {behavior}{' (headline)' if behavior == headline else ''} | {b['better'] or '-'} | "
                     f"{b['spread']:.4g} | {auc} |")
    all_scores = runfolder.relative(run.dir, runfolder.attributions(run.dir, "all_behaviors"))
    lines += ["", f"The scores of every behaviour: {all_scores} (one array per behaviour).", "",
              f"## Most harmful and most helpful training {r['unit']}s ({headline})", "",
              "Most harmful:", "", f"![most harmful]({link('most_harmful.png')})", "",
              "Most helpful:", "", f"![most helpful]({link('most_helpful.png')})", ""]
    if "auc" in r:
        top = 8 if r["unit"] == "contributor" else 16
        lines += [f"## Finding the {'bad contributors' if r['unit'] == 'contributor' else 'corrupted images'}", "",
                  f"{len(run.bad)} {r['unit']}s are known to be bad. Detection AUC ({headline}; bad = harmful): "
                  f"{r['auc']['unlearn_all']:.3f} ({estimator}; Banzhaf {r['auc']['unlearn_all_banzhaf']:.3f}). "
                  f"{int(np.isin(order[:top], run.bad).sum())} of the {top} most harmful {r['unit']}s are bad.", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Figures

def plot_curves(curves, path):
    """LDS vs budget, one panel per behaviour, both methods with their intervals."""
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
    """Predicted (sum of attributions) against actual behaviour of the held-out retrained models, per pool:
    {name: (predicted, actual, Spearman's rho)}."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(points), figsize=(4.5 * len(points), 4), squeeze=False)
    for ax, (name, (pred, actual, rho)) in zip(axes[0], points.items()):
        ax.scatter(pred, actual, s=14)
        ax.set_xlabel("predicted (sum of attributions)")
        ax.set_ylabel("actual (retrained from scratch)")
        ax.set_title(f"{name}\nSpearman {rho:.3f}")
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

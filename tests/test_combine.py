"""combine.py: one report over repetitions of the method's side, against its planted predictions."""
import json

import numpy as np
import pytest

from conftest import run_cli
from stats import bootstrap_repeated, mean_lds


def planted_repetition(folder, y, unlearning, retraining, compare=("retraining", "loo")):
    """A finished repetition: its results.json (the keys combine.py reads), report.md (its data line) and
    predictions.npz (unlearning's draws, retraining's, leave-one-out's fixed prediction)."""
    folder.mkdir(parents=True)
    results = dict(headline="fid", declaration=dict(compare=list(compare), margin=0.1, alpha=0.05),
                   comparison=[dict(key="unlearning", name="sparsified unlearning"),
                               dict(key="retraining", name="retraining, equal compute"), dict(key="loo", name="loo"),
                               dict(key="ekfac", name="EK-FAC, the samples", linearises="samples-loss")])
    (folder / "results.json").write_text(json.dumps(results))
    (folder / "report.md").write_text("# report\n\nData: `digits`, planted.\n")
    np.savez(folder / "predictions.npz", **{"method:unlearning": unlearning, "method:retraining": retraining,
                                            "method:loo": y + 0.5, "method:ekfac": -y, "y": y,
                                            "rows": np.arange(len(y))})


def test_the_combined_lds_is_the_mean_over_repetitions_with_their_noise_in_its_interval(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.normal(size=60)
    reps = []
    for r in range(3):
        u, t = y + rng.normal(size=(5, 60)) * (0.5 + 0.3 * r), y + 3 * rng.normal(size=(5, 60))
        planted_repetition(tmp_path / f"rep{r}", y, u, t, compare=("retraining", "loo", "loo/retraining"))
        reps.append((u, t))
    p = run_cli("combine", "--run", str(tmp_path))
    assert p.returncode == 0, p.stderr
    combined = json.loads((tmp_path / "results.json").read_text())
    per_rep = [mean_lds(u, y) for u, _ in reps]
    assert combined["lds"]["method:unlearning"]["lds"] == pytest.approx(np.mean(per_rep))
    assert combined["lds"]["method:unlearning"]["per_repetition"] == pytest.approx(per_rep)
    boot = bootstrap_repeated([[u, t] for u, t in reps], y, seed=0)
    d = combined["declared"]["retraining"]
    assert d["diff"] == pytest.approx(np.mean(per_rep) - np.mean([mean_lds(t, y) for _, t in reps]))
    assert d["ci"] == pytest.approx(list(np.percentile(boot[0] - boot[1], [2.5, 97.5])))
    assert d["verdict"] == "ahead" and combined["declared"]["loo"]["verdict"] == "behind"  # loo: y itself, LDS 1
    pair = combined["declared"]["loo/retraining"]  # A/B: row A minus row B
    assert pair["diff"] == pytest.approx(1.0 - np.mean([mean_lds(t, y) for _, t in reps])) and pair["verdict"] == "ahead"
    text = (tmp_path / "report.md").read_text()
    assert "over 3 repetitions" in text and "Data: `digits`, planted." in text and "retraining, equal compute" in text
    assert "| loo *minus* retraining, equal compute |" in text
    # the samples' row in a table of its own, after the judged rows
    apart = text.split("judged on a behaviour it does not compute")[1]
    assert "| EK-FAC, the samples | -1.000" in apart and "EK-FAC" not in text.split("judged on a behaviour")[0]


def test_repetitions_of_another_ground_truth_are_refused(tmp_path):
    y = np.arange(10.0)
    planted_repetition(tmp_path / "rep0", y, y[None], y[None])
    planted_repetition(tmp_path / "rep1", y[::-1].copy(), y[None], y[None])
    p = run_cli("combine", "--run", str(tmp_path))
    assert p.returncode == 2 and "another ground truth" in p.stderr


def test_retraining_at_equal_compute_reads_the_curves_least_budget_where_that_compute_buys_no_fit(tmp_path):
    """Where unlearning's compute buys fewer than two retrainings the repetitions have no "retraining" row: the
    declared primary is unlearning minus retraining at the least budget with a fit (here 2, not 4), by hand."""
    rng = np.random.default_rng(1)
    y = rng.normal(size=40)
    at = {2: (y + rng.normal(size=(3, 40)), y + 2 * rng.normal(size=(3, 40))),
          4: (y + rng.normal(size=(3, 40)), y + 0.1 * rng.normal(size=(3, 40)))}  # budget 4: retraining far better
    for r in range(2):
        folder = tmp_path / f"rep{r}"
        planted_repetition(folder, y, y[None], y[None])
        p = dict(np.load(folder / "predictions.npz"))
        del p["method:retraining"]
        for b, (u, t) in at.items():
            p[f"budget:{b}:unlearn"], p[f"budget:{b}:retrain"] = u, t
        np.savez(folder / "predictions.npz", **p)
    assert run_cli("combine", "--run", str(tmp_path)).returncode == 0
    combined = json.loads((tmp_path / "results.json").read_text())
    assert combined["declaration"]["resolved"] == {"retraining": "budget:2"}
    u, t = at[2]
    assert combined["declared"]["retraining"]["diff"] == pytest.approx(mean_lds(u, y) - mean_lds(t, y))
    assert "| retraining at 2 retrainings (the least compute that buys a fit" in (tmp_path / "report.md").read_text()

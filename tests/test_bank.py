"""bank.py: a run's ground truth from committed retrainings, against the rows it was made of."""
import csv
import json
import os

import numpy as np
import pytest

import runfolder
from conftest import dry_run_calls, pipeline
from data import row_sha256

QUICK = dict(data_flags="--data digits --corrupt 0.05 --fault noise", groups="",
             train_flags="--arch digits-small --batch-size 32 --steps 40",
             fid_flags="--data digits --n-samples 64 --ddim-steps 5 --features auto --behaviors all --loss-draws 1 --n-ref 512")


def planted_bank(root, held=30, pool=8, gt_seeds=1, ceiling=16):
    """A bank of the quick preset's settings whose rows are planted numbers (no model trained): row r of seed s has
    fid = r + 0.1 s and loss = -r, so what a run reads can be checked by hand."""
    import bank
    from data import images_sha256, load_dataset, make_masks
    folder = root / "quick"
    (folder / "masks").mkdir(parents=True)
    n = 1797
    masks = {"lds": make_masks(n, 40, 0.5, 11), "pool": make_masks(n, 16, 0.5, 12)}
    for name, m in masks.items():
        np.save(folder / "masks" / f"{name}.npy", m)
    sha = images_sha256(load_dataset("digits", corrupt=0.05, fault="noise").images)
    plan = dict(QUICK, name="quick", seeds={}, pool_alpha="0.5", gt_seeds=gt_seeds, data_sha256=sha,
                blocks=[["lds", s, 0, 40] for s in range(gt_seeds + 1)] + [["pool", 0, 0, 16]])
    (folder / "plan.json").write_text(json.dumps(plan))
    meta = dict(features="cnn", n_samples=64, ddim_steps=5, loss_draws=1, loss_seed=0, behaviors='["fid", "loss"]',
                behavior_table=json.dumps({"fid": {"better": "lower"}, "loss": {"better": "lower"}}),
                ref_data="digits", ref_sha256="x", floor_fid=1.0, real_is=9.0,
                recipe=dict(steps=40, batch_size=32, lr=0.002, arch="digits-small"))
    (folder / "behaviours.json").write_text(json.dumps(meta))
    fills = {("lds", s): held for s in range(gt_seeds)} | {("lds", gt_seeds): ceiling, ("pool", 0): pool}
    for (name, seed), count in fills.items():
        (folder / "rows").mkdir(exist_ok=True)
        with open(folder / "rows" / f"{name}-s{seed}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(bank.ROW_KEYS + ("fid", "loss", "commit", "machine"))
            for r in range(count):
                w.writerow([r, seed, row_sha256(masks[name][r]), 40, 1.5, 1e9, 0.2, 0.1, 1e6, 1e8, r + 0.1 * seed, -r,
                            "abc", "test"])
    (root / "features").mkdir()
    return root


def use(root, run, *extra, **flags):
    import subprocess
    import sys
    f = dict(QUICK, **flags)
    args = [sys.executable, "bank.py", "use", "quick", "--run", str(run), "--data-flags", f["data_flags"],
            "--groups", f["groups"], "--train-flags", f["train_flags"], "--fid-flags", f["fid_flags"], *extra]
    return subprocess.run(args, capture_output=True, text=True, env=dict(os.environ, BANK_DIR=str(root)),
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("gt_seeds", [1, 2])
def test_a_run_reads_the_banks_rows_as_behaviours_files(tmp_path, gt_seeds):
    """The held-out prefix finished at every averaged seed, the next seed's rows as the ceiling, the pool's prefix:
    written as compute_fid.py's files, whose values are the planted ones (the ground truth the mean of the seeds)."""
    root = planted_bank(tmp_path / "banks", held=30, pool=8, gt_seeds=gt_seeds)
    run = tmp_path / "run"
    (run / "masks").mkdir(parents=True)
    p = use(root, run)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == (f"ground truth: bank/quick, 30 held-out subsets at {gt_seeds} seed"
                                f"{'s' * (gt_seeds > 1)} (16 with one more), a retraining pool of 8")
    lds = runfolder.load_behaviors(runfolder.behaviors(run, "lds"))
    rows, X, y = runfolder.aligned(np.load(run / "masks" / "lds.npy"), lds, "fid")
    np.testing.assert_allclose(y, np.arange(30) + 0.1 * np.mean(range(gt_seeds)))
    assert len(np.load(run / "masks" / "lds.npy")) == 30 and len(np.load(run / "masks" / "retrain.npy")) == 8
    ceiling = runfolder.load_behaviors(runfolder.behaviors(run, "lds_ceiling"))
    assert list(ceiling["index"]) == list(range(16)) and set(ceiling["seed"]) == {gt_seeds}
    few = planted_bank(tmp_path / "few", held=30, pool=8, gt_seeds=gt_seeds, ceiling=15)  # too few pairs: no ceiling
    (tmp_path / "run-few" / "masks").mkdir(parents=True)
    p = use(few, tmp_path / "run-few")
    assert p.returncode == 0 and "(0 with one more)" in p.stdout
    assert not runfolder.behaviors(tmp_path / "run-few", "lds_ceiling").exists()
    pool = runfolder.load_behaviors(runfolder.behaviors(run, "retrain"))
    np.testing.assert_allclose(pool["loss"], -np.arange(8))
    assert json.loads(str(pool["args"][0]))["steps"] == 40 and json.loads((run / "bank.json").read_text())["held_out"] == 30


def test_a_run_of_other_settings_or_too_few_rows_does_not_touch_the_bank(tmp_path):
    root = planted_bank(tmp_path / "banks", held=30)
    for flags, says in ((dict(train_flags="--arch digits-small --batch-size 32 --steps 80"), "train flags"),
                        (dict(data_flags="--data npz:mine.npz --corrupt 0 --fault noise"), "data flags"),
                        (dict(groups="random:5"), "this run's contributors random:5")):
        p = use(root, tmp_path / "run", **flags)
        assert p.returncode == 1 and len(p.stdout.splitlines()) == 1 and says in p.stdout
        assert p.stdout.startswith("ground truth: retrained in this run, not bank/quick")
    assert not (tmp_path / "run").exists()
    few = planted_bank(tmp_path / "few", held=10)
    p = use(few, tmp_path / "run")
    assert p.returncode == 1 and "it holds 10 held-out rows (this run takes 24" in p.stdout
    p = use(root, tmp_path / "run", "--r", "12")  # the pool holds 8
    assert p.returncode == 1 and "its retraining pool holds 8 models (this run takes 12" in p.stdout
    p = use(root, tmp_path / "run", "--k", "40")  # 30 finished
    assert p.returncode == 1 and "it holds 30 held-out rows (this run takes 40" in p.stdout
    p = use(root, tmp_path / "run", "--k", "20", "--check")
    assert p.returncode == 0 and "ground truth: bank/quick, 20 held-out subsets" in p.stdout
    p = use(root, tmp_path / "run", "--loo")
    assert p.returncode == 1 and "no complete leave-one-out seed" in p.stdout


def test_the_pipeline_takes_the_banks_ground_truth_and_retrains_none(tmp_path):
    """A dry run of the quick preset beside a matching bank: the masks stage asks bank.py for the held-out, retraining
    and leave-one-out files, no train_ddpm.py call retrains a row, no pool of retrained models is measured; BANK=0
    retrains as before."""
    root = planted_bank(tmp_path / "banks")

    def calls(**env):
        p = pipeline("quick", tmp_path / "dry", PYTHON="echo", BANK_DIR=str(root), **env)
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 0, out
        return dry_run_calls(out), out
    banked, out = calls(BANK="auto")
    assert "ground truth: bank/quick, 30 held-out subsets" in out
    assert [c[:2] for c in banked if c[0] == "bank.py"] == [["bank.py", "use"]]
    assert not [c for c in banked if c[0] == "train_ddpm.py" and "--masks" in c]
    assert not [c for c in banked if c[0] == "compute_fid.py" and any(f"models/{p}" in w for w in c
                                                                     for p in ("retrain", "lds"))]
    local, out = calls(BANK="0")
    assert "bank/quick" not in out and [c for c in local if c[0] == "train_ddpm.py" and "--masks" in c]
    p = pipeline("default", tmp_path / "dry-users", PYTHON="echo", BANK="auto", DATA=f"npz:{tmp_path / 'mine.npz'}")
    np.savez(tmp_path / "mine.npz", images=np.zeros((40, 1, 8, 8), dtype=np.uint8))
    out, _ = p.communicate(timeout=60)
    said = [line for line in out.splitlines() if line.startswith("ground truth:")]
    assert p.returncode == 0 and said == [f"ground truth: retrained in this run, not bank/default: this run's data "
                                          f"flags '--data npz:{tmp_path / 'mine.npz'} --corrupt 0 --fault blur,"
                                          f"duplicate,watermark' (the bank's: '--data digits --corrupt 0.15 --fault "
                                          f"blur,duplicate,watermark')"], out


def test_two_rows_of_the_images_bank_retrained_here_agree_within_its_seed_noise(tmp_path, monkeypatch):
    """Two held-out rows of the committed `images` bank retrained and measured here as `bank.py fill` makes them
    (seed 0, the bank's own feature network and reference): every behaviour within 5 seed-to-seed standard
    deviations of the bank's value (from the rows the bank holds at seeds 0 and 1: sd of their difference / sqrt 2).
    Not bit for bit: another CPU rounds otherwise, and training amplifies it; a row of another recipe or another
    reference set would miss by far more."""
    import shutil
    import bank
    from conftest import ROOT
    source = os.path.join(ROOT, "bank")
    seed0, seed1 = bank.read_rows("images", "lds", 0), bank.read_rows("images", "lds", 1)
    both = sorted(set(seed0) & set(seed1))
    assert len(both) >= 20 and {0, 1} <= set(both), "the images bank has too few rows at two seeds to test against"
    keys = [k for k in json.loads(bank.read_meta("images")["behaviors"]) if k != "class"]
    sd = {k: np.std([float(seed0[r][k]) - float(seed1[r][k]) for r in both], ddof=1) / np.sqrt(2) for k in keys}
    copy = tmp_path / "banks"
    shutil.copytree(os.path.join(source, "images"), copy / "images", ignore=shutil.ignore_patterns("rows", ".work"))
    shutil.copytree(os.path.join(source, "features"), copy / "features", ignore=shutil.ignore_patterns("stats", ".*"))
    monkeypatch.setattr(bank, "BANKS", str(copy))
    monkeypatch.setattr(bank, "FEATURES", str(copy / "features"))
    plan = bank.load_plan("images")
    for row in (0, 1):  # (issue 41 asks for two)
        line = bank.fill_one("images", plan, "lds", 0, row, "cpu")
        assert line["mask_sha256"] == seed0[row]["mask_sha256"]
        far = {k: (line[k], float(seed0[row][k]), sd[k]) for k in keys if abs(line[k] - float(seed0[row][k])) > 5 * sd[k]}
        assert not far, far


def test_shards_append_to_files_of_their_own_which_reads_merge(tmp_path, monkeypatch):
    """bank.py fill --shard I/N appends to POOL-sS.shardIofN.csv (appends from several machines to one file on a
    shared disk may interleave); read_rows merges the plain file and every shard's, and seed 1 is not seed 10."""
    import bank
    root = planted_bank(tmp_path / "banks", held=3, pool=2, ceiling=5)
    monkeypatch.setattr(bank, "BANKS", str(root))
    for shard, row in (((1, 4), 3), ((2, 4), 4)):
        bank.append_row(bank.rows_file("quick", "lds", 0, shard), dict(row=row, seed=0, fid=float(row)))
    bank.append_row(bank.rows_file("quick", "lds", 10), dict(row=0, seed=10, fid=-1.0))
    assert os.path.basename(bank.rows_file("quick", "lds", 0, (1, 4))) == "lds-s0.shard1of4.csv"
    assert sorted(bank.read_rows("quick", "lds", 0)) == [0, 1, 2, 3, 4]
    assert sorted(bank.read_rows("quick", "lds", 1)) == [0, 1, 2, 3, 4]  # the planted ceiling seed: its 5 rows
    assert list(bank.read_rows("quick", "lds", 10)) == [0]


def test_the_validation_block_is_never_a_runs_test_subsets_and_fills_alone(tmp_path, monkeypatch):
    """A plan's validation block (held-out rows kept for tuning, bench/tune_unlearning.py --what models): a run's
    held-out rows stop before it even where the rows after it are finished, bank.validation reads its finished rows
    (the planted fid r), and fill --block retrains only that block's missing rows, in order."""
    import argparse
    import bank
    root = planted_bank(tmp_path / "banks", held=34, pool=8)
    plan = json.loads((root / "quick" / "plan.json").read_text())
    (root / "quick" / "plan.json").write_text(json.dumps(dict(plan, validation=["lds", 0, 26, 40])))
    run = tmp_path / "run"
    (run / "masks").mkdir(parents=True)
    p = use(root, run)
    assert p.returncode == 0 and "ground truth: bank/quick, 26 held-out subsets" in p.stdout, p.stdout + p.stderr
    assert len(np.load(run / "masks" / "lds.npy")) == 26
    monkeypatch.setattr(bank, "BANKS", str(root))
    masks, beh = bank.validation("quick")
    assert list(beh["index"]) == list(range(26, 34)) and list(beh["fid"]) == list(range(26, 34))
    assert np.array_equal(masks, np.load(root / "quick" / "masks" / "lds.npy")[26:34])
    filled = []
    monkeypatch.setattr(bank, "check_data", lambda plan: None)
    monkeypatch.setattr(bank, "fill_one", lambda name, plan, pool, seed, row, *a: filled.append((pool, seed, row)) or
                        dict(wall_seconds=0.0))
    bank.fill(argparse.Namespace(name="quick", block=bank.block("lds:0:26:40"), shard=(0, 1), rows=0, hours=0,
                                 device="cpu"))
    assert filled == [("lds", 0, r) for r in range(34, 40)]
    for bad in ("lds:0:40:26", "train:0:0:4", "lds:0:4", "lds:x:0:4"):
        with pytest.raises(argparse.ArgumentTypeError):
            bank.block(bad)

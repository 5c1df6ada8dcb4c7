"""Bad input: one clear line on stderr, exit code 2, nothing overwritten."""
import numpy as np
import pytest

from conftest import run_script

SENTINEL = b"do not overwrite me"


@pytest.fixture
def out(tmp_path):
    p = tmp_path / "out.pt"
    p.write_bytes(SENTINEL)
    return p


def assert_refused(r, out, words):
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert words in lines[0], lines[0]
    assert out.read_bytes() == SENTINEL


def test_unknown_dataset(out):
    r = run_script("train_ddpm.py", "--data", "mnist", "--out", str(out), "--force")
    assert_refused(r, out, "unknown dataset 'mnist'")


@pytest.mark.parametrize("images, words", [
    (np.zeros((4, 8, 8, 3), dtype=np.float32), "must be uint8"),
    (np.zeros((4, 8, 8), dtype=np.uint8), "must be (N, H, W, C)"),
    (np.zeros((4, 8, 8, 5), dtype=np.uint8), "1 or 3 channels"),
    (np.zeros((4, 3, 8, 6), dtype=np.uint8), "square"),
])
def test_npz_with_wrong_shape_or_dtype(tmp_path, out, images, words):
    np.savez(tmp_path / "bad.npz", images=images)
    r = run_script("train_ddpm.py", "--data", f"npz:{tmp_path / 'bad.npz'}", "--out", str(out), "--force")
    assert_refused(r, out, words)


def test_mask_row_out_of_range(tmp_path, out):
    np.save(tmp_path / "m.npy", np.ones((3, 1797), dtype=bool))
    r = run_script("train_ddpm.py", "--masks", str(tmp_path / "m.npy"), "--index", "3", "--out", str(out), "--force")
    assert_refused(r, out, "out of range")


def test_mask_width_not_n(tmp_path, out):
    np.save(tmp_path / "m.npy", np.ones((3, 100), dtype=bool))
    r = run_script("train_ddpm.py", "--masks", str(tmp_path / "m.npy"), "--index", "0", "--out", str(out), "--force")
    assert_refused(r, out, "width 100")


def test_unreadable_checkpoint(tmp_path, out):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    r = run_script("prune.py", "--ckpt", str(bad), "--out", str(out), "--force")
    assert_refused(r, out, "cannot read checkpoint")
    r = run_script("prune.py", "--ckpt", str(tmp_path / "missing.pt"), "--out", str(out), "--force")
    assert_refused(r, out, "not found")

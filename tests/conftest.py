"""Shared fixtures: tiny models and data so the suite runs in minutes on 2 CPU cores."""
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TQDM_DISABLE", "1")

TINY = dict(resolution=8, in_channels=1, ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,),
            dropout=0.1, num_groups=4, mid_attn=True)


def run_script(*args, cwd=ROOT, env=None):
    """Run one of the project's scripts as a user would; returns the CompletedProcess."""
    e = dict(os.environ, TQDM_DISABLE="1", **(env or {}))
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, env=e)


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A tiny trained digits model, a structured-pruned copy and a mask file, made once."""
    d = tmp_path_factory.mktemp("tiny")
    full, pruned, masks = d / "full.pt", d / "pruned.pt", d / "masks" / "unlearn.npy"
    for args in (["train_ddpm.py", "--out", full, "--steps", "30", "--batch-size", "16", "--grid", "4",
                  "--ddim-steps", "5"],
                 ["prune.py", "--ckpt", full, "--out", pruned, "--steps", "5", "--batch-size", "16", "--grid", "0"],
                 ["make_subsets.py", "--count", "4", "--seed", "1", "--out", masks]):
        r = run_script(*map(str, args))
        assert r.returncode == 0, r.stderr
    return dict(dir=d, full=full, pruned=pruned, masks=masks)

"""run_pipeline.sh cifar10: the paper's settings with only the sizes overridden (its own file, so that
pytest-xdist runs it beside the quick pipeline's tests)."""
import os

import numpy as np
import pytest

from conftest import ROOT, pipeline

CIFAR_NPZ = os.path.join(ROOT, "..", "shared", "data", "cifar10_10k.npz")


@pytest.mark.skipif(not os.path.exists(CIFAR_NPZ), reason="needs CIFAR-10 images (../shared/data/cifar10_10k.npz)")
def test_cifar10_preset_smoke(tmp_path):
    """The paper's settings (35.7M UNet, ratio 0.3, Inception FID, alpha 0.5) with tiny sizes. Beyond the
    sizes, only what this offline machine needs: CIFAR-10 images from a local file and random Inception
    weights (the real ones cannot be downloaded here)."""
    run = tmp_path / "cifar"
    p = pipeline("cifar10", run, DATA=f"npz:{CIFAR_NPZ}", INCEPTION_WEIGHTS="random", JOBS=1, TRAIN_STEPS=1, GT_SEEDS=1,
                 UNLEARN_STEPS=1, BATCH=2, M=2, R=2, K=3, SEED_PAIRS=1, N_SAMPLES=2, N_REF=2, DDIM_STEPS=1, GRID=0,
                 BASELINES="pixel-nn")  # (the others need the 10,000 images' passes through the 35.7M UNet)
    out, _ = p.communicate(timeout=1200)
    assert p.returncode == 0, out[-3000:]
    assert "35.746M parameters" in out and "structured ratio 0.3" in out
    with np.load(run / "behaviors" / "lds.npz") as f:
        assert str(f["features"]) == "inception" and int(f["ddim_steps"]) == 1
    assert (run / "report.md").exists() and "| pixel-nn | - |" in (run / "report.md").read_text()
    # finished per-row checkpoints of the real architecture keep the EMA weights and metadata: about half the size
    # of the full and pruned models' (which keep their trained weights too)
    for row, whole in (("models/lds/00000-s0.pt", "full.pt"), ("models/retrain/00000.pt", "full.pt"),
                       ("models/unlearn/00000.pt", "pruned.pt")):
        ratio = os.path.getsize(run / row) / os.path.getsize(run / whole)
        assert 0.45 < ratio < 0.55, (row, ratio)

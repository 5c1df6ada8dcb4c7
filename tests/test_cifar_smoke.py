"""run_pipeline.sh cifar10: the paper's settings with only the sizes overridden (its own file, so that
pytest-xdist runs it beside the quick pipeline's tests)."""
import os

import numpy as np
import pytest

from conftest import ROOT, dry_run_calls, pipeline
import runfolder

CIFAR_NPZ = os.path.join(ROOT, "..", "shared", "data", "cifar10_10k.npz")


@pytest.mark.skipif(not os.path.exists(CIFAR_NPZ), reason="needs CIFAR-10 images (../shared/data/cifar10_10k.npz)")
def test_cifar10_preset_smoke(tmp_path):
    """The paper's settings (35.7M UNet, ratio 0.3, Inception FID, alpha 0.5) with tiny sizes. Beyond the
    sizes, only what this offline machine needs: CIFAR-10 images from a local file and random Inception
    weights (the real ones cannot be downloaded here)."""
    run = tmp_path / "cifar"
    p = pipeline("cifar10", run, DATA=f"npz:{CIFAR_NPZ}", INCEPTION_WEIGHTS="random", JOBS=1, TRAIN_STEPS=1, GT_SEEDS=1, BANK=0,
                 UNLEARN_STEPS=1, BATCH=2, M=2, R=2, K=2, SEED_PAIRS=0, N_SAMPLES=2, N_REF=2, DDIM_STEPS=1, GRID=0, LOSS_DRAWS=1,
                 BASELINES="pixel-nn")  # (the others need the 10,000 images' passes through the 35.7M UNet)
    out, _ = p.communicate(timeout=1200)
    assert p.returncode == 0, out[-3000:]
    assert "35.746M parameters" in out and "structured ratio 0.3" in out
    with np.load(runfolder.behaviors(run, "lds")) as f:
        assert str(f["features"]) == "inception" and int(f["ddim_steps"]) == 1
    assert (runfolder.report(run)).exists() and "| pixel-nn | - |" in (runfolder.report(run)).read_text()
    # finished per-row checkpoints of the real architecture keep the EMA weights and metadata: about half the size
    # of the full and pruned models' (which keep their trained weights too)
    for (pool, row), whole in ((("lds", "00000-s0.pt"), "full"), (("retrain", "00000.pt"), "full"),
                               (("unlearn", "00000.pt"), "pruned")):
        ratio = os.path.getsize(runfolder.models(run, pool) / row) / os.path.getsize(runfolder.checkpoint(run, whole))
        assert 0.45 < ratio < 0.55, (row, ratio)


def test_cifar16_preset_trains_on_downsampled_images_and_leads_with_the_loss(tmp_path):
    """The natural-image CPU preset, as the commands it would run (PYTHON=echo): every script reads the same 2,000
    images at 16x16 (cifar10@16:2000), the fits and the report lead with the sampling-free loss, and Table 1's quality
    pass samples the full model with DDIM-100. With the images at hand, the data spec gives 200 images a class at 16x16
    with the default's three faults on 15% of them."""
    p = pipeline("cifar16", tmp_path / "dry", PYTHON="echo")
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 0, out
    calls = dry_run_calls(out)
    data = {c[c.index("--data") + 1] for c in calls if "--data" in c}
    assert data == {"cifar10@16:2000"}
    fits = [c for c in calls if c[0] == "fit_datamodel.py"]
    assert fits and all(c[c.index("--behavior") + 1] == "loss" for c in fits)
    assert any(c[0] == "eval_lds.py" and c[c.index("--headline") + 1] == "loss" for c in calls)
    quality = [c for c in calls if c[0] == "compute_fid.py" and c[-1].endswith("quality.npz")]
    assert len(quality) == 1
    steps = [quality[0][i + 1] for i, word in enumerate(quality[0]) if word == "--ddim-steps"]
    assert steps[-1] == "100"  # the last --ddim-steps is the one argparse keeps
    if not os.path.exists(CIFAR_NPZ):
        return
    import data as data_module
    ds = data_module.load_dataset(f"npz:{CIFAR_NPZ}@16:2000", corrupt=0.15, fault="blur,duplicate,watermark")
    assert ds.images.shape == (2000, 3, 16, 16) and np.bincount(ds.labels).tolist() == [200] * 10
    assert len(ds.corrupted) == 300 and sorted(ds.faults) == ["blur", "duplicate", "watermark"]

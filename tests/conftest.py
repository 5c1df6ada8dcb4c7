"""Shared fixtures: tiny models and data so the suite runs in minutes on 2 CPU cores."""
import os
import subprocess
import sys

import pytest
import runfolder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TQDM_DISABLE", "1")
# Each test's thread count and seeds, and the check that it leaves torch's global settings as it found them
# (thread count, backend flags, default dtype): tests/state_guard.py.
pytest_plugins = ["state_guard"]

TINY = dict(resolution=8, in_channels=1, ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,),
            dropout=0.1, num_groups=4, mid_attn=True)


# The order in which the two pytest-xdist workers take whole files (pytest.ini: --dist loadfile
# --no-loadscope-reorder), so that they finish together. The three pipeline files first (seconds on a slow
# day, in the suite): test_slurm ~160 (the quick preset through Slurm, interrupted and resubmitted),
# test_pipeline ~200 (the quick preset, shared with test_slurm, and a killed and resumed copy),
# test_cifar_smoke ~130, then test_import (an attribution-only quick run and the 35.7M-parameter comparisons with
# diffusers), test_bank (two rows of the images bank retrained). A worker takes its next file as soon as only 2 of its tests are left, so the one that takes the
# cifar smoke also takes the file after it before it is done; the other worker runs everything after it.
# pytest-xdist's default order, most tests first, left the pipelines to the end.
FILE_ORDER = ["test_slurm.py", "test_pipeline.py", "test_cifar_smoke.py", "test_import.py", "test_bank.py", "test_errors.py",
              "test_ddpm.py", "test_attribution.py", "test_one_process.py", "test_fid.py", "test_gpu_path.py",
              "test_tutorial.py", "test_prune_unlearn.py", "test_behaviors.py"]


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(FILE_ORDER)}
    items.sort(key=lambda item: rank.get(os.path.basename(str(item.fspath)), len(rank)))  # stable: files stay whole


def run_cli(script, *argv):
    """A script's __main__ in this process, without the seconds of a new interpreter: tools/one_process.py's
    call, data.run(main, parse_args(argv)) as the script's `if __name__ == "__main__"` does. Returns what
    run_script returns (returncode: 0 when main returned, 2 for a user error; anything else raises,
    traceback and all)."""
    import contextlib
    import io
    from tools.one_process import call
    out, err, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            call(script, [str(a) for a in argv])
        except SystemExit as e:
            code = e.code
    return subprocess.CompletedProcess([script, *argv], code, out.getvalue(), err.getvalue())


def write_pool(run, name, masks, fid, train_seconds):
    """A pool of a synthetic run folder, as the pipeline leaves it: masks/<name>.npy and behaviors/<name>.npz
    (planted FIDs, one model per row)."""
    import numpy as np
    import data
    runfolder.make(run)
    np.save(runfolder.masks(run, name), masks)
    m = len(masks)
    np.savez(runfolder.behaviors(run, name), index=np.arange(m), fid=fid, seconds=np.ones(m),
             mask_sha256=np.array([data.row_sha256(r) for r in masks]), train_seconds=np.full(m, train_seconds))


def load_bench(name):
    """bench/NAME.py as a module (bench/ is a folder of scripts, not a package)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(f"bench_{name}", os.path.join(ROOT, "bench", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pipeline(preset, run, **env):
    """`bash run_pipeline.sh PRESET` with RUN=run and the given settings, started in its own process group. BANK=0
    unless a test sets it: the stages a test expects must not change as a preset's committed bank fills
    (tests/test_bank.py tests the banks' use)."""
    e = dict(os.environ, RUN=str(run), PYTHON=sys.executable, TQDM_DISABLE="1", BANK="0", REPEATS="1")
    e.update({k: str(v) for k, v in env.items()})
    return subprocess.Popen(["bash", "run_pipeline.sh", preset], cwd=ROOT, env=e, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def dry_run_calls(out):
    """The script calls a dry run (`PYTHON=echo bash run_pipeline.sh`) printed, each as its words ['x.py', ...]: the
    calls tools/one_process.py runs in one process (separated by ::) one by one; the settings' check that precedes
    the stages (`-m tools.one_process --check ...`, which runs nothing) and the stage headers left out."""
    calls = []
    for line in out.splitlines():
        words = line.split()
        if words[:3] == ["-m", "tools.one_process", "--check"]:
            continue
        if words[:2] == ["-m", "tools.one_process"]:
            calls += [c.split() for c in " ".join(words[2:]).split(" :: ")]
        elif words and words[0].endswith(".py"):
            calls.append(words)
    return calls


def shared_folder(tmp_path_factory, worker_id):
    """The temporary folder all pytest-xdist workers of this session see (each worker's own is below it)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if worker_id != "master" else base


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory, worker_id):
    """One local run of the quick preset for the whole session, shared by the pytest-xdist workers: the
    first worker to ask makes it under a file lock (filelock comes with torch), the others wait for it
    and read it. Returns (run folder, its log)."""
    from filelock import FileLock
    shared = shared_folder(tmp_path_factory, worker_id)
    run, log = shared / "quick-shared" / "quick", shared / "quick-shared" / "log.txt"
    with FileLock(str(shared / "quick-shared.lock")):
        if not (runfolder.report(run)).exists():
            p = pipeline("quick", run, JOBS=1)  # one process a per-row stage: the other worker has the other core
            out, _ = p.communicate(timeout=900)
            assert p.returncode == 0, out[-3000:]
            log.write_text(out)
    return run, log.read_text()


@pytest.fixture(scope="session")
def fid_cnn(tmp_path_factory, worker_id):
    """compute_fid's digits feature network, trained once for the session (seeded, a function of the data
    only; ~9 s on one core) under a file lock the pytest-xdist workers share. Returns seed(folder), which
    copies it into a cache folder: compute_fid then loads it instead of training it again
    (test_the_feature_network_is_seeded checks that a training repeats to the bit)."""
    import shutil
    import data
    import features
    shared = shared_folder(tmp_path_factory, worker_id) / "fid-cnn-shared"
    features.cnn_extractor(data.load_dataset("digits"), str(shared), 0, "cpu")  # trains under its own file lock

    def seed(folder):
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy2(runfolder.feature_network(shared, "digits")[0], runfolder.feature_network(folder, "digits")[0])
        return folder
    return seed


def copy_stages_1_to_5(reference, run):
    """A run folder holding copies of a finished run's stage 1-5 outputs (deterministic, so a rerun skips
    them) and of compute_fid's FID feature network and reference statistics (seeded, functions of the data
    only; not the per-model statistics): a resumption test then starts in stage 6 at half the cost."""
    import shutil
    paths = [runfolder.checkpoint(reference, "full"), runfolder.checkpoint(reference, "pruned"),
             runfolder.corrupted(reference), runfolder.masks(reference, "x").parent] + \
        [runfolder.models(reference, pool) for pool in ("unlearn", "retrain", "retrain_seed1")]
    paths += [f for f in reference.iterdir() if runfolder.is_reference_cache(f.name)]
    for path in paths:
        target = run / path.relative_to(reference)
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if path.is_dir() else shutil.copy2)(path, target)


def wait_for_a_ground_truth_model(run, timeout):
    """Poll until the first LDS model of a running pipeline is written (or timeout seconds pass)."""
    import time
    lds_models, deadline = runfolder.models(run, "lds"), time.time() + timeout
    while time.time() < deadline and not (lds_models.exists() and any(f.name.endswith("-s0.pt") and f.name[0] != "."
                                                                      for f in lds_models.iterdir())):
        time.sleep(0.2)


def run_script(*args, cwd=ROOT, env=None):
    """Run one of the project's scripts as a user would; returns the CompletedProcess."""
    e = dict(os.environ, TQDM_DISABLE="1", **(env or {}))
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, env=e)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A tiny trained digits model, a structured-pruned copy and a mask file, made once."""
    d = tmp_path_factory.mktemp("tiny")
    full, pruned, masks = runfolder.checkpoint(d, "full"), runfolder.checkpoint(d, "pruned"), runfolder.masks(d, "unlearn")
    for args in (["train_ddpm", "--out", full, "--steps", "30", "--batch-size", "16", "--grid", "4",
                  "--ddim-steps", "5"],
                 ["prune", "--ckpt", full, "--out", pruned, "--steps", "5", "--batch-size", "16", "--grid", "0"],
                 ["make_subsets", "--count", "4", "--seed", "1", "--out", masks]):
        r = run_cli(*args)
        assert r.returncode == 0, r.stderr
    return dict(dir=d, full=full, pruned=pruned, masks=masks)


def tiny_contributor_run(run, recipe=None):
    """A run folder of 60 digits in 6 contributors (the first, 10 images of noise: d.npz) with a tiny untrained full
    model (recording `recipe` as its training arguments), two leave-one-out models, 4 unlearning coalitions
    (masks/unlearn.npy) and the full model's behaviours file (fid and precision of 12 samples, DDIM-3, cnn features).
    Returns run."""
    import json
    import numpy as np
    import data
    import ddpm
    import runfolder
    from train_ddpm import new_state, state_to_checkpoint
    ds = data.load_dataset("digits")
    images = ds.images[:60].copy()
    images[:10] = np.random.default_rng(0).integers(0, 256, (10, 1, 8, 8), dtype=np.uint8)
    np.savez(run / "d.npz", images=images, labels=ds.labels[:60], corrupted=np.arange(10))
    model = ddpm.UNet(**TINY)
    runfolder.make(run)
    ddpm.save_checkpoint(runfolder.checkpoint(run, "full"), state_to_checkpoint(
        new_state(model, lr=1e-3, seed=0, device="cpu"), schedule=ddpm.Schedule(), args=recipe or {}))
    runfolder.models(run, "loo").mkdir()  # two leave-one-out retrainings: TRAK's ensemble of 3 takes them
    for i in range(2):
        ddpm.save_checkpoint(runfolder.models(run, "loo") / f"{i:05d}.pt", state_to_checkpoint(
            new_state(ddpm.UNet(**TINY), lr=1e-3, seed=1 + i, device="cpu"), schedule=ddpm.Schedule(), args={},
            train_macs=1e12))  # (as if trained: an ensemble that takes them is charged their training)
    np.save(runfolder.masks(run, "unlearn"), data.make_masks(6, 4, 0.5, seed=0))
    np.save(runfolder.groups(run), np.arange(60) // 10)
    np.savez(runfolder.behaviors(run, "full"), index=np.array([-1]), mask_sha256=np.array([""]), fid=np.array([50.0]),
             precision=np.array([0.5]), n_samples=12, ddim_steps=3, features="cnn",
             behaviors=json.dumps(["fid", "precision"]),
             behavior_table=json.dumps({"fid": {"better": "lower"}, "precision": {"better": "higher"}}))
    return run

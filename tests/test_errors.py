"""Bad input, one class per row: exit code 2, exactly one line on stderr, nothing written or overwritten.

The scripts run in this process, through the same `data.run(main, parse_args(argv))` as their
`__main__` (tests/test_pipeline.py runs them as real processes), so each row costs milliseconds, and a
class that ends in a traceback fails the test with that traceback."""
import os

import numpy as np
import pytest
import torch

import data
import runfolder
import ddpm
from conftest import TINY, run_cli

SENTINEL = b"do not overwrite me"
N = 1797  # digits


def tiny_checkpoint(path, pruned=False):
    from train_ddpm import new_state, state_to_checkpoint
    model = ddpm.UNet(**TINY)
    if pruned:
        import prune
        prune.prune_structured(model, 0.3)
    state = new_state(model, lr=1e-3, seed=0, device="cpu")
    ddpm.save_checkpoint(path, state_to_checkpoint(state, schedule=ddpm.Schedule(), args={}))


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    """Every malformed input of the table below, made once."""
    d = tmp_path_factory.mktemp("bad")
    np.savez(d / "float.npz", images=np.zeros((4, 8, 8, 3), dtype=np.float32))
    np.savez(d / "3d.npz", images=np.zeros((4, 8, 8), dtype=np.uint8))
    np.savez(d / "5ch.npz", images=np.zeros((4, 8, 8, 5), dtype=np.uint8))
    np.savez(d / "nonsquare.npz", images=np.zeros((4, 3, 8, 6), dtype=np.uint8))
    np.savez(d / "labels.npz", images=np.zeros((4, 8, 8, 1), dtype=np.uint8), labels=np.arange(3))
    (d / "garbage.npz").write_bytes(b"not an npz file")
    np.savez(d / "rgb.npz", images=np.zeros((4, 8, 8, 3), dtype=np.uint8))
    np.savez(d / "bad_known.npz", images=np.zeros((4, 8, 8, 1), dtype=np.uint8), corrupted=np.array([1, 9]))
    (d / "folder").mkdir()
    from PIL import Image
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(d / "folder" / "a.png")
    (d / "folder" / "b.png").write_bytes(b"not a png")
    masks = data.make_masks(N, 3, 0.5, seed=0)
    np.save(d / "masks.npy", masks)
    np.save(d / "narrow.npy", np.ones((3, 100), dtype=bool))
    np.save(d / "int.npy", masks.astype(np.int64))
    np.savez(d / "masks_npz.npz", masks=masks)
    np.save(d / "empty.npy", np.zeros((0, N), dtype=bool))
    np.save(d / "neg_groups.npy", -1 - np.arange(N) % 5)
    (d / "garbage.pt").write_bytes(b"not a checkpoint")
    torch.save({"weights": torch.zeros(3)}, d / "foreign.pt")
    tiny_checkpoint(d / "misfit.pt")
    misfit = torch.load(d / "misfit.pt", weights_only=True)
    misfit["config"]["ch"] = 16  # weights of an 8-channel model under a 16-channel config
    torch.save(misfit, d / "misfit.pt")
    tiny_checkpoint(runfolder.checkpoint(d, "full"))
    tiny_checkpoint(runfolder.checkpoint(d, "pruned"), pruned=True)
    for row, method in ((0, "gd"), (1, "neggrad")):  # a pool whose rows were unlearned by two methods
        r = run_cli("unlearn", "--ckpt", runfolder.checkpoint(d, "pruned"), "--masks", d / "masks.npy", "--indices", f"{row}:{row + 1}",
                    "--steps", "1", "--batch-size", "2", "--method", method, "--out", d / "mixed")
        assert r.returncode == 0, r.stderr
    (d / "no_models").mkdir()
    from conftest import write_pool  # a run folder whose pools are fine but that has no untrained model
    for name in ("unlearn", "retrain", "lds"):
        write_pool(d / "shapley_run", name, masks, np.array([10.0, 11.0, 12.0]), 1.0)
        write_pool(d / "garbage_beh_run", name, masks, np.array([10.0, 11.0, 12.0]), 1.0)
    runfolder.behaviors(d / "garbage_beh_run", "full").write_bytes(b"not a behaviours file")
    for name in ("unlearn", "retrain", "lds"):  # a run whose full model's behaviours exist (baselines.py reads them)
        write_pool(d / "baseline_run", name, masks, np.array([10.0, 11.0, 12.0]), 1.0)
    sha = np.array([data.row_sha256(r) for r in masks])
    good = dict(index=np.arange(3), mask_sha256=sha, fid=np.array([10.0, 11.0, 12.0]),
                class_hist=np.ones((3, 10), dtype=np.int64), seconds=np.ones(3), train_seconds=np.ones(3))
    np.savez(d / "beh_nan.npz", **dict(good, fid=np.array([10.0, np.nan, 12.0])))
    np.savez(d / "beh_short.npz", **dict(good, fid=np.array([10.0, 11.0])))
    np.savez(d / "beh_rows.npz", **dict(good, index=np.array([0, 1, 5])))
    np.savez(d / "beh_hist.npz", **dict(good, class_hist=np.zeros((3, 10), dtype=np.int64)))
    np.savez(d / "beh.npz", **good)
    np.savez(runfolder.behaviors(d / "baseline_run", "full"), **good)
    np.savez(d / "att_nan.npz", scores=np.full(N, np.nan), intercept=0.0, behavior="fid")
    np.savez(d / "att_narrow.npz", scores=np.zeros(10), intercept=0.0, behavior="fid")
    return d


OUT = "{out}"  # an existing file holding SENTINEL, or (for folder outputs) a path that must stay absent

CASES = [
    # (class, script, arguments; "@name" is a file of the `bad` fixture, words expected in the message)
    ("unknown dataset", "train_ddpm", ["--data", "mnist", "--out", OUT], "unknown dataset 'mnist'"),
    ("unknown fault", "train_ddpm", ["--corrupt", "0.1", "--fault", "noise,smudge", "--out", OUT], "unknown fault smudge"),
    ("one-class fault of data without labels", "train_ddpm", ["--data", "npz:@rgb.npz", "--corrupt", "0.5", "--fault",
                                                              "one-class", "--out", OUT], "needs a dataset with labels"),
    ("untrained model of a mask row", "train_ddpm", ["--init-only", "--masks", "@masks.npy", "--index", "0",
                                                      "--out", OUT], "--init-only writes one untrained model"),
    ("npz images not uint8", "train_ddpm", ["--data", "npz:@float.npz", "--out", OUT], "must be uint8"),
    ("npz images not 4-d", "train_ddpm", ["--data", "npz:@3d.npz", "--out", OUT], "must be (N, H, W, C)"),
    ("npz images with 5 channels", "train_ddpm", ["--data", "npz:@5ch.npz", "--out", OUT], "1 or 3 channels"),
    ("npz images not square", "train_ddpm", ["--data", "npz:@nonsquare.npz", "--out", OUT], "square"),
    ("npz labels of another length", "train_ddpm", ["--data", "npz:@labels.npz", "--out", OUT], "labels must have"),
    ("npz known-bad index out of range", "train_ddpm", ["--data", "npz:@bad_known.npz", "--out", OUT],
     "'corrupted' must be a 1-d array of image indices"),
    ("npz file that is not an npz", "train_ddpm", ["--data", "npz:@garbage.npz", "--out", OUT], "cannot read"),
    ("npz file missing", "train_ddpm", ["--data", "npz:@missing.npz", "--out", OUT], "not found"),
    ("image folder with a non-image", "train_ddpm", ["--data", "folder:@folder", "--out", OUT], "not a readable image"),
    ("steps not positive", "train_ddpm", ["--steps", "0", "--out", OUT], "--steps: must be a positive integer"),
    ("steps not a number", "train_ddpm", ["--steps", "ten", "--out", OUT], "'ten' is not an integer"),
    ("batch size negative", "train_ddpm", ["--batch-size", "-4", "--out", OUT], "--batch-size: must be a positive"),
    ("learning rate not finite", "train_ddpm", ["--lr", "nan", "--out", OUT], "--lr: must be a positive number"),
    ("EMA decay above 1", "train_ddpm", ["--ema-decay", "1.5", "--out", OUT], "--ema-decay: must be in [0, 1)"),
    ("corrupt fraction of 1", "train_ddpm", ["--corrupt", "1", "--out", OUT], "--corrupt: must be in [0, 1)"),
    ("DDIM steps above T", "train_ddpm", ["--ddim-steps", "5000", "--out", OUT], "must lie in 1..1000"),
    ("unknown device", "train_ddpm", ["--device", "tpu9", "--out", OUT], "unknown device 'tpu9'"),
    ("unknown architecture", "train_ddpm", ["--arch", "resnet", "--out", OUT], "invalid choice: 'resnet'"),
    ("index without masks", "train_ddpm", ["--index", "0", "--out", OUT], "need --masks"),
    ("mask row out of range", "train_ddpm", ["--masks", "@masks.npy", "--index", "3", "--out", OUT], "out of range"),
    ("mask width not N", "train_ddpm", ["--masks", "@narrow.npy", "--index", "0", "--out", OUT], "width 100"),
    ("mask file of ints", "unlearn", ["--ckpt", "@pruned.pt", "--masks", "@int.npy", "--out", OUT], "2-d bool"),
    ("mask file that is an npz", "unlearn", ["--ckpt", "@pruned.pt", "--masks", "@masks_npz.npz", "--out", OUT],
     "is not a mask file"),
    ("mask file with no rows", "unlearn", ["--ckpt", "@pruned.pt", "--masks", "@empty.npy", "--out", OUT], "no rows"),
    ("row range reversed", "unlearn", ["--ckpt", "@pruned.pt", "--masks", "@masks.npy", "--indices", "2:1",
                                        "--out", OUT], "outside the mask file's rows"),
    ("row range not numbers", "unlearn", ["--ckpt", "@pruned.pt", "--masks", "@masks.npy", "--indices", "a:b",
                                           "--out", OUT], "bad range 'a:b'"),
    ("unlearning steps zero", "unlearn", ["--ckpt", "@pruned.pt", "--masks", "@masks.npy", "--steps", "0",
                                          "--out", OUT], "--steps: must be a positive integer"),
    ("checkpoint unreadable", "prune", ["--ckpt", "@garbage.pt", "--out", OUT], "cannot read checkpoint"),
    ("checkpoint missing", "prune", ["--ckpt", "@missing.pt", "--out", OUT], "checkpoint not found"),
    ("checkpoint of something else", "prune", ["--ckpt", "@foreign.pt", "--out", OUT], "not a checkpoint of this"),
    ("prune ratio above 1", "prune", ["--ckpt", "@full.pt", "--ratio", "1.5", "--out", OUT], "--ratio: must be in (0, 1)"),
    ("prune a pruned model", "prune", ["--ckpt", "@pruned.pt", "--out", OUT], "already pruned"),
    ("checkpoint weights not fitting its config", "prune", ["--ckpt", "@misfit.pt", "--out", OUT],
     "do not fit its config"),
    ("subset count zero", "make_subsets", ["--count", "0", "--out", OUT], "--count: must be a positive integer"),
    ("subset alpha of 1.5", "make_subsets", ["--count", "2", "--alpha", "1.5", "--out", OUT], "--alpha: must be in"),
    ("subset alpha neither a number nor shapley", "make_subsets", ["--count", "2", "--alpha", "kernel", "--out", OUT],
     "'kernel' is not a number"),
    ("contributor ids negative", "make_subsets", ["--groups", "@neg_groups.npy", "--count", "2", "--out", OUT],
     "contributor ids must be non-negative integers, found -5"),
    ("no subset count", "make_subsets", ["--out", OUT], "--count is required"),
    ("more leave-one-out rows than images", "make_subsets", ["--alpha", "loo", "--count", "5000", "--out", OUT],
     "exceeds the 1797 leave-one-out rows"),
    ("unknown baseline", "baselines", ["--run", "@baseline_run", "--only", "loss,clip"], "unknown baseline clip"),
    ("leave-one-out without its retrainings", "baselines", ["--run", "@baseline_run", "--only", "loo"], "loo needs"),
    ("baselines of a run without its full model's behaviours", "baselines", ["--run", "@shapley_run"],
     "behaviours file not found"),
    ("more rows than the source", "make_subsets", ["--count", "9", "--first-of", "@masks.npy", "--out", OUT],
     "exceeds the 3 rows"),
    ("zero samples", "compute_fid", ["--models", "@full.pt", "--n-samples", "0", "--out", OUT], "--n-samples: must be at"),
    ("one sample", "compute_fid", ["--models", "@full.pt", "--n-samples", "1", "--out", OUT], "--n-samples: must be at"),
    ("zero DDIM steps", "compute_fid", ["--models", "@full.pt", "--ddim-steps", "0", "--out", OUT], "--ddim-steps: must"),
    ("reference data of another shape", "compute_fid", ["--models", "@full.pt", "--ref-data", "npz:@rgb.npz",
                                                        "--out", OUT], "--ref-data"),
    ("one reference image", "compute_fid", ["--models", "@full.pt", "--n-ref", "1", "--out", OUT], "--n-ref must be 0"),
    ("folder without checkpoints", "compute_fid", ["--models", "@no_models", "--out", OUT], "no checkpoints named"),
    ("behaviours with a NaN", "fit_datamodel", ["--masks", "@masks.npy", "--behaviors", "@beh_nan.npz", "--out", OUT],
     "'fid' must be finite"),
    ("a behaviour the file does not have", "fit_datamodel", ["--masks", "@masks.npy", "--behaviors", "@beh.npz",
                                                             "--behavior", "loss", "--out", OUT],
     "unknown behaviour 'loss': this file has fid, class:K"),
    ("unknown behaviour to compute", "compute_fid", ["--models", "@full.pt", "--behaviors", "fid,beauty", "--out", OUT],
     "unknown behaviour beauty"),
    ("a pool of two unlearning methods", "compute_fid", ["--models", "@mixed", "--masks", "@masks.npy", "--out", OUT],
     "mixes models made by different methods (gd: 00000.pt, neggrad: 00001.pt)"),
    ("headline behaviour the run lacks", "eval_lds", ["--run", "@shapley_run", "--headline", "loss"],
     "headline behaviour 'loss' is not in every pool's behaviours"),
    ("gd from an unpruned model", "unlearn", ["--ckpt", "@full.pt", "--masks", "@masks.npy", "--out", OUT],
     "--method gd starts from a pruned model"),
    ("gd-full from a pruned model", "unlearn", ["--ckpt", "@pruned.pt", "--masks", "@masks.npy", "--method", "gd-full",
                                                "--out", OUT], "--method gd-full starts from the unpruned model"),
    ("unknown unlearning method", "unlearn", ["--ckpt", "@pruned.pt", "--masks", "@masks.npy", "--method", "forget",
                                              "--out", OUT], "invalid choice: 'forget'"),
    ("behaviours of unequal lengths", "fit_datamodel", ["--masks", "@masks.npy", "--behaviors", "@beh_short.npz",
                                                        "--out", OUT], "'fid' has 2 entries but 'index' has 3"),
    ("behaviours of more rows than masks", "fit_datamodel", ["--masks", "@masks.npy", "--behaviors", "@beh_rows.npz",
                                                             "--out", OUT], "outside the 3 rows"),
    ("empty class histograms", "fit_datamodel", ["--masks", "@masks.npy", "--behaviors", "@beh_hist.npz",
                                                 "--out", OUT], "at least one sample"),
    ("behaviours file of another kind", "fit_datamodel", ["--masks", "@masks.npy", "--behaviors", "@att_nan.npz",
                                                          "--out", OUT], "is not a behaviours file"),
    ("behaviours file missing", "fit_datamodel", ["--masks", "@masks.npy", "--behaviors", "@missing.npz",
                                                  "--out", OUT], "behaviours file not found"),
    ("class behaviour not a number", "fit_datamodel", ["--masks", "@masks.npy", "--behaviors", "@beh.npz",
                                                       "--behavior", "class:x", "--out", OUT], "bad behaviour"),
    ("shapley without v(empty)", "fit_datamodel", ["--masks", "@masks.npy", "--behaviors", "@beh.npz", "--method",
                                                   "shapley", "--out", OUT], "shapley needs v(empty)"),
    ("v(empty) from a behaviours file of several models", "fit_datamodel", ["--masks", "@masks.npy", "--behaviors",
     "@beh.npz", "--method", "shapley", "--v-empty", "@beh.npz", "--v-full", "1", "--out", OUT], "one model, not 3"),
    ("v(full) not finite", "fit_datamodel", ["--masks", "@masks.npy", "--behaviors", "@beh.npz", "--method", "shapley",
                                              "--v-full", "inf", "--out", OUT], "not a finite number"),
    ("one CV fold", "fit_datamodel", ["--masks", "@masks.npy", "--behaviors", "@beh.npz", "--folds", "1",
                                      "--out", OUT], "--folds: must be at least 2"),
    ("budgets not numbers", "eval_lds", ["--run", "@no_models", "--budgets", "a,b"], "comma-separated"),
    ("budget negative", "eval_lds", ["--run", "@no_models", "--budgets", "-1"], "positive number"),
    ("run folder missing", "eval_lds", ["--run", "@missing_run"], "run folder not found"),
    ("shapley run without an untrained model", "eval_lds", ["--run", "@shapley_run", "--method", "shapley"],
     "needs"),
    ("run folder with an unreadable behaviours file", "eval_lds", ["--run", "@garbage_beh_run"],
     "cannot read behaviours file"),
    ("report of an unknown dataset", "eval_lds", ["--run", "@shapley_run", "--data", "mnist"], "unknown dataset"),
    ("attributions not finite", "eval_lds", ["--attributions", "@att_nan.npz", "--masks", "@masks.npy",
                                             "--behaviors", "@beh.npz"], "scores must be finite"),
    ("attributions of another width", "eval_lds", ["--attributions", "@att_narrow.npz", "--masks", "@masks.npy",
                                                   "--behaviors", "@beh.npz"], "has width 1797"),
]
FOLDER_OUTPUT = {"unlearn"}  # --out is a folder of per-row checkpoints
HAS_FORCE = {"train_ddpm", "prune", "make_subsets", "unlearn", "compute_fid", "baselines"}


@pytest.mark.parametrize("name, script, args, words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_with_one_line(bad, tmp_path, capfd, name, script, args, words):
    out = tmp_path / "out"
    if script not in FOLDER_OUTPUT:
        out.write_bytes(SENTINEL)
    argv = [str(out) if a == OUT else a.replace("@", f"{bad}/") for a in args]
    if script in HAS_FORCE:
        argv.append("--force")  # even when told to redo, bad input overwrites nothing
    run = bad / args[args.index("--run") + 1][1:] if "--run" in args else None
    before = sorted(run.rglob("*")) if run and run.exists() else None
    r = run_cli(script, *argv)
    code, stderr = r.returncode, r.stderr + capfd.readouterr().err
    lines = stderr.strip().splitlines()
    assert code == 2, (code, stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert words in lines[0], lines[0]
    if script in FOLDER_OUTPUT:
        assert not out.exists()
    else:
        assert out.read_bytes() == SENTINEL
    if before is not None:  # eval_lds writes into the run folder: nothing there either
        assert sorted(run.rglob("*")) == before


def test_the_table_covers_at_least_20_classes_across_the_scripts():
    assert len({c[0] for c in CASES}) == len(CASES) >= 20
    assert {c[1] for c in CASES} == {"train_ddpm", "prune", "make_subsets", "unlearn", "compute_fid", "fit_datamodel",
                                     "eval_lds", "baselines"}


def test_a_script_run_as_a_process_refuses_the_same_way(tmp_path):
    """The real __main__ path, once per kind of refusal (argparse's and the scripts' own)."""
    from conftest import run_script
    out = tmp_path / "out.pt"
    out.write_bytes(SENTINEL)
    for args, words in ((["--steps", "0"], "--steps: must be a positive integer"),
                        (["--data", "mnist"], "unknown dataset")):
        r = run_script("train_ddpm.py", *args, "--out", str(out), "--force")
        assert r.returncode == 2 and r.stderr.strip().splitlines() == [r.stderr.strip()], r.stderr
        assert words in r.stderr and out.read_bytes() == SENTINEL


def test_a_full_disk_ends_in_one_line_and_leaves_nothing_half_written(tmp_path, monkeypatch):
    """What a full disk does, as seen on a 512 KB tmpfs: np.save raises OSError(ENOSPC) after writing part of the
    file, torch.save's zip writer RuntimeError('[enforce fail at inline_container.cc:672] . unexpected pos 576 vs
    534'). Each ends with one error line and exit 2, no temporary file is left, the previous output is untouched."""
    import errno
    import shutil
    from collections import namedtuple

    def full_numpy(f, *a, **k):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    def full_torch(obj, f, *a, **k):
        with open(f, "wb") as out:
            out.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(1 << 19, 1 << 19, 0))
    for script, args, patch in (("make_subsets", ["--count", "2"], (np, "save", full_numpy)),
                                ("train_ddpm", ["--steps", "1", "--batch-size", "2", "--grid", "0"],
                                 (torch, "save", full_torch))):
        out = tmp_path / script / "out"
        out.parent.mkdir()
        out.write_bytes(SENTINEL)
        with monkeypatch.context() as m:
            m.setattr(*patch)
            r = run_cli(script, *args, "--out", out, "--force")
        assert r.returncode == 2 and r.stderr.strip().splitlines() == [r.stderr.strip()], r.stderr
        assert r.stderr.startswith(f"error: cannot write {out}: ") and \
            ("No space left on device" in r.stderr or "no space left on device" in r.stderr), r.stderr
        assert out.read_bytes() == SENTINEL and sorted(p.name for p in out.parent.iterdir()) == ["out"]


@pytest.mark.parametrize("bench, extra", [("counterfactual", []), ("recipe", []), ("sampler", []),
                                          ("sampler_lds", ["--ddim", "50"]), ("unlearn_fidelity", []),
                                          ("behaviour_noise", []), ("cost", [])])
def test_a_bench_pointed_at_a_missing_or_unfinished_run_says_so_in_one_line(bench, extra, tmp_path, capsys):
    """The benches refuse bad input as the scripts do: one error line on stderr, exit code 2, no traceback."""
    from conftest import load_bench
    from data import run
    module = load_bench(bench)
    for folder in (tmp_path / "nowhere", tmp_path):  # missing; a folder that holds no run
        with pytest.raises(SystemExit) as e:
            run(module.main, module.parse_args(["--run", str(folder), *extra]))
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
        assert ("run folder not found" if folder.name == "nowhere" else "is not a finished run") in err


def test_every_script_and_bench_prints_its_help(capsys):
    """--help of every script and bench prints its description and exits 0: argparse formats help strings with %, so
    a help text built from a registry (a fault's '25% of the pixels') must escape it, or --help raises instead."""
    import glob
    from conftest import ROOT, load_bench
    from tools.one_process import SCRIPTS
    for script in SCRIPTS:
        r = run_cli(script, "--help")
        assert r.returncode == 0 and "usage:" in r.stdout and "--help" in r.stdout, (script, r.stderr[-500:])
    benches = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "bench", "*.py")))
    for name in [b for b in benches if b != "__init__"]:
        with pytest.raises(SystemExit) as e:
            load_bench(name).parse_args(["--help"])
        assert e.value.code == 0 and "usage:" in capsys.readouterr().out, name

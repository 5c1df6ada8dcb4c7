"""The run folder: where run_pipeline.sh's stages put their files, and the readers of those files. Every script,
bench and test names a run's files through this module (and nowhere else):

    RUN/full.pt, pruned.pt, untrained.pt   the full model, the pruned one, the untrained one (v(empty) of Shapley)
    RUN/corrupted.npy                      which training images carry a planted fault (make_subsets.py)
    RUN/masks/POOL.npy                     a pool's subsets, one row each (pools: unlearn, retrain, lds, loo);
    RUN/masks/groups.npy                   at the contributor level, each image's contributor
    RUN/models/FOLDER/NNNNN[-sS].pt        one model per mask row (and training seed)
    RUN/behaviors/NAME.npz                 compute_fid.py's behaviours of a pool's models, or of one model
    RUN/attributions/NAME.npz              fit_datamodel.py's scores of a pool; baseline-NAME.npz of baselines.py
    RUN/report.md, results.json, figures/  eval_lds.py's report
    RUN/logs/                              the pipeline's logs (Slurm jobs, failures)

A mask file's groups.npy lies beside it, so a mask file outside a run (make_subsets.py --out x/m.npy) works too.
numpy only: reading a run does not import torch.
"""
import json
import os
import re
from pathlib import Path

import numpy as np

from data import DataError, load_array, row_sha256

POOLS = ("unlearn", "retrain", "lds", "loo")  # the pools of models, each one mask file and one models folder
MODELS = ("full", "pruned", "untrained")  # the run's single models


def _join(run, *parts):
    """os.path.join, but a pathlib.Path in gives a Path out (the tests build runs with pathlib)."""
    return Path(run).joinpath(*parts) if isinstance(run, Path) else os.path.join(run, *parts)


def checkpoint(run, name):
    """RUN/full.pt, pruned.pt, untrained.pt or proxy.pt (proxy_game.py's contributor-conditioned model)."""
    return _join(run, f"{name}.pt")


def masks(run, pool):
    return _join(run, "masks", f"{pool}.npy")


def models(run, folder):
    """The folder of a pool's models (or of a second seed's: retrain_seed1, lds_ceiling)."""
    return _join(run, "models", folder)


def behaviors(run, name):
    """The behaviours file of a pool or of one model (full, pruned, untrained, quality, fid2, lds_ceiling, ...)."""
    return _join(run, "behaviors", f"{name}.npz")


def attributions_dir(run):
    return _join(run, "attributions")


def attributions(run, name):
    return _join(attributions_dir(run), f"{name}.npz")


def baseline(run, name):
    """baselines.py's scores of the baseline NAME."""
    return attributions(run, f"baseline-{name}")


def baseline_name(path):
    """NAME of an attributions/baseline-NAME.npz path, or None for another file."""
    file = os.path.basename(path)
    return file[len("baseline-"):-len(".npz")] if file.startswith("baseline-") and file.endswith(".npz") else None


def grid(run, name):
    """The PNG grid of samples train_ddpm.py / prune.py write beside full.pt / pruned.pt."""
    return _join(run, f"{name}.png")


def bench_file(run, name):
    """A file a bench keeps in the run it measures (e.g. counterfactual.json)."""
    return _join(run, name)


def trained(run):
    """(what training made: the models folder, the single models and their grids; what the masks stage made): what a
    copy of a run that measures its models again shares with it (linked, copied)."""
    linked = [_join(run, "models")] + [checkpoint(run, n) for n in MODELS] + [grid(run, n) for n in ("full", "pruned")]
    return linked, [_join(run, "masks"), corrupted(run)]


def corrupted(run):
    return _join(run, "corrupted.npy")


def groups_beside(masks_path):
    """groups.npy beside a mask file."""
    return _join(type(masks_path)(os.path.dirname(os.path.abspath(masks_path))), "groups.npy")


def groups(run):
    """The run's contributors (beside its mask files)."""
    return groups_beside(masks(run, "unlearn"))


def make(run):
    """The run's folders, created (as run_pipeline.sh creates them)."""
    for folder in ("masks", "models", "behaviors", "attributions", "logs"):
        os.makedirs(_join(run, folder), exist_ok=True)
    return run


def report(run):
    return _join(run, "report.md")


def results(run):
    return _join(run, "results.json")


def predictions(run):
    """Each method's predictions of the held-out subsets' headline behaviour (D draws x K), and that behaviour:
    what combine.py pools over repetitions."""
    return _join(run, "predictions.npz")


def verdicts(run):
    """Each contributor's (or image's) score, interval and verdict, most harmful first: the table a user takes next."""
    return _join(run, "verdicts.csv")


def figures(run, name=""):
    return _join(run, "figures", name)


def logs(run, name=""):
    return _join(run, "logs", name)


def run_of(behaviors_path):
    """The run folder a behaviours file lies in (RUN/behaviors/NAME.npz): compute_fid.py's cache by default."""
    return os.path.dirname(os.path.dirname(os.path.abspath(behaviors_path)))


# compute_fid.py's cache (the run folder, or --cache): the feature network, the reference statistics and, per model
# and settings, its behaviours (a killed run resumes model by model; FID2 reuses the pools' samples)

def feature_network(cache, data):
    """The digits CNN trained on the data named `data` (and its lock file)."""
    return _join(cache, f"fid_cnn_{data}.pt"), _join(cache, f".fid_cnn_{data}.lock")


def reference_cache(cache, what, *key):
    """Statistics of a reference set: what = ref (the Gaussian fit), floor (two halves), matched (at a sample size)
    or knn (features, radii, KID term); key: feature network, reference set, sizes."""
    prefix = "knn_ref" if what == "knn" else f"fid_{what}"
    return _join(cache, "_".join([prefix, *map(str, key)]) + ".npz")


def is_reference_cache(name):
    """Whether a file name of a run folder is compute_fid.py's feature network or reference statistics (the same for
    every model and sampler: a copy of the run can share them)."""
    return name.startswith(("fid_", "knn_"))


def stats(cache):
    """The per-model behaviours cache."""
    return _join(cache, "stats")


def relative(run, path):
    """A path inside the run, relative to it (what a run's files record of other files of the run)."""
    return os.path.relpath(path, run)


def headline(wanted, keys):
    """The behaviour a run leads with (run_pipeline.sh's HEADLINE, eval_lds.py's and baselines.py's --headline,
    fit_datamodel.py's --behavior): `wanted`, or for auto FID when it was computed, else the first of `keys` that is
    not a class share (None when there is none)."""
    if wanted != "auto":
        return wanted
    keys = [k for k in keys if not k.startswith("class")]
    return "fid" if "fid" in keys else keys[0] if keys else None


def check_behavior_key(key, what):
    """`key` when a run can measure it (a key of compute_fid's registry, metrics.BEHAVIORS; class:K; or auto), else a
    DataError in one line: the check of a --headline or --behavior before any behaviours file exists."""
    from metrics import BEHAVIORS  # imports torch: only a check's process (tools/one_process.py --check) pays for it
    base = key.split("@")[0]  # kid@REF: a behaviour against another reference set
    if key == "auto" or (base in BEHAVIORS and base != "class") or re.fullmatch(r"class:\d+", base):
        return key
    raise DataError(f"{what}: unknown behaviour {key!r}: use auto, class:K or one of "
                    f"{', '.join(k for k in BEHAVIORS if k != 'class')}")


def finished_run(path, *needed):
    """The run folder `path`, refused with one clear line (a DataError) when it or a file it must hold is missing:
    the benches read finished runs."""
    if not os.path.isdir(path):
        raise DataError(f"run folder not found: {path} (make it with bash run_pipeline.sh PRESET, or give --run)")
    missing = [relative(path, f) for f in needed if not os.path.exists(f)]
    if missing:
        raise DataError(f"{path} is not a finished run: {', '.join(missing)} missing (bash run_pipeline.sh finishes it)")
    return path


def load_groups(masks_path, n=None):
    """The contributor 0..G-1 of each training image, from groups.npy beside a mask file (a
    contributor-level run: its mask files choose contributors); None for a per-image run."""
    path = groups_beside(masks_path)
    if not os.path.exists(path):
        return None
    groups = load_array(path, "groups file")
    if groups.ndim != 1 or groups.dtype.kind not in "iu" or not len(groups):
        raise DataError(f"{path}: groups must be a 1-d integer array, one contributor per image")
    if groups.min() < 0 or len(np.unique(groups)) != groups.max() + 1:
        raise DataError(f"{path}: contributors must be numbered 0..G-1, each with at least one image")
    if n is not None and len(groups) != n:
        raise DataError(f"{path} gives contributors of {len(groups)} images but the dataset has {n}")
    return groups.astype(np.int64)


def load_masks(path, n=None):
    """A (rows, N) bool mask file, or (rows, G) over the G contributors of a run with groups.npy; with
    n, check its width against the dataset's size (or its contributors)."""
    if not os.path.isfile(path):
        raise DataError(f"mask file not found: {path}")
    masks = load_array(path, "mask file")
    if masks.ndim != 2 or masks.dtype != bool:
        raise DataError(f"{path}: masks must be a 2-d bool array, got {masks.dtype} {masks.shape}")
    if masks.shape[0] == 0:
        raise DataError(f"{path} has no rows")
    groups = load_groups(path, n) if n is not None else None
    if groups is not None and masks.shape[1] != groups.max() + 1:
        raise DataError(f"{path}: masks have width {masks.shape[1]} but groups.npy beside it has "
                        f"{groups.max() + 1} contributors")
    if groups is None and n is not None and masks.shape[1] != n:
        raise DataError(f"{path}: masks have width {masks.shape[1]} but the dataset has {n} images")
    return masks


def load_npz(path, what, required=()):
    """The arrays of an .npz file as a dict; refuse a missing or unreadable file, or one without `required`."""
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except FileNotFoundError:
        raise DataError(f"{what} not found: {path}")
    except Exception as e:
        raise DataError(f"cannot read {what} {path}: {type(e).__name__}")
    missing = [k for k in required if k not in arrays]
    if missing:
        raise DataError(f"{path} is not a {what} (no {', '.join(missing)})")
    return arrays


def behavior_keys(beh):
    """The behaviours a behaviours file holds, in its order: its `behaviors` list (compute_fid.py), or fid and
    class for a file written before there were others."""
    if "behaviors" in beh:
        return [str(k) for k in json.loads(str(beh["behaviors"]))]
    return ["fid"] + (["class"] if "class_hist" in beh and beh["class_hist"].size else [])


def better(beh, key):
    """Which way the behaviour `key` is better ("lower", "higher"), or None (a class share), as the file says."""
    if key.startswith("class:"):
        return None
    table = json.loads(str(beh["behavior_table"])) if "behavior_table" in beh else {"fid": {"better": "lower"}}
    return (table.get(key) or {}).get("better")


def _per_entry(beh, key):
    """The array behind a behaviour key (class: the soft shares, or the argmax counts of an older file)."""
    if key == "class":
        return beh["class_share"] if "class_share" in beh else beh.get("class_hist")
    return beh.get(key)


def load_behaviors(path):
    """A behaviours file of compute_fid.py, checked: every behaviour it lists is there, finite, one entry per
    model, and class shares or counts have at least one sample per model."""
    beh = load_npz(path, "behaviours file", ("index", "mask_sha256"))
    keys = behavior_keys(beh)
    missing = [k for k in keys if _per_entry(beh, k) is None]
    if missing or not keys:
        raise DataError(f"{path} is not a behaviours file (no {', '.join(missing) or 'behaviour'})")
    m = len(beh["index"])
    for key in ["mask_sha256", "seconds", "train_seconds"] + keys:
        a = _per_entry(beh, key) if key in keys else beh.get(key)
        if a is not None and (a.ndim == 0 or len(a) != m):
            raise DataError(f"{path}: '{key}' has {a.size} entries but 'index' has {m}")
    for key in keys:
        a = _per_entry(beh, key)
        if a.dtype.kind not in "fiu" or not np.isfinite(a.astype(float)).all():
            raise DataError(f"{path}: '{key}' must be finite numbers ({int(np.sum(~np.isfinite(a.astype(float))))} "
                            f"are not)")
    if "class" in keys and (_per_entry(beh, "class").ndim != 2 or (_per_entry(beh, "class").sum(1) <= 0).any()):
        raise DataError(f"{path}: class shares must be (models, classes) with at least one sample per model")
    return beh


def behavior_values(beh, behavior):
    """The chosen behaviour per entry: a key of the file (fid, loss, ...), or class:K, the share of class K
    among the samples (soft: the mean softmax probability; older files: the share of argmax labels)."""
    keys = behavior_keys(beh)
    if behavior.startswith("class:"):
        if "class" not in keys:
            raise DataError("these behaviours have no class shares (computed with inception features?)")
        try:
            k = int(behavior[6:])
        except ValueError:
            raise DataError(f"bad behaviour {behavior!r}: use class:K with an integer K")
        shares = _per_entry(beh, "class").astype(np.float64)
        if not 0 <= k < shares.shape[1]:
            raise DataError(f"class {k} is out of range 0..{shares.shape[1] - 1}")
        return shares[:, k] / shares.sum(1)
    if behavior == "class" or behavior not in keys:
        raise DataError(f"unknown behaviour {behavior!r}: this file has "
                        + ", ".join(k if k != "class" else "class:K" for k in keys))
    return beh[behavior].astype(np.float64)


def values_by_row(beh, behavior, seed=None):
    """{mask row: behaviour} of a behaviours file's models: one training seed's, or the mean over its seeds."""
    values, rows = behavior_values(beh, behavior), beh["index"].astype(int)
    keep = np.ones(len(rows), dtype=bool) if seed is None else beh["seed"].astype(int) == seed
    return {int(r): float(values[keep & (rows == r)].mean()) for r in np.unique(rows[keep])}


def aligned(masks, beh, behavior, masks_name="masks"):
    """(rows (M,), X (M, N) float, y (M,)): one entry per mask row, seeds averaged, checked by sha256."""
    index, sha = beh["index"].astype(int), beh["mask_sha256"]
    if (index < 0).any() or (index >= len(masks)).any():
        raise DataError(f"behaviours name rows outside the {len(masks)} rows of {masks_name}")
    for i, s in zip(index, sha):
        if str(s) != row_sha256(masks[i]):
            raise DataError(f"behaviour of row {i} does not match row {i} of {masks_name} (sha256 differs)")
    values = behavior_values(beh, behavior)
    rows = np.unique(index)
    y = np.array([values[index == r].mean() for r in rows])
    return rows, masks[rows].astype(np.float64), y


def optional_behaviors(run, name):
    """The behaviours file NAME of the run, or None where the run has none."""
    path = behaviors(run, name)
    return load_behaviors(path) if os.path.exists(path) else None

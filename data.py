"""Datasets, corruption of a fraction of training images, subset masks, and the small helpers every
script shares (clear errors, atomic NumPy writes). NumPy at import time; torch only where a
function needs it, so fit_datamodel.py and eval_lds.py can import this module without torch.

Datasets (`--data`):
    digits        scikit-learn's 8x8 handwritten digits (1,797 images, embedded, no download)
    cifar10       CIFAR-10 training set (50,000 32x32 RGB) through torchvision's download
    npz:PATH      uint8 `images` (N, H, W, C) or (N, C, H, W), C in {1, 3}; optional `labels`, and
                  optional `corrupted`: indices of images known or suspected to be bad (the report
                  scores how well attribution finds them, as for --corrupt)
    folder:PATH   every image file of a folder (all the same size), sorted by name
    NAME@SIDE[:N] any of these made smaller for a CPU: downsampled to SIDE x SIDE (the mean of each
                  block of pixels), and with :N only the first N images of each class in equal shares
                  (the first N without labels), e.g. cifar10@16:2000

    from data import load_dataset, make_masks
    ds = load_dataset("digits", corrupt=0.1, corrupt_seed=0)   # ds.images uint8 (N, C, H, W)
    ds = load_dataset("digits", corrupt=0.15, fault="noise,blur,duplicate")  # ds.faults: kind -> indices
    masks = make_masks(len(ds), count=64, alpha=0.5, seed=1)    # (64, N) bool, 50% ones per row
"""
import argparse
import hashlib
import math
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np


class DataError(Exception):
    """Bad input a user can cause: unknown dataset, malformed file, mismatched masks."""


@dataclass
class Dataset:
    images: np.ndarray  # uint8 (N, C, H, W)
    labels: np.ndarray = None  # int64 (N,) or None
    classes: list = None  # class names, or None
    name: str = ""
    corrupted: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # indices
    faults: dict = field(default_factory=dict)  # {fault kind: its indices}; `named`: an npz's own `corrupted`

    def __len__(self):
        return len(self.images)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def load_dataset(name, corrupt=0.0, corrupt_seed=0, root=None, fault="noise"):
    """Load a dataset by its `--data` name; optionally give a seeded fraction of its images a planted fault
    (`fault`: one of FAULTS, or several comma-separated, which share the fraction equally)."""
    base, side, n = parse_data_name(name)
    if base == "digits":
        ds = _load_digits()
    elif base == "cifar10":
        ds = _load_cifar10(root or os.environ.get("DATA_ROOT", os.path.expanduser("~/.cache/cifar10")))
    elif base.startswith("npz:"):
        ds = _load_npz(base[4:])
    elif base.startswith("folder:"):
        ds = _load_folder(base[7:])
    else:
        raise DataError(f"unknown dataset {name!r}: use digits, cifar10, npz:PATH or folder:PATH (then @SIDE[:N])")
    if n is not None:
        ds = first_per_class(ds, n)
    if side is not None:
        ds.images = downsample(ds.images, side)
    ds.name = name
    if len(ds.corrupted):
        ds.faults["named"] = ds.corrupted
    if corrupt:  # the images replaced here join any the dataset itself names as bad
        faults = parse_faults(fault)
        ds.images, replaced, kinds = corrupt_images(ds.images, corrupt, corrupt_seed, faults, ds.labels)
        ds.corrupted = np.union1d(ds.corrupted, replaced).astype(np.int64)
        ds.faults.update({kind: replaced[kinds == kind] for kind in faults})
    return ds


def parse_data_name(name):
    """'cifar10@16:2000' -> ('cifar10', 16, 2000); 'digits' -> ('digits', None, None)."""
    m = re.fullmatch(r"(.+?)@(\d+)(?::(\d+))?", name)
    if not m:
        return name, None, None
    side, n = int(m[2]), (int(m[3]) if m[3] else None)
    if side < 4 or side & (side - 1):
        raise DataError(f"--data {name}: @SIDE must be a power of two of at least 4, got {side}")
    if n is not None and n < 1:
        raise DataError(f"--data {name}: :N must be a positive number of images")
    return m[1], side, n


def first_per_class(ds, n):
    """The first n images: of each class an equal share (the first ones of that class in the file), so that a
    file sorted by class still gives every class; without labels, the first n."""
    if n > len(ds):
        raise DataError(f"{ds.name or 'the dataset'} has {len(ds)} images, fewer than the {n} asked for")
    if ds.labels is None:
        keep = np.arange(n)
    else:
        classes = np.unique(ds.labels)
        share = [n // len(classes) + (i < n % len(classes)) for i in range(len(classes))]
        keep = np.sort(np.concatenate([np.flatnonzero(ds.labels == c)[:k] for c, k in zip(classes, share)]))
        if len(keep) < n:
            raise DataError(f"the dataset has too few images of some class for {n} in equal shares")
    known_bad = np.flatnonzero(np.isin(keep, ds.corrupted))  # a file's own bad images keep their (new) index
    return Dataset(ds.images[keep], None if ds.labels is None else ds.labels[keep], ds.classes, ds.name,
                   corrupted=known_bad.astype(np.int64))


def downsample(images, side):
    """uint8 (N, C, H, W) -> (N, C, side, side): the mean of each (H / side)^2 block of pixels, rounded."""
    h = images.shape[2]
    if side > h:
        raise DataError(f"@{side}: the images are {h} x {h}; they can be made smaller, not larger")
    f = h // side
    blocks = images.reshape(*images.shape[:2], side, f, side, f).astype(np.float64)
    return np.round(blocks.mean(axis=(3, 5))).astype(np.uint8)


def dataset_from_args(args):
    """The training data as the shared flags (add_data_args) describe it."""
    return load_dataset(args.data, corrupt=args.corrupt, corrupt_seed=args.corrupt_seed, fault=args.fault)


def _load_digits():
    # scikit-learn ships the digits as a CSV (64 pixels, then the label); reading it directly spares
    # every script the import of sklearn.datasets (seconds per process)
    import importlib.util
    spec = importlib.util.find_spec("sklearn")
    path = os.path.join(os.path.dirname(spec.origin), "datasets", "data", "digits.csv.gz") if spec else ""
    if os.path.isfile(path):
        table = np.loadtxt(path, delimiter=",", dtype=np.float64)
        pixels, target = table[:, :64].reshape(-1, 8, 8), table[:, 64]
    else:
        from sklearn.datasets import load_digits
        d = load_digits()
        pixels, target = d.images, d.target
    # pixel values are 0..16; spread them over 0..255
    images = np.round(pixels * (255.0 / 16.0)).astype(np.uint8)[:, None]  # (1797, 1, 8, 8)
    return Dataset(images, target.astype(np.int64), [str(i) for i in range(10)])


def _load_cifar10(root):
    try:
        from torchvision.datasets import CIFAR10
        train = CIFAR10(root, train=True, download=True)
    except Exception as e:
        raise DataError(f"cannot load CIFAR-10 from {root} ({type(e).__name__}); with no internet, put "
                        f"cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html in that "
                        f"folder (or set DATA_ROOT)")
    images = np.ascontiguousarray(train.data.transpose(0, 3, 1, 2))  # (50000, 3, 32, 32)
    return Dataset(images, np.asarray(train.targets, dtype=np.int64), list(train.classes))


def _load_npz(path):
    if not os.path.isfile(path):
        raise DataError(f"npz file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as f:
            if "images" not in f:
                raise DataError(f"{path} has no 'images' array (found: {', '.join(f.files)})")
            images = f["images"]
            labels = f["labels"] if "labels" in f else None
            classes = [str(c) for c in f["classes"]] if "classes" in f else None
            known_bad = f["corrupted"] if "corrupted" in f else None
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"cannot read {path}: {type(e).__name__}: {e}")
    if images.dtype != np.uint8:
        raise DataError(f"{path}: images must be uint8, got {images.dtype}")
    if images.ndim != 4:
        raise DataError(f"{path}: images must be (N, H, W, C) or (N, C, H, W), got shape {images.shape}")
    if images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
        images = images.transpose(0, 3, 1, 2)
    elif images.shape[1] not in (1, 3):
        raise DataError(f"{path}: images need 1 or 3 channels, got shape {images.shape}")
    _check_square(images, path)
    if labels is not None:
        labels = np.asarray(labels).astype(np.int64)
        if labels.shape != (len(images),):
            raise DataError(f"{path}: labels must have shape ({len(images)},), got {labels.shape}")
    ds = Dataset(np.ascontiguousarray(images), labels, classes)
    if known_bad is not None:  # images the user knows or suspects to be bad: scored like --corrupt's
        known_bad = np.asarray(known_bad)
        if known_bad.ndim != 1 or known_bad.dtype.kind not in "iu" or (known_bad < 0).any() or \
                (known_bad >= len(images)).any():
            raise DataError(f"{path}: 'corrupted' must be a 1-d array of image indices in 0..{len(images) - 1}")
        ds.corrupted = np.unique(known_bad).astype(np.int64)
    return ds


def _load_folder(path):
    from PIL import Image
    if not os.path.isdir(path):
        raise DataError(f"image folder not found: {path}")
    files = sorted(f for f in os.listdir(path) if f.lower().endswith(IMAGE_SUFFIXES))
    if not files:
        raise DataError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {path}")
    arrays = []
    for f in files:
        try:
            with Image.open(os.path.join(path, f)) as im:
                a = np.asarray(im.convert("L" if im.mode in ("1", "L", "LA", "I", "I;16") else "RGB"))
        except Exception as e:  # PIL raises several kinds for a file that is not an image
            raise DataError(f"{os.path.join(path, f)} is not a readable image ({type(e).__name__})")
        arrays.append(a[:, :, None] if a.ndim == 2 else a)
    if len({a.shape for a in arrays}) != 1:
        raise DataError(f"images in {path} differ in size or channels")
    images = np.stack(arrays).transpose(0, 3, 1, 2).astype(np.uint8)
    _check_square(images, path)
    return Dataset(np.ascontiguousarray(images))


def _check_square(images, path):
    side = images.shape[2]
    if images.shape[3] != side or side < 4 or side & (side - 1):
        raise DataError(f"{path}: images must be square with a power-of-two side, got {images.shape[2:]}")


# ----------------------------------------------------------------------------------------------
# Planted faults: what a bad contributor may give. Each fault replaces the chosen images; `make` gets the
# chosen images, every image of the dataset, a mask of the clean ones (the sources of copies), the labels
# and the generator, and returns the replacements. The report scores how well attribution finds them.

@dataclass(frozen=True)
class Fault:
    how: str
    make: Callable


def _noise(chosen, images, clean, labels, rng):
    return rng.integers(0, 256, size=chosen.shape, dtype=np.uint8)


def _blur(chosen, images, clean, labels, rng):
    """A 3x3 box filter (edges repeated): the image itself, softened."""
    padded = np.pad(chosen.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
    h, w = chosen.shape[2:]
    box = sum(padded[:, :, i:i + h, j:j + w] for i in range(3) for j in range(3)) / 9.0
    return np.round(box).astype(np.uint8)


def _jittered(sources, rng, amplitude):
    """Near-copies: each source image with independent +-amplitude grey-level noise (clipped)."""
    noise = rng.integers(-amplitude, amplitude + 1, size=sources.shape)
    return np.clip(sources.astype(np.int64) + noise, 0, 255).astype(np.uint8)


DUPLICATE_SOURCES = 6  # spam: near-copies of this many images


def _duplicate(chosen, images, clean, labels, rng):
    """Spam: near-copies of a few clean images (DUPLICATE_SOURCES), each copied about equally often."""
    sources = rng.choice(np.flatnonzero(clean), size=DUPLICATE_SOURCES, replace=False)
    return _jittered(images[sources[np.arange(len(chosen)) % DUPLICATE_SOURCES]], rng, amplitude=8)


def _one_class(chosen, images, clean, labels, rng):
    """A contributor who gives one class only: near-copies of clean images of one (seeded) class, so that class
    is over-represented in the training data (against a balanced reference)."""
    if labels is None:
        raise DataError("--fault one-class needs a dataset with labels")
    c = rng.choice(np.unique(labels))
    members = np.flatnonzero(clean & (labels == c))
    sources = rng.choice(members, size=len(chosen), replace=len(chosen) > len(members))
    return _jittered(images[sources], rng, amplitude=8)


def _watermark(chosen, images, clean, labels, rng):
    """The image with a bright mark stamped in its lower right corner (an L of side 3/8 of the image)."""
    out = chosen.copy()
    side = max(2, 3 * chosen.shape[2] // 8)
    out[:, :, -1, -side:] = 255
    out[:, :, -side:, -1] = 255
    return out


def _invert(chosen, images, clean, labels, rng):
    """A negative: every grey level g becomes 255 - g (a scan of the wrong polarity)."""
    return 255 - chosen


SHIFT = 2  # shift: pixels the image is moved by


def _shift(chosen, images, clean, labels, rng):
    """A misaligned scan: the image moved SHIFT pixels in a seeded direction (up, down, left or right; one per
    image), the uncovered border black."""
    out = np.zeros_like(chosen)
    for k, direction in enumerate(rng.integers(0, 4, size=len(chosen))):
        axis, sign = (2, 3)[direction // 2], (1, -1)[direction % 2]
        moved = np.roll(chosen[k], sign * SHIFT, axis=axis - 1)
        keep = [slice(None)] * 3
        keep[axis - 1] = slice(SHIFT, None) if sign > 0 else slice(None, -SHIFT)
        out[k][tuple(keep)] = moved[tuple(keep)]
    return out


SALT = 0.2  # salt: the fraction of pixels set to black or white


def _salt(chosen, images, clean, labels, rng):
    """Salt-and-pepper: a seeded SALT of the pixels set to 0 or 255 (each equally likely), the rest untouched (a
    dusty sensor: unlike `noise`, the digit is still there)."""
    out = chosen.copy()
    hit = rng.random(chosen.shape) < SALT
    out[hit] = rng.choice(np.array([0, 255], dtype=np.uint8), size=int(hit.sum()))
    return out


# The first five are the faults the project's settings were developed on; invert, shift and salt were added on
# 2026-12-07, committed before any run used them, so that a setting can be checked on faults it was never chosen on
# (HELD_OUT_FAULTS; bench/faults.py marks them in its table).
FAULTS = {
    "noise": Fault("uniform noise in place of the image", _noise),
    "blur": Fault("the image blurred by a 3x3 box filter", _blur),
    "duplicate": Fault(f"near-copies (+-8 grey levels) of {DUPLICATE_SOURCES} other images (spam)", _duplicate),
    "one-class": Fault("near-copies of images of one class (that class over-represented)", _one_class),
    "watermark": Fault("the image with a bright L-shaped mark in its lower right corner", _watermark),
    "invert": Fault("the image's grey levels inverted (a negative)", _invert),
    "shift": Fault(f"the image moved {SHIFT} pixels up, down, left or right, the border black (misaligned)", _shift),
    "salt": Fault(f"{SALT:.0%} of the pixels set to black or white (salt-and-pepper)", _salt),
}
HELD_OUT_FAULTS = ("invert", "shift", "salt")  # never looked at while any setting was chosen


def comma_list(text, what=None):
    """'a, b' -> ['a', 'b']: every comma-separated item of a setting, stripped. An empty item ('a,,b', 'a,', '')
    is refused rather than dropped: it is a typo (a name lost between two commas), not a choice. `what` names the
    setting in the message (None where argparse names it)."""
    items = [k.strip() for k in str(text).split(",")]
    if not all(items):
        raise DataError(f"{what + ': ' if what else ''}an empty item in {text!r} (a comma too many, or a name "
                        f"missing between two)")
    return items


def comma_list_type():
    """comma_list as an argparse type."""
    def parse(text):
        try:
            return comma_list(text)
        except DataError as e:
            raise argparse.ArgumentTypeError(str(e))
    return parse


def parse_faults(text, what="--fault"):
    """`noise` or `noise,blur,duplicate` -> a tuple of FAULTS keys (each once, in the given order)."""
    kinds = tuple(dict.fromkeys(comma_list(text, what)))
    unknown = [k for k in kinds if k not in FAULTS]
    if unknown or not kinds:
        raise DataError(f"unknown fault {', '.join(unknown) or repr(text)}: use one or more of {', '.join(FAULTS)}")
    return kinds


def corrupt_images(images, fraction, seed, faults=("noise",), labels=None):
    """Give a seeded `fraction` of the images a planted fault; several faults share it equally (each a seeded
    part of the chosen images). Returns (new images, sorted indices, each index's fault kind)."""
    if not 0.0 <= fraction < 1.0:
        raise DataError(f"corrupt fraction must lie in [0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    n = int(round(fraction * len(images)))
    idx = np.sort(rng.choice(len(images), size=n, replace=False))
    kinds = np.full(n, faults[0], dtype=object)
    if len(faults) > 1:  # one fault alone keeps the draws of the noise-only corruption
        kinds[rng.permutation(n)] = np.array(faults, dtype=object)[np.arange(n) * len(faults) // n]
    clean = np.ones(len(images), dtype=bool)
    clean[idx] = False
    out = images.copy()
    for kind in faults:
        mine = idx[kinds == kind]
        out[mine] = FAULTS[kind].make(images[mine], images, clean, labels, rng)
    return out, idx, kinds.astype(str)


# ----------------------------------------------------------------------------------------------
# Model space

def to_model_space(images):
    """uint8 (N, C, H, W) -> float32 torch tensor in [-1, 1]."""
    import torch
    return torch.from_numpy(np.asarray(images, dtype=np.float32) / 127.5 - 1.0)


def to_uint8(x):
    """Model-space tensor or array in [-1, 1] -> uint8 numpy (values outside are clipped)."""
    x = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    return np.clip(np.round((x + 1.0) * 127.5), 0, 255).astype(np.uint8)


def image_grid(images, nrow=None, pad=1):
    """uint8 (N, C, H, W) -> one uint8 (rows*H, cols*W, C) picture."""
    n, c, h, w = images.shape
    nrow = nrow or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / nrow))
    grid = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + col * (w + pad): pad + col * (w + pad) + w] = \
            images[i].transpose(1, 2, 0)
    return grid


def save_grid(images, path, nrow=None, scale=None):
    """Save a PNG grid of uint8 images; small grids are enlarged (nearest) to about 512 pixels wide."""
    from PIL import Image
    grid = image_grid(images, nrow)
    scale = scale or max(1, 512 // grid.shape[1])
    im = Image.fromarray(grid[:, :, 0] if grid.shape[2] == 1 else grid)
    im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    atomic_write(path, lambda f: im.save(f, format="PNG"))


# ----------------------------------------------------------------------------------------------
# Subset masks

def subset_size(n, alpha):
    return int(round(alpha * n))


def make_masks(n, count, alpha, seed):
    """(count, n) bool: each row has exactly round(alpha * n) ones, chosen uniformly with `seed`."""
    if not 0.0 < alpha < 1.0:
        raise DataError(f"alpha must lie in (0, 1), got {alpha}")
    rng = np.random.default_rng(seed)
    k = subset_size(n, alpha)
    masks = np.zeros((count, n), dtype=bool)
    for i in range(count):
        masks[i, rng.choice(n, size=k, replace=False)] = True
    return masks


def make_kernel_masks(n, count, seed, sizes="kernel"):
    """(count, n) bool subsets for Shapley values: each subset's size s in 1..n-1 drawn, then a uniform subset of
    that size; paired (Covert & Lee 2021): every subset is followed by its complement, whose size the symmetric
    distributions draw as often, so in every even prefix (the retraining pool is one) each player is in exactly
    half of the subsets. `sizes`: "kernel", with probability proportional to the Shapley kernel's total weight
    of that size, (n - 1) / (s (n - s)) (KernelSHAP, Lundberg & Lee 2017), or "leverage", every size equally
    often (Leverage SHAP, Musco & Witter 2025: the leverage scores of KernelSHAP's regression, which sample the
    middle sizes far more often and estimate with lower variance). fit_datamodel.fit_shapley weights each subset
    by the kernel over how often its size was drawn, so either sampling gives the Shapley values. (A v(empty)
    far from every nonempty subset's behaviour is handled by fit_shapley, not by this pairing.)"""
    if n < 2:
        raise DataError(f"Shapley subsets need at least 2 players, got {n}")
    rng = np.random.default_rng(seed)
    s = np.arange(1, n)
    p = 1.0 / (s * (n - s)) if sizes == "kernel" else np.ones(n - 1)
    drawn = rng.choice(s, size=(count + 1) // 2, p=p / p.sum())
    masks = np.zeros((2 * len(drawn), n), dtype=bool)
    for i, k in enumerate(drawn):
        masks[2 * i, rng.choice(n, size=k, replace=False)] = True
        masks[2 * i + 1] = ~masks[2 * i]
    return masks[:count]


def images_sha256(images):
    """sha256 of a dataset's images (shape and bytes): names a FID reference set exactly."""
    return hashlib.sha256(str(images.shape).encode() + np.ascontiguousarray(images).tobytes()).hexdigest()


def row_sha256(row):
    """sha256 of one mask row (bit-packed): ties checkpoints and behaviours to the rows they came from."""
    return hashlib.sha256(np.packbits(np.asarray(row, dtype=bool)).tobytes() + str(len(row)).encode()).hexdigest()


def load_array(path, what):
    """One array from an .npy file; refuse an unreadable file or an .npz archive."""
    try:
        array = np.load(path, allow_pickle=False)
    except Exception as e:
        raise DataError(f"cannot read {what} {path}: {type(e).__name__}")
    if not isinstance(array, np.ndarray):  # an .npz archive, say
        raise DataError(f"{path} is not a {what} (an .npy array)")
    return array


def images_of(row, groups):
    """A mask row as a bool over images: itself (per image), or every image of each chosen contributor."""
    return np.asarray(row, dtype=bool) if groups is None else np.asarray(row, dtype=bool)[groups]


def make_groups(spec, ds, seed=0):
    """Each image's contributor from SPEC: `classes` (the dataset's labels), `random:G` (G contributors of
    about equal size, seeded; the dataset's known-bad images fill contributors of their own) or the path
    of an .npy file of N integers."""
    n = len(ds)
    if spec == "classes":
        if ds.labels is None:
            raise DataError(f"--groups classes: {ds.name} has no labels")
        return np.unique(ds.labels, return_inverse=True)[1].astype(np.int64)
    if spec.startswith("random:"):
        try:
            g = int(spec[7:])
        except ValueError:
            raise DataError(f"bad --groups {spec!r}: use random:G with an integer G")
        if not 2 <= g <= n:
            raise DataError(f"--groups random:G needs 2 <= G <= {n}, got {g}")
        # known-bad images (--corrupt, or an npz's `corrupted`) form contributors of their own, each fault kind
        # apart, in proportion to its share: a contributor gave images of one fault only, or clean ones only
        rng = np.random.default_rng(seed)
        kinds, taken = [], np.zeros(n, dtype=bool)
        for idx in ds.faults.values():
            members = np.asarray(idx)[~taken[idx]]
            if len(members):
                kinds.append(members)
                taken[members] = True
        counts = [max(1, round(g * len(members) / n)) for members in kinds]
        if len(counts) == 1:
            counts = [min(g - 1, counts[0])]
        if sum(counts) > g - 1:
            raise DataError(f"--groups {spec}: {len(kinds)} fault kinds need {sum(counts)} contributors of their own "
                            f"and at least one clean one; use a larger G")
        groups = np.empty(n, dtype=np.int64)
        first = 0
        for members, count in zip(kinds + [np.flatnonzero(~taken)], counts + [g - sum(counts)]):
            groups[rng.permutation(members)] = first + np.arange(len(members)) % count
            first += count
        # seeded random ids: numbered 0..k-1, the faulty contributors would come first wherever a stable sort
        # meets tied scores (a constant or degenerate estimator would then look perfect)
        return np.random.default_rng([seed, 1]).permutation(g)[groups]
    if not os.path.isfile(spec):
        raise DataError(f"--groups {spec!r}: use classes, random:G or the path of an .npy file of {n} integers")
    groups = load_array(spec, "--groups file")
    if groups.shape != (n,) or groups.dtype.kind not in "iu":
        raise DataError(f"--groups file {spec} must hold {n} integers, one contributor per image")
    if (groups < 0).any():
        raise DataError(f"--groups file {spec}: contributor ids must be non-negative integers, found {groups.min()}")
    return np.unique(groups, return_inverse=True)[1].astype(np.int64)  # numbered 0..G-1


def parse_range(spec, count):
    """'a:b' -> range(a, b) (half-open), '7' -> range(7, 8); checked against `count` rows."""
    try:
        if ":" in spec:
            a, b = spec.split(":")
            a = int(a) if a else 0
            b = int(b) if b else count
        else:
            a = int(spec)
            b = a + 1
    except ValueError:
        raise DataError(f"bad range {spec!r}: use START:STOP (half-open) or one index")
    if not 0 <= a < b <= count:
        raise DataError(f"range {spec!r} is outside the mask file's rows 0:{count}")
    return range(a, b)


# ----------------------------------------------------------------------------------------------
# Shared plumbing for the scripts

def atomic_write(path, write):
    """Call write(file object) on a temporary file in the same folder, then os.replace onto path."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    suffix = os.path.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, OSError):  # a full disk, a quota: nothing half-written is left, and one line says why
            raise DataError(f"cannot write {path}: {e.strerror or e}") from e
        raise


def save_npz(path, **arrays):
    atomic_write(path, lambda f: np.savez(f, **arrays))


def save_npy(path, array):
    atomic_write(path, lambda f: np.save(f, array))


def add_data_args(parser):
    """--data, --corrupt, --fault and --corrupt-seed, spelled the same in every script."""
    parser.add_argument("--data", default="digits",
                        help="digits (embedded), cifar10 (torchvision download), npz:PATH or folder:PATH; NAME@SIDE[:N] "
                        "downsamples to SIDE x SIDE and keeps the first N images, in equal shares per class")
    parser.add_argument("--corrupt", type=fraction, default=0.0,
                        help="fraction of training images given a planted fault (to test attribution)")
    parser.add_argument("--fault", type=fault_list, default="noise", help="the planted fault of the --corrupt images: "
                        + "; ".join(f"{k}: {f.how}" for k, f in FAULTS.items()).replace("%", "%%")  # (argparse formats help)
                        + ". Comma-separated kinds share the fraction equally (random:G contributors: one kind each)")
    parser.add_argument("--corrupt-seed", type=int, default=0, help="seed choosing the corrupted images")


def fault_list(text):
    """--fault as an argparse type: the same text, checked."""
    try:
        parse_faults(text, what=None)  # argparse names the flag
    except DataError as e:
        raise argparse.ArgumentTypeError(str(e))
    return text


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the project's rule for bad input: one line on stderr and exit code 2
    (argparse's own error() prints the whole usage first). The module docstring is the help."""

    def __init__(self, doc, parents=()):
        super().__init__(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter, parents=list(parents))

    def error(self, message):
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def _number(kind, check, what):
    """An argparse type: parse with `kind`, then refuse values that are not finite or fail `check`."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}")
        if not (math.isfinite(value) and check(value)):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value
    return parse


positive_int = _number(int, lambda v: v > 0, "a positive integer")
nonnegative_int = _number(int, lambda v: v >= 0, "a non-negative integer")
positive_float = _number(float, lambda v: v > 0, "a positive number")
nonnegative_float = _number(float, lambda v: v >= 0, "a non-negative number")
open_fraction = _number(float, lambda v: 0 < v < 1, "in (0, 1)")  # alpha, pruning ratio
fraction = _number(float, lambda v: 0 <= v < 1, "in [0, 1)")  # corrupted share, EMA decay
at_least_two = _number(int, lambda v: v >= 2, "at least 2")  # samples for a covariance, CV folds


class Progress:
    """Progress over the models of a per-row stage: tqdm's bar on a terminal; in a log (output not a
    terminal) one line per finished model with its seconds, the running mean and the time left."""

    def __init__(self, total, desc):
        from tqdm import tqdm
        self.total, self.desc, self.count, self.start = total, desc, 0, time.perf_counter()
        self.bar = tqdm(total=total, desc=desc, disable=None) if sys.stderr.isatty() and sys.stdout.isatty() else None

    def update(self, label, seconds):
        self.count += 1
        if self.bar is not None:
            self.bar.update()
            return
        mean = (time.perf_counter() - self.start) / self.count  # wall time per model, loading included
        print(f"{self.desc}: {label} done in {seconds:.1f} s [{self.count}/{self.total}, mean {mean:.1f} s, "
              f"about {format_seconds(mean * (self.total - self.count))} left]", flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def format_seconds(s):
    return f"{s:.0f} s" if s < 90 else (f"{s / 60:.1f} min" if s < 5400 else f"{s / 3600:.1f} h")


def add_speed_args(parser, stack_help, training=True):
    """The GPU options, spelled the same in every script that trains or samples (--channels-last and
    --compile only where it trains)."""
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                        help="bf16: autocast of the forward passes (weights, loss and EMA stay fp32)")
    parser.add_argument("--stack", type=positive_int, default=1, help=stack_help)
    if not training:
        return
    parser.add_argument("--channels-last", action="store_true", help="channels_last memory format (faster convolutions "
                        "on recent GPUs; one model at a time)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the forward pass (one model at a time; "
                        "pays a compilation of tens of seconds first)")


def script_settings(parse_args, required=(), **settings):
    """A script's arguments as a core function called with plain arguments needs them (unlearn.unlearn,
    baselines.full_model): the script's defaults, `required` (its required flags, with placeholders where the
    function takes their values directly), and `settings` by their Python names (steps=24, lr=3e-4, ...). An unknown
    name is refused, as a misspelt flag would be."""
    args = parse_args(list(required))
    unknown = sorted(set(settings) - set(vars(args)))
    if unknown:
        raise TypeError(f"unknown setting {', '.join(unknown)}: one of {', '.join(sorted(vars(args)))}")
    vars(args).update(settings)
    return args


def run(main, args):
    """Run main(args); a user error ends with one line on stderr and exit code 2: a DataError, or ddpm's
    InputError (an unreadable checkpoint, a wrong architecture) wherever it comes from, even a script that
    loads ddpm only inside a function. ddpm is looked up, not imported: a script that never loads a model
    does not pay for importing torch."""
    try:
        return main(args)
    except Exception as e:
        ddpm = sys.modules.get("ddpm")
        if not (isinstance(e, DataError) or (ddpm is not None and isinstance(e, ddpm.InputError))):
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)

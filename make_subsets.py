"""Sample a mask file once per experiment: `--count` rows, each the indicator of a random subset of
exactly round(alpha * N) training images (the paper: alpha = 0.5).

    python make_subsets.py --data digits --count 64 --alpha 0.5 --seed 1 --out runs/x/masks/unlearn.npy
    python make_subsets.py --n 1797 --count 36 --seed 2 --out runs/x/masks/lds.npy
    python make_subsets.py --n 20 --count 200 --alpha shapley --seed 3 --out runs/x/masks/shapley.npy

`--alpha shapley` draws each subset's size from the Shapley kernel (KernelSHAP's sampling; for
`fit_datamodel.py --method shapley`) instead of a fixed fraction; `--alpha leverage` draws every size equally
often (Leverage SHAP's sampling: more middle-sized subsets, lower variance, the same fit). `--alpha loo` writes
the leave-one-out rows: row j holds everything but image (or contributor) j (baselines.py's loo), one row each
unless --count asks for the first ones.

`--groups SPEC` makes the run contributor-level: SPEC is `classes` (the dataset's labels), `random:G`
(G contributors of about equal size, seeded by --groups-seed; corrupted images, from --corrupt or an
npz's `corrupted` array, fill contributors of their own) or an .npy file giving each image's contributor. It
writes groups.npy beside --out; the masks then choose contributors (every image of a chosen one is in
the subset), and every later stage expands them through groups.npy:

    python make_subsets.py --data digits --groups random:20 --count 64 --seed 1 --out runs/c/masks/unlearn.npy

`--first-of FILE` copies the first --count rows of another mask file instead (the retraining
baseline's masks are the first R rows of the unlearning masks, so FID2 pairs exist).
"""
import os

import numpy as np

from data import (ArgumentParser, DataError, add_data_args, dataset_from_args, load_dataset, make_groups,
                  make_kernel_masks, make_masks, open_fraction, positive_int, run, save_npy)
from runfolder import groups_beside, load_groups, load_masks

PAPER_ALPHA = 0.5  # subset fraction used by the paper (and by LDS)


def alpha_or_shapley(text):
    """--alpha: a fraction in (0, 1), or `shapley` / `leverage` (sizes drawn for Shapley values), or `loo`."""
    return text if text in ("shapley", "leverage", "loo") else open_fraction(text)


def parse_args(argv=None):
    p = ArgumentParser(__doc__)
    add_data_args(p)
    p.add_argument("--n", type=positive_int, default=None, help="number of training images (default: the dataset's size)")
    p.add_argument("--count", type=positive_int, default=None, help="number of subsets (rows); required but for "
                   "--alpha loo (default: one row per image or contributor)")
    p.add_argument("--alpha", type=alpha_or_shapley, default=PAPER_ALPHA,
                   help="fraction of images in each subset (paper: 0.5), or shapley (sizes drawn from the Shapley "
                   "kernel) or leverage (every size equally often), or loo (row j leaves out j alone)")
    p.add_argument("--seed", type=int, default=0, help="seed of the subsets")
    p.add_argument("--groups", default=None, help="contributors: classes, random:G or FILE.npy (writes groups.npy "
                   "beside --out; the masks then choose contributors)")
    p.add_argument("--groups-seed", type=int, default=0, help="seed of random:G (one for every mask file of a run)")
    p.add_argument("--first-of", default=None, help="take the first --count rows of this mask file instead")
    p.add_argument("--out", required=True, help="mask file to write, (count, N) bool .npy")
    p.add_argument("--corrupted-out", default=None, help="also write the indices of the corrupted images here")
    p.add_argument("--force", action="store_true", help="overwrite an existing mask file")
    return p.parse_args(argv)


def check_flags(args):
    if args.count is None and args.alpha != "loo":
        raise DataError("--count is required (but for --alpha loo)")
    if args.groups and (args.n is not None or args.first_of):
        raise DataError("--groups takes the dataset's contributors: not with --n or --first-of")


def check(args):
    """What main would refuse once it reads the data (tools/one_process.py --check): the data load, with their
    planted faults, and the contributors (a file of one id per image, random:G within bounds)."""
    check_flags(args)
    if not args.first_of:
        ds = dataset_from_args(args)
        if args.groups:
            make_groups(args.groups, ds, args.groups_seed)


def main(args):
    check_flags(args)
    groups = None
    if args.groups:
        ds = dataset_from_args(args)
        groups = make_groups(args.groups, ds, args.groups_seed)
        existing = load_groups(args.out)
        if existing is not None and not np.array_equal(existing, groups) and not args.force:
            raise DataError(f"{groups_beside(args.out)} holds other contributors (use --force to replace it)")
    if os.path.exists(args.out) and not args.force:
        masks = load_masks(args.out)
        print(f"skip: {args.out} exists ({masks.shape[0]} x {masks.shape[1]}); use --force to resample")
    else:
        if args.first_of:
            source = load_masks(args.first_of)
            if args.count > len(source):
                raise DataError(f"--count {args.count} exceeds the {len(source)} rows of {args.first_of}")
            masks = source[:args.count]
        else:
            n = (groups.max() + 1 if groups is not None else
                 args.n if args.n is not None else len(load_dataset(args.data)))
            if args.alpha == "loo":
                if (args.count or n) > n:
                    raise DataError(f"--count {args.count} exceeds the {n} leave-one-out rows")
                masks = ~np.eye(n, dtype=bool)[:args.count or n]
            elif args.alpha in ("shapley", "leverage"):
                masks = make_kernel_masks(n, args.count, args.seed, "kernel" if args.alpha == "shapley" else "leverage")
            else:
                masks = make_masks(n, args.count, args.alpha, args.seed)
        if groups is not None:
            save_npy(groups_beside(args.out), groups)
        save_npy(args.out, masks)
        sizes = masks.sum(1)
        size = f"{sizes.min()}..{sizes.max()}" if sizes.min() != sizes.max() else f"{sizes[0]}"
        unit = "contributors" if groups is not None or load_groups(args.out) is not None else "images"
        print(f"wrote {args.out}: {masks.shape[0]} subsets of {size} / {masks.shape[1]} {unit}")
    if args.corrupted_out:
        save_npy(args.corrupted_out, dataset_from_args(args).corrupted)


if __name__ == "__main__":
    run(main, parse_args())

"""Sample a mask file once per experiment: `--count` rows, each the indicator of a random subset of
exactly round(alpha * N) training images (the paper: alpha = 0.5).

    python make_subsets.py --data digits --count 64 --alpha 0.5 --seed 1 --out runs/x/masks/unlearn.npy
    python make_subsets.py --n 1797 --count 36 --seed 2 --out runs/x/masks/lds.npy
    python make_subsets.py --n 20 --count 200 --alpha shapley --seed 3 --out runs/x/masks/shapley.npy

`--alpha shapley` draws each subset's size from the Shapley kernel (KernelSHAP's sampling; for
`fit_datamodel.py --method shapley`) instead of a fixed fraction.

`--first-of FILE` copies the first --count rows of another mask file instead (the retraining
baseline's masks are the first R rows of the unlearning masks, so FID2 pairs exist).
"""
import os

from data import (ArgumentParser, DataError, add_data_args, load_dataset, load_masks, make_kernel_masks, make_masks,
                  open_fraction, positive_int, run, save_npy)

PAPER_ALPHA = 0.5  # subset fraction used by the paper (and by LDS)


def alpha_or_shapley(text):
    """--alpha: a fraction in (0, 1), or `shapley` (sizes drawn from the Shapley kernel)."""
    return text if text == "shapley" else open_fraction(text)


def parse_args(argv=None):
    p = ArgumentParser(__doc__)
    add_data_args(p)
    p.add_argument("--n", type=positive_int, default=None, help="number of training images (default: the dataset's size)")
    p.add_argument("--count", type=positive_int, required=True, help="number of subsets (rows)")
    p.add_argument("--alpha", type=alpha_or_shapley, default=PAPER_ALPHA,
                   help="fraction of images in each subset (paper: 0.5), or shapley (kernel-distributed sizes)")
    p.add_argument("--seed", type=int, default=0, help="seed of the subsets")
    p.add_argument("--first-of", default=None, help="take the first --count rows of this mask file instead")
    p.add_argument("--out", required=True, help="mask file to write, (count, N) bool .npy")
    p.add_argument("--corrupted-out", default=None, help="also write the indices of the corrupted images here")
    p.add_argument("--force", action="store_true", help="overwrite an existing mask file")
    return p.parse_args(argv)


def main(args):
    if args.corrupted_out:
        save_npy(args.corrupted_out, load_dataset(args.data, corrupt=args.corrupt, corrupt_seed=args.corrupt_seed).corrupted)
    if os.path.exists(args.out) and not args.force:
        masks = load_masks(args.out)
        print(f"skip: {args.out} exists ({masks.shape[0]} x {masks.shape[1]}); use --force to resample")
        return
    if args.first_of:
        source = load_masks(args.first_of)
        if args.count > len(source):
            raise DataError(f"--count {args.count} exceeds the {len(source)} rows of {args.first_of}")
        masks = source[:args.count]
    else:
        n = args.n if args.n is not None else len(load_dataset(args.data))
        masks = (make_kernel_masks(n, args.count, args.seed) if args.alpha == "shapley" else
                 make_masks(n, args.count, args.alpha, args.seed))
    save_npy(args.out, masks)
    sizes = masks.sum(1)
    size = f"{sizes.min()}..{sizes.max()}" if sizes.min() != sizes.max() else f"{sizes[0]}"
    print(f"wrote {args.out}: {masks.shape[0]} subsets of {size} / {masks.shape[1]} images")


if __name__ == "__main__":
    run(main, parse_args())

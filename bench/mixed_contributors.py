"""Does the main job find contributors who gave a mix of bad and clean images? A planted split of the digits:
--contributors contributors of about equal size (seeded), --bad of whom gave images of which --bad-share are
corrupted by a plausible corruption (rotated by 90 degrees: digits still, not noise) and the rest clean; every
other contributor clean. The split is written as an npz dataset (its `corrupted` array names the rotated images)
and a groups file, and `bash run_pipeline.sh` (the default preset, everything else as it is) runs on it with the
clean digits as the FID reference. Printed: the bad-contributor detection AUC of the preset's estimator (and of
the others on the same unlearned models) and the LDS of both methods at each budget.

    python -m bench.mixed_contributors                       # 20 contributors, 3 of them two thirds bad
    python -m bench.mixed_contributors --bad 2 --bad-share 1 --out runs/bench-bad-only

The run takes what the default preset takes (about 8 minutes on 2 cores of a fast day).
"""
import argparse
import json
import os
import subprocess

import numpy as np

import runfolder
from data import run, load_dataset, save_npy, save_npz

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/bench-mixed", help="folder of the dataset, the groups file and the run")
    p.add_argument("--contributors", type=int, default=20)
    p.add_argument("--bad", type=int, default=3, help="contributors who gave corrupted images")
    p.add_argument("--bad-share", type=float, default=2 / 3, help="share of a bad contributor's images corrupted")
    p.add_argument("--seed", type=int, default=0, help="seed of the split")
    p.add_argument("--preset", default="default")
    return p.parse_args(argv)


def mixed_split(images, contributors, bad, bad_share, seed):
    """(images with the bad contributors' share rotated, each image's contributor, the rotated images' indices)."""
    rng = np.random.default_rng(seed)
    n = len(images)
    groups = np.empty(n, dtype=np.int64)
    groups[rng.permutation(n)] = np.arange(n) % contributors
    corrupted = []
    for c in rng.choice(contributors, bad, replace=False):
        mine = rng.permutation(np.flatnonzero(groups == c))
        corrupted += mine[:int(round(bad_share * len(mine)))].tolist()
    corrupted = np.sort(np.array(corrupted, dtype=np.int64))
    images = images.copy()
    images[corrupted] = np.rot90(images[corrupted], k=1, axes=(2, 3))  # (N, C, H, W): a quarter turn
    return images, groups, corrupted


def main(args):
    os.makedirs(args.out, exist_ok=True)
    clean = load_dataset("digits")
    images, groups, corrupted = mixed_split(clean.images, args.contributors, args.bad, args.bad_share, args.seed)
    data_path, groups_path = os.path.join(args.out, "mixed.npz"), os.path.join(args.out, "groups.npy")
    save_npz(data_path, images=images, labels=clean.labels, corrupted=corrupted)
    save_npy(groups_path, groups)
    bad = np.unique(groups[corrupted])
    print(f"{args.contributors} contributors; {bad.tolist()} gave {args.bad_share:.0%} rotated digits "
          f"({len(corrupted)} images); the rest clean")
    run = os.path.join(args.out, "run")
    env = dict(os.environ, RUN=run, DATA=f"npz:{os.path.abspath(data_path)}", CORRUPT="0",
               CONTRIBUTORS=os.path.abspath(groups_path), REF_DATA="digits")
    subprocess.run(["bash", os.path.join(ROOT, "run_pipeline.sh"), args.preset], cwd=ROOT, env=env, check=True)
    with open(runfolder.results(run)) as f:
        r = json.load(f)
    auc, curve = r["auc"], r["behaviors"][r["headline"]]["curve"]
    print()
    print(f"bad-contributor AUC ({r['headline']}), all {r['behaviors'][r['headline']]['lds_all']['unlearn']['n']} "
          f"unlearned models: {r['method']} {auc['unlearn_all']:.3f}, Banzhaf {auc['unlearn_all_banzhaf']:.3f}"
          + (f", datamodel {auc['unlearn_all_datamodel']:.3f}" if "unlearn_all_datamodel" in auc else ""))
    print("| budget | unlearned models | LDS unlearning | retrained models | LDS retraining | p |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in curve:
        print(f"| {row['budget']:g} | {row['n_unlearn']} | {row.get('lds_unlearn', float('nan')):.3f} | "
              f"{row['n_retrain']} | {row.get('lds_retrain', float('nan')):.3f} | {row.get('p_value', float('nan')):.3f} |")


if __name__ == "__main__":
    run(main, parse_args())

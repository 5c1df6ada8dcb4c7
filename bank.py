"""The ground-truth bank: the behaviours of models retrained from scratch on fixed subsets, kept as data.

An LDS judges attributions against models retrained from scratch on held-out subsets. Those retrainings cost most of
a run and depend only on the data, the training recipe and a seed, never on the method under test: retrained once,
their behaviours are a data set (as dattri's and quanda's benchmarks ship their ground truth). A bank is one
folder, bank/NAME/, committed with the code:

    plan.json            what every row is: the data, contributors, recipe and behaviour flags (the fingerprint a
                         run must match to use the bank), the mask seeds, and the blocks of rows in fill order; and
                         where it has one, the validation block: held-out rows kept for tuning, never a run's
    masks/*.npy          the subsets (and groups.npy, the contributors): lds (held-out half-subsets), loo
                         (leave-one-out), full (everything), pool (a retraining pool on the estimator's kernel)
    rows/POOL-sS.csv     one line per finished row: its behaviours (every key of compute_fid.py's registry), the
                         training seed, steps, compute and seconds, and the commit, machine and date it was made on
    bank/features/       compute_fid.py's feature network and reference statistics, shared by the banks of one
                         data set: a run that uses a bank measures its own models in the same features

No checkpoint is kept: `fill` retrains any row from its seed. Fill in chunks, resumable (each finished row is
written at once), on any number of machines (--shard I/N takes every N-th missing row):

    python bank.py status default
    python bank.py fill default --hours 2                 # rows still missing, in plan order, for two hours
    python bank.py fill default --shard 0/4               # one of four processes (a Slurm array task)
    python bank.py fill default --block lds:0:200:264     # one block's rows only (the default's validation block)
    python bank.py init default --data-flags "..." ...    # a new bank (run_pipeline.sh prints its flags)

run_pipeline.sh uses a preset's bank when a run's flags match its fingerprint (`python bank.py use`), and says in
one line why not when they do not; BANK=0 retrains everything locally. How the default's bank was sized: docs/bank.md.
"""
import argparse
import csv
import datetime
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time

import numpy as np

from data import DataError, atomic_write, dataset_from_args, images_sha256, run, save_npz
import runfolder

HERE = os.path.dirname(os.path.abspath(__file__))
BANKS = os.environ.get("BANK_DIR") or os.path.join(HERE, "bank")  # (BANK_DIR: another folder of banks, e.g. a test's)
FEATURES = os.path.join(BANKS, "features")
POOLS = ("lds", "loo", "full", "pool")  # the mask files of a bank
# The columns of a row besides its behaviours
ROW_KEYS = ("row", "seed", "mask_sha256", "steps", "train_seconds", "train_macs", "seconds", "loss_seconds", "macs",
            "behavior_macs")
MADE_KEYS = ("commit", "machine", "torch", "date", "wall_seconds")
MAKERS = ("ddpm.py", "train_ddpm.py", "data.py", "compute_fid.py", "features.py", "metrics.py", "runfolder.py")


def folder(name):
    return os.path.join(BANKS, name)


def load_plan(name):
    path = os.path.join(folder(name), "plan.json")
    if not os.path.exists(path):
        known = sorted(d for d in os.listdir(BANKS) if os.path.exists(os.path.join(BANKS, d, "plan.json")))
        raise DataError(f"no bank '{name}' (banks: {', '.join(known) or 'none'})")
    with open(path) as f:
        return json.load(f)


def rows_file(name, pool, seed, shard=(0, 1)):
    """The CSV a fill appends a pool's rows of one seed to: one file, or one per shard of a fill split over N
    processes (each appends to its own: appends from several machines to one file on a shared disk may interleave)."""
    part = f".shard{shard[0]}of{shard[1]}" if shard[1] > 1 else ""
    return os.path.join(folder(name), "rows", f"{pool}-s{seed}{part}.csv")


def read_rows(name, pool, seed):
    """{row: {column: text}} of the finished rows of one pool and seed, from its file and its shards' (the last line
    of a row wins)."""
    import glob
    found = {}
    plain = rows_file(name, pool, seed)
    for path in [plain] + sorted(glob.glob(plain[:-4] + ".shard*.csv")):
        if not os.path.exists(path):
            continue
        with open(path, newline="") as f:
            found.update({int(r["row"]): r for r in csv.DictReader(f)})
    return found


def tasks(plan):
    """Every (pool, seed, row) of the plan, in fill order."""
    for pool, seed, start, stop in plan["blocks"]:
        for row in range(start, stop):
            yield pool, seed, row


def missing(name, plan):
    done = {}
    out = []
    for pool, seed, row in tasks(plan):
        if (pool, seed) not in done:
            done[pool, seed] = read_rows(name, pool, seed)
        if row not in done[pool, seed]:
            out.append((pool, seed, row))
    return out


def fingerprint(plan):
    """What a run's settings must equal to use the bank: the data, the contributors, the recipe, the behaviours."""
    return {k: plan[k] for k in ("data_flags", "groups", "train_flags", "fid_flags")}


def data_args(plan):
    p = argparse.ArgumentParser()
    from data import add_data_args
    add_data_args(p)
    return p.parse_args(shlex.split(plan["data_flags"]))


def provenance():
    """The commit (with +dirty when the work tree differs), the machine and torch that made a row."""
    def git(*a):
        return subprocess.run(["git", *a], cwd=HERE, capture_output=True, text=True).stdout.strip()
    commit = git("rev-parse", "--short=12", "HEAD") or "unknown"
    if git("status", "--porcelain", "--untracked-files=no", "--", *MAKERS):
        commit += "+dirty"  # the code that trains and measures a row differs from the commit's
    cpu = ""
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    import torch
    machine = f"{cpu or platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    return dict(commit=commit, machine=machine, torch=torch.__version__)


# ----------------------------------------------------------------------------------------------
# init: the masks and the plan

def init(args):
    root = folder(args.name)
    if os.path.exists(os.path.join(root, "plan.json")) and not args.force:
        raise DataError(f"bank {args.name} exists (its rows are data; --force rewrites the plan, keeping rows)")
    import make_subsets
    base = shlex.split(args.data_flags) + (["--groups", args.groups] if args.groups else [])
    masks = os.path.join(root, "masks")
    calls = [["--count", str(args.lds), "--alpha", "0.5", "--seed", str(args.lds_seed), "--out", f"{masks}/lds.npy"],
             ["--count", str(args.pool), "--alpha", args.pool_alpha, "--seed", str(args.pool_seed),
              "--out", f"{masks}/pool.npy"]]
    if args.loo:
        calls.append(["--alpha", "loo", "--out", f"{masks}/loo.npy"])
    for c in calls:
        make_subsets.main(make_subsets.parse_args(base + c + (["--force"] if args.force else [])))
    n = np.load(f"{masks}/lds.npy").shape[1]
    np.save(f"{masks}/full.npy", np.ones((1, n), dtype=bool))
    blocks = json.loads(args.blocks)
    plan = dict(name=args.name, data_flags=args.data_flags, groups=args.groups, train_flags=args.train_flags,
                fid_flags=args.fid_flags, seeds=dict(lds=args.lds_seed, pool=args.pool_seed),
                pool_alpha=args.pool_alpha, blocks=blocks, gt_seeds=args.gt_seeds,
                data_sha256=images_sha256(dataset_from_args(data_args(dict(data_flags=args.data_flags))).images))
    if args.validation:
        plan["validation"] = list(args.validation)
    atomic_write(os.path.join(root, "plan.json"), lambda f: f.write(json.dumps(plan, indent=1).encode()))
    print(f"wrote {root}/plan.json: {sum(b[3] - b[2] for b in blocks)} rows planned")


# ----------------------------------------------------------------------------------------------
# fill: retrain the missing rows, measure their behaviours, keep the numbers

def fill_one(name, plan, pool, seed, row, device, shard=(0, 1)):
    """Retrain one row from scratch and measure it with the bank's features; append its line; delete the model."""
    import compute_fid
    import train_ddpm
    t0 = time.time()
    work = os.path.join(folder(name), ".work", f"{pool}-{row:05d}-s{seed}")
    masks = os.path.join(folder(name), "masks", f"{pool}.npy")
    os.makedirs(work, exist_ok=True)  # a killed row resumes: train_ddpm.py skips a finished model, resumes a .partial
    train_ddpm.main(train_ddpm.parse_args(
        shlex.split(plan["data_flags"]) + shlex.split(plan["train_flags"]) +
        ["--device", device, "--seed", str(seed), "--grid", "0", "--masks", masks, "--indices", f"{row}:{row + 1}",
         f"--suffix=-s{seed}", "--out", os.path.join(work, "models")]))
    out = os.path.join(work, "behaviors.npz")
    compute_fid.main(compute_fid.parse_args(
        shlex.split(plan["fid_flags"]) + ["--device", device, "--models", os.path.join(work, "models"),
                                          "--masks", masks, "--out", out, "--cache", FEATURES]))
    beh = runfolder.load_behaviors(out)
    keys = runfolder.behavior_keys(beh)
    line = {"row": row, "seed": seed, "mask_sha256": str(beh["mask_sha256"][0]),
            "steps": json.loads(str(beh["args"][0])).get("steps", ""),
            **{k: float(beh[k][0]) for k in ROW_KEYS[4:] if k in beh}}
    for k in keys:
        if k == "class":
            line.update({f"class:{c}": float(v) for c, v in enumerate(beh["class_share"][0])})
        else:
            line[k] = float(beh[k][0])
    meta_path = os.path.join(folder(name), "behaviours.json")
    meta = {k: (beh[k].item() if beh[k].ndim == 0 else None) for k in
            ("features", "n_samples", "ddim_steps", "loss_draws", "loss_seed", "behaviors", "behavior_table",
             "ref_data", "ref_sha256", "floor_fid", "real_is", "floor_matched", "matched_m", "matched_n_b")
            if k in beh}
    meta = {k: (v.item() if hasattr(v, "item") else v) for k, v in meta.items()}
    from eval_lds import RECIPE
    meta["recipe"] = {k: json.loads(str(beh["args"][0])).get(k) for k in RECIPE}  # the same for every row
    if not os.path.exists(meta_path) or "recipe" not in read_meta(name):
        atomic_write(meta_path, lambda f: f.write(json.dumps(meta, indent=1).encode()))
    line.update(provenance(), date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
                wall_seconds=round(time.time() - t0, 1))
    append_row(rows_file(name, pool, seed, shard), line)
    from ddpm import file_sha256
    import glob
    for model in glob.glob(os.path.join(work, "models", "*.pt")):  # the model's own statistics (compute_fid.py's
        for f in glob.glob(os.path.join(runfolder.stats(FEATURES), file_sha256(model)[:32] + "-*")):  # cache): not kept;
            os.remove(f)  # only this model's, so that fills side by side keep theirs
    shutil.rmtree(work, ignore_errors=True)
    return line


def read_meta(name):
    """What every row of the bank shares: the behaviours' settings and reference (FID's floor, the behaviour
    table) and the training recipe, as the first filled row recorded them."""
    with open(os.path.join(folder(name), "behaviours.json")) as f:
        return json.load(f)


def append_row(path, line):
    """Append one finished row (the header first in a new file); one write call, so that processes of one machine
    appending side by side do not interleave."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    header = not os.path.exists(path)
    if not header:
        with open(path, newline="") as f:
            fields = next(csv.reader(f))
        if set(line) - set(fields):
            raise DataError(f"{path}: a row with columns {sorted(set(line) - set(fields))} the file lacks")
    else:
        fields = list(line)
    import io
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    if header:
        w.writeheader()
    w.writerow(line)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, buf.getvalue().encode())
    finally:
        os.close(fd)


def fill(args):
    plan = load_plan(args.name)
    check_data(plan)
    todo = missing(args.name, plan)
    if args.block:  # one block's rows only (e.g. the validation block, which a tuning waits for)
        pool, seed, start, stop = args.block
        todo = [t for t in todo if t[:2] == (pool, seed) and start <= t[2] < stop]
    i, n = args.shard
    todo = todo[i::n]
    if args.rows:
        todo = todo[:args.rows]
    print(f"bank {args.name}: {len(todo)} rows to fill (shard {i}/{n})", flush=True)
    start = time.time()
    for k, (pool, seed, row) in enumerate(todo):
        if args.hours and time.time() - start > args.hours * 3600:
            print(f"stopped after {args.hours} h: {len(todo) - k} rows left to this shard")
            break
        if row in read_rows(args.name, pool, seed):  # another fill finished it meanwhile (shards restarted apart)
            continue
        line = fill_one(args.name, plan, pool, seed, row, args.device, args.shard)
        print(f"[{k + 1}/{len(todo)}] {pool} row {row} seed {seed}: {line.get('fid', float('nan')):.3f} FID, "
              f"{line['wall_seconds']:.0f} s", flush=True)


def check_data(plan):
    """The data a bank was made on is the data loaded here (a loader's change would silently change every row)."""
    sha = images_sha256(dataset_from_args(data_args(plan)).images)
    if sha != plan["data_sha256"]:
        raise DataError(f"the data of bank {plan['name']} ({plan['data_flags']}) load differently here: sha256 "
                        f"{sha[:12]} != the bank's {plan['data_sha256'][:12]}")


def status(args):
    plan = load_plan(args.name)
    counts = {}
    for pool, seed, start, stop in plan["blocks"]:
        have = read_rows(args.name, pool, seed)
        done = sum(r in have for r in range(start, stop))
        counts[f"{pool} seed {seed} rows {start}:{stop}"] = (done, stop - start)
    for k, (done, total) in counts.items():
        print(f"  {k:<28} {done:>4} / {total}")
    print(f"bank {args.name}: {sum(d for d, _ in counts.values())} of {sum(t for _, t in counts.values())} rows")


# ----------------------------------------------------------------------------------------------
# use: a run's ground truth from the bank

MIN_HELD_OUT = 24  # a bank with fewer finished held-out rows is not used (the run retrains its own)
MIN_CEILING = 16  # the ceiling's second seed is used from this many held-out subsets on


def prefix(have, stop):
    """How many rows 0, 1, ... are finished without a gap (a run uses a prefix: the plan's order)."""
    n = 0
    while n < stop and n in have:
        n += 1
    return n


def held_out_rows(name, plan, stop):
    """How many held-out rows 0, 1, ... are finished at every seed the ground truth averages; never into the validation
    block (the held-out rows a tuning may look at are not a run's test subsets)."""
    if "validation" in plan:
        stop = min(stop, plan["validation"][2])
    return min(prefix(read_rows(name, "lds", s), stop) for s in range(plan.get("gt_seeds", 1)))


def validation(name):
    """(masks, behaviours) of the bank's validation block: held-out half-subsets of the same kind as a run's test
    subsets, retrained the same way, kept apart from them (`held_out_rows` stops before the block), for settings that
    must be chosen on the LDS's own kind of target (bench/tune_unlearning.py --what models). The plan names the block
    as [pool, seed, start, stop]; its finished rows only, in order."""
    plan = load_plan(name)
    if "validation" not in plan:
        raise DataError(f"bank {name} has no validation block")
    pool, seed, start, stop = plan["validation"]
    done = read_rows(name, pool, seed)
    rows = [r for r in range(start, stop) if r in done]
    if not rows:
        raise DataError(f"bank {name}: no row of its validation block is finished (python bank.py fill {name} "
                        f"--block {pool}:{seed}:{start}:{stop})")
    masks = np.load(os.path.join(folder(name), "masks", f"{pool}.npy"))[rows]
    return masks, behaviours_file(name, read_meta(name), pool, {seed: rows})


def why_not(name, args):
    """None where a run with these flags can use bank `name`, else the reason in a few words."""
    if not os.path.exists(os.path.join(folder(name), "plan.json")):
        return "there is no such bank"
    plan = load_plan(name)
    ours = dict(data_flags=args.data_flags, groups=args.groups, train_flags=args.train_flags, fid_flags=args.fid_flags)
    for key, theirs in fingerprint(plan).items():
        if key == "groups" and (ours[key] or "") != (theirs or ""):
            return f"this run's contributors {ours[key] or 'none'} (the bank's: {theirs or 'none'})"
        if key != "groups" and shlex.split(ours[key]) != shlex.split(theirs):
            return f"this run's {key.replace('_', ' ')} '{ours[key]}' (the bank's: '{theirs}')"
    held = held_out_rows(name, plan, 10 ** 9)
    if held < max(MIN_HELD_OUT, args.k):
        return (f"it holds {held} held-out rows (this run takes {max(MIN_HELD_OUT, args.k)}: python bank.py "
                f"fill {name})")
    pool = prefix(read_rows(name, "pool", 0), 10 ** 9)
    if pool < max(2, args.r):
        return f"its retraining pool holds {pool} models (this run takes {args.r}: python bank.py fill {name})"
    n_loo = len(np.load(path)) if os.path.exists(path := os.path.join(folder(name), "masks", "loo.npy")) else 0
    if args.loo and not (n_loo and prefix(read_rows(name, "loo", 0), n_loo) == n_loo):
        return f"it holds no complete leave-one-out seed yet (python bank.py fill {name})"
    return None


def behaviours_file(name, meta, pool, rows_by_seed):
    """{key: array} of a behaviours file as compute_fid.py writes it, for the bank's rows {seed: [row, ...]} of one
    mask file."""
    finished = {seed: read_rows(name, pool, seed) for seed in rows_by_seed}  # each file read once
    lines = [finished[seed][r] for seed, rows in rows_by_seed.items() for r in rows]
    num = lambda key: np.array([float(x[key]) if x.get(key) not in (None, "") else np.nan for x in lines])  # noqa
    keys = json.loads(meta["behaviors"])
    out = dict(index=num("row").astype(int), seed=num("seed").astype(int),
               mask_sha256=np.array([x["mask_sha256"] for x in lines]), seconds=num("seconds"),
               feature_seconds=np.zeros(len(lines)), loss_seconds=num("loss_seconds"),
               train_seconds=num("train_seconds"), train_macs=num("train_macs"), macs=num("macs"),
               behavior_macs=num("behavior_macs"),
               files=np.array([f"bank/{name}/rows/{pool}-s{x['seed']}.csv:{x['row']}" for x in lines]),
               args=np.array([json.dumps(dict(meta["recipe"], seed=int(x["seed"]), index=int(x["row"])))
                              for x in lines]))
    for k in keys:
        if k == "class":
            n_classes = sum(c.startswith("class:") for c in lines[0])
            out["class_share"] = np.stack([num(f"class:{c}") for c in range(n_classes)], 1)
        else:
            out[k] = num(k)
    scalars = {k: meta[k] for k in ("features", "n_samples", "ddim_steps", "loss_draws", "loss_seed", "behaviors",
                                    "behavior_table", "ref_data", "ref_sha256", "floor_fid", "real_is") if k in meta}
    return dict(out, **scalars, method="retrain", masks=f"{pool}.npy", ref_models="")


def use(args):
    """Write a run's ground truth from the bank (or, with --check, only say whether it would): masks/lds.npy,
    retrain.npy (the bank's retraining pool), loo.npy and their behaviours, lds_ceiling.npz (a second seed of the
    first held-out subsets), and compute_fid.py's feature network and reference statistics, so that the run's own
    models are measured in the bank's features. Prints one line either way; exit 0 where the bank is used, 1 where
    not (the run then retrains its own)."""
    name = args.name
    reason = why_not(name, args)
    if reason:
        print(f"ground truth: retrained in this run, not bank/{name}: {reason}")
        sys.exit(1)
    plan, meta = load_plan(name), read_meta(name)
    check_data(plan)
    n_rows = {pool: len(np.load(path)) if os.path.exists(path := os.path.join(folder(name), "masks", f"{pool}.npy"))
              else 0 for pool in POOLS}
    gt_seeds = plan.get("gt_seeds", 1)  # the ground truth averages this many seeds; the next one is the ceiling's
    held = held_out_rows(name, plan, n_rows["lds"])
    if args.k:
        held = min(held, args.k)
    ceiling = sorted(r for r in read_rows(name, "lds", gt_seeds) if r < held)
    ceiling = ceiling if len(ceiling) >= MIN_CEILING else []  # a few pairs estimate no reliability
    retrain = prefix(read_rows(name, "pool", 0), n_rows["pool"])
    loo_seeds = [s for s in range(10) if n_rows["loo"] and prefix(read_rows(name, "loo", s), n_rows["loo"]) == n_rows["loo"]]
    pools = {"lds": ("lds", {s: range(held) for s in range(gt_seeds)}), "lds_ceiling": ("lds", {gt_seeds: ceiling}),
             "retrain": ("pool", {0: range(retrain)}), "loo": ("loo", {s: range(n_rows["loo"]) for s in loo_seeds})}
    summary = (f"{held} held-out subsets at {gt_seeds} seed{'s' * (gt_seeds > 1)} ({len(ceiling)} with one more), a "
               f"retraining pool of {retrain}" + (f", leave-one-out at {len(loo_seeds)} seeds" if n_rows["loo"] else ""))
    if args.check:
        print(f"ground truth: bank/{name}, {summary}")
        return
    run_dir = args.run
    masks_dir = os.path.join(run_dir, "masks")
    groups = os.path.join(folder(name), "masks", "groups.npy")
    if os.path.exists(groups):
        theirs, ours = np.load(groups), runfolder.load_groups(os.path.join(masks_dir, "unlearn.npy"))
        if ours is not None and not np.array_equal(ours, theirs):
            raise DataError(f"{masks_dir}/groups.npy holds other contributors than bank/{name}'s")
    from data import save_npy
    for run_name, (pool, by_seed) in pools.items():
        rows = sorted({r for rs in by_seed.values() for r in rs})
        if not rows or (run_name == "loo" and not args.loo):
            continue
        if run_name != "lds_ceiling":
            all_masks = np.load(os.path.join(folder(name), "masks", f"{pool}.npy"))
            save_npy(os.path.join(masks_dir, f"{run_name}.npy"), all_masks[:max(rows) + 1])
        save_npz(runfolder.behaviors(run_dir, run_name), **behaviours_file(name, meta, pool, by_seed))
    for f in os.listdir(FEATURES):
        if runfolder.is_reference_cache(f):
            shutil.copyfile(os.path.join(FEATURES, f), os.path.join(run_dir, f))
    made = {(x["commit"], x["machine"]) for pool, by_seed in pools.values() for seed in by_seed
            for x in read_rows(name, pool, seed).values()}
    atomic_write(os.path.join(run_dir, "bank.json"), lambda f: f.write(json.dumps(dict(
        bank=name, held_out=held, ceiling=len(ceiling), retrain=retrain, loo_seeds=loo_seeds,
        made_on=sorted(f"{c} on {m}" for c, m in made)), indent=1).encode()))
    print(f"ground truth: bank/{name}, {summary}")


def block(text):
    """'lds:0:200:264' -> ('lds', 0, 200, 264)."""
    parts = text.split(":")
    try:
        pool, seed, start, stop = parts[0], *map(int, parts[1:])
    except ValueError:
        pool = None
    if pool not in POOLS or len(parts) != 4 or not 0 <= start < stop:
        raise argparse.ArgumentTypeError(f"--block is POOL:SEED:START:STOP with POOL one of {', '.join(POOLS)}, "
                                         f"got {text!r}")
    return pool, seed, start, stop


def shard(text):
    try:
        i, n = map(int, text.split("/"))
        assert 0 <= i < n
    except (ValueError, AssertionError):
        raise argparse.ArgumentTypeError(f"--shard is I/N with 0 <= I < N, got {text!r}")
    return i, n


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("status", help="rows finished and planned")
    s.add_argument("name")
    s = sub.add_parser("fill", help="retrain the missing rows in plan order (resumable)")
    s.add_argument("name")
    s.add_argument("--hours", type=float, default=0, help="stop starting rows after this long (0: fill all)")
    s.add_argument("--rows", type=int, default=0, help="at most this many rows (0: all)")
    s.add_argument("--shard", type=shard, default=(0, 1), help="I/N: every N-th missing row from the I-th")
    s.add_argument("--block", type=block, default=None,
                   help="POOL:SEED:START:STOP: only the missing rows of this block (e.g. the plan's validation block)")
    s.add_argument("--device", default="auto")
    s = sub.add_parser("use", help="a run's ground truth from the bank, where its flags match the bank's")
    s.add_argument("name")
    s.add_argument("--run", required=True)
    for flag in ("--data-flags", "--train-flags", "--fid-flags"):
        s.add_argument(flag, required=True)
    s.add_argument("--groups", default="")
    s.add_argument("--k", type=int, default=0, help="this many held-out subsets, the bank used only once it holds them "
                   "(0: every finished one, at least 24)")
    s.add_argument("--r", type=int, default=2, help="the fewest retraining-pool models the run takes (its R)")
    s.add_argument("--loo", action="store_true", help="the leave-one-out rows too")
    s.add_argument("--check", action="store_true", help="only say whether the bank would be used")
    s = sub.add_parser("init", help="a new bank: its masks and plan")
    s.add_argument("name")
    for flag in ("--data-flags", "--train-flags", "--fid-flags"):
        s.add_argument(flag, required=True)
    s.add_argument("--groups", default="")
    s.add_argument("--lds", type=int, required=True, help="held-out half-subsets")
    s.add_argument("--lds-seed", type=int, required=True)
    s.add_argument("--pool", type=int, required=True, help="retraining pool subsets")
    s.add_argument("--pool-alpha", default="0.5")
    s.add_argument("--pool-seed", type=int, required=True)
    s.add_argument("--loo", action="store_true", help="leave-one-out rows")
    s.add_argument("--gt-seeds", type=int, default=1, help="training seeds the ground truth averages (the next seed "
                   "of the first held-out rows gives the ceiling)")
    s.add_argument("--blocks", required=True, help='JSON [[pool, seed, start, stop], ...] in fill order')
    s.add_argument("--validation", type=block, default=None, help="POOL:SEED:START:STOP: held-out rows kept for "
                   "tuning, never a run's test subsets (a run's held-out rows stop before START)")
    s.add_argument("--force", action="store_true")
    return p.parse_args(argv)


def main(args):
    {"init": init, "fill": fill, "status": status, "use": use}[args.command](args)


if __name__ == "__main__":
    run(main, parse_args())

"""SCHEDULER=slurm bash run_pipeline.sh on a real one-node Slurm cluster (tools/slurm_local.sh starts one;
.ci/run does, and sets REQUIRE_SLURM=1 so that a missing cluster fails the suite instead of skipping).

The jobs ask for one CPU each, so every process of the Slurm run has one thread, as under the local run
of the quick preset it is compared with (numbers equal to the last digit need equal thread counts)."""
import os
import subprocess

import numpy as np
import pytest

from conftest import pipeline, wait_for_a_ground_truth_model
from test_pipeline import artifacts, budget_numbers
import runfolder

SLURM = dict(SCHEDULER="slurm", WAIT=1, CPUS=1, MEM="1G", WALLTIME="00:30:00")
STAGES = ["train", "prune", "masks", "unlearn", "retrain", "seed1", "lds", "behaviours", "baselines", "report"]


def slurm_up():
    try:
        states = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return any(s in ("idle", "mixed", "allocated") for s in states.split())


@pytest.fixture(scope="session")
def slurm():
    if not slurm_up():
        if os.environ.get("REQUIRE_SLURM") == "1":
            pytest.fail("REQUIRE_SLURM=1 but no Slurm node is up: run `sudo bash tools/slurm_local.sh`")
        pytest.skip("no Slurm cluster here (sudo bash tools/slurm_local.sh starts a one-node one)")


def jobs(run):
    return dict(line.split() for line in (runfolder.logs(run, "jobs.txt")).read_text().splitlines())


def logs_of(run):
    return "\n".join(f"--- {f.name}\n{f.read_text()[-1500:]}" for f in sorted(runfolder.logs(run).glob("*.out")))


def same_numbers(run, reference):
    for pool in ("unlearn", "retrain", "lds", "fid2", "fid_seeds"):
        a, b = (dict(np.load(runfolder.behaviors(r, pool))) for r in (run, reference))
        assert np.array_equal(a["fid"], b["fid"]), pool
    assert budget_numbers(run) == budget_numbers(reference)


def squeue(job):
    r = subprocess.run(["squeue", "-h", "-j", job, "-t", "R", "-o", "%i"], capture_output=True, text=True)
    return r.stdout.split()


@pytest.fixture(scope="session")
def slurm_run(slurm, tmp_path_factory):
    """The quick preset through Slurm, interrupted once: when the first ground-truth model is written, the
    running task of the ground-truth array is cancelled (scancel), and once WAIT=1 has reported it the run
    is submitted again and finishes. One run serves both tests below (a Slurm run costs minutes here).
    Session-scoped like quick_run, and named before it by the tests, so that it is made first: this worker
    then runs the Slurm jobs while the other one makes the quick run, instead of waiting for it."""
    run = tmp_path_factory.mktemp("slurm") / "quick"
    p = pipeline("quick", run, **SLURM)
    wait_for_a_ground_truth_model(run, timeout=1200)
    first_jobs = jobs(run)
    running = squeue(first_jobs["lds"])
    assert running, "no ground-truth task was running when the first row finished"
    subprocess.run(["scancel", running[0]], check=True)
    first, _ = p.communicate(timeout=900)
    r = dict(run=run, first=first, first_rc=p.returncode, first_jobs=first_jobs, cancelled=running[0],
             report_after_first=(runfolder.report(run)).exists(),
             done={f: os.stat(f).st_mtime_ns for f in runfolder.models(run, "").rglob("*.pt")})
    p = pipeline("quick", run, **SLURM)
    r["second"], _ = p.communicate(timeout=900)
    assert p.returncode == 0, r["second"][-3000:] + logs_of(run)
    r["second_jobs"] = jobs(run)
    return r


def test_quick_preset_through_slurm_equals_the_local_run(slurm_run, quick_run):
    run, first_jobs = slurm_run["run"], slurm_run["first_jobs"]
    # one job per stage, the per-row stages as arrays of ROWS_PER_TASK=4 rows (quick: M=8, R=3, K=4)
    assert list(first_jobs) == STAGES and "submitted 10 Slurm jobs" in slurm_run["first"] and "squeue -j" in slurm_run["first"]
    for stage, tasks in (("unlearn", 2), ("retrain", 1), ("seed1", 1)):
        assert sorted(f.name for f in runfolder.logs(run).glob(f"{stage}-*.out")) == \
            [f"{stage}-{first_jobs[stage]}_{i}.out" for i in range(tasks)]
    assert "rows 4:8 of 8" in (runfolder.logs(run, f"unlearn-{first_jobs['unlearn']}_1.out")).read_text()
    assert not (runfolder.logs(run, "failed.txt")).exists()  # cleared by the resubmission, which succeeded
    assert not [a for a in artifacts(run) if not a.exists()]
    reference, _ = quick_run
    same_numbers(run, reference)


def test_cancelled_array_task_resubmitted_finishes_without_redoing_rows(slurm_run, quick_run):
    """scancel of a running task of the ground-truth array: the stages after it are cancelled, the log
    names the task; resubmitted, only the unfinished stages are submitted, every finished row is left
    untouched, and the numbers are those of the uninterrupted local run."""
    run, out, lds = slurm_run["run"], slurm_run["first"], slurm_run["first_jobs"]["lds"]
    assert slurm_run["first_rc"] == 1 and "error: the run did not finish" in out
    task = slurm_run["cancelled"].split("_")[1]
    assert f"task {task} of stage lds (job " in out and f"logs/lds-{lds}_{task}.out" in out
    assert not slurm_run["report_after_first"]
    done = slurm_run["done"]
    assert any(f.parent.name == "lds" for f in done) and len([f for f in done if f.parent.name == "lds"]) < 4
    # the resubmission: stages whose outputs all exist are not submitted again
    assert list(slurm_run["second_jobs"]) == ["lds", "behaviours", "baselines", "report"]
    assert "not submitted, their outputs exist: train prune masks unlearn retrain seed1" in slurm_run["second"]
    assert all(os.stat(f).st_mtime_ns == t for f, t in done.items())  # finished rows were not redone
    reference, _ = quick_run
    same_numbers(run, reference)


def test_resubmitting_while_jobs_of_the_run_are_queued_is_refused(slurm, tmp_path):
    """Two submissions of one run at once would train its rows twice side by side: the second is refused.
    The first is held (never runs) and cancelled at the end."""
    run = tmp_path / "held"
    p = pipeline("quick", run, SCHEDULER="slurm", SBATCH_FLAGS="--hold")
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 0, out
    try:
        p = pipeline("quick", run, SCHEDULER="slurm")
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 2 and out.startswith("error: jobs of") and "still queued" in out, out
        assert len(out.strip().splitlines()) == 1
    finally:
        subprocess.run(["scancel", *jobs(run).values()])


def test_job_settings_the_cluster_refuses_end_the_submission_before_any_job(slurm, tmp_path):
    """PARTITION, SBATCH_FLAGS, TASK_TIME and TASK_MEM are the cluster's to judge (run_pipeline.sh cannot know its
    partitions): sbatch --test-only asks it, with every job's options (TASK_TIME and TASK_MEM become --time and --mem
    among them), before the first job is submitted, and a refusal is one line, exit 2."""
    for env, says in ((dict(PARTITION="nope"), "invalid partition"), (dict(SBATCH_FLAGS="--bogus"), "sbatch --help")):
        run = tmp_path / next(iter(env))
        p = pipeline("quick", run, SCHEDULER="slurm", **env)
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 2 and out.startswith("error: sbatch refuses this run's job settings"), (env, out)
        assert len(out.strip().splitlines()) == 1 and says in out.lower(), (env, out)
        assert not runfolder.logs(run, "jobs.txt").exists()  # nothing submitted

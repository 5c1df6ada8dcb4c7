"""tools/one_process.py: several script calls in one interpreter give what separate runs give, a later call
reads an earlier one's output, and bad input is refused as the scripts refuse it."""
import numpy as np
import pytest

from conftest import run_cli, run_script


def test_calls_in_one_process_equal_separate_runs_and_read_earlier_outputs(tmp_path):
    a, b, alone = tmp_path / "a.npy", tmp_path / "b.npy", tmp_path / "alone.npy"
    r = run_script("-m", "tools.one_process", "make_subsets.py", "--count", "5", "--seed", "3", "--out", a, "::",
                   "make_subsets.py", "--count", "2", "--first-of", a, "--out", b)
    assert r.returncode == 0, r.stderr
    assert run_cli("make_subsets", "--count", "5", "--seed", "3", "--out", alone).returncode == 0
    assert np.array_equal(np.load(a), np.load(alone))  # the same draws as a run on its own
    assert np.array_equal(np.load(b), np.load(a)[:2])  # the second call read what the first wrote


@pytest.mark.parametrize("argv, words", [
    (["train.py", "--steps", "1"], "'train.py' is not one of the scripts"),
    (["::", "make_subsets.py", "--count", "2"], "an empty call"),
    (["make_subsets.py", "--count", "2", "--out", "{a}", "::"], "an empty call"),
    (["make_subsets.py", "--count", "2", "--out", "{a}", "::", "make_subsets.py", "--count", "0", "--out", "{b}"],
     "--count: must be a positive integer"),
], ids=["unknown script", "separator first", "separator last", "a later call refused"])
def test_bad_calls_are_refused_with_one_line(tmp_path, argv, words):
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    r = run_script("-m", "tools.one_process", *[x.format(a=a, b=b) for x in argv])
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [r.stderr.strip()], r.stderr
    assert words in r.stderr
    assert not b.exists()
    # a call is refused before it writes; the calls before it have run (as `a && b` in a shell would)
    assert a.exists() == (words.startswith("--count"))

"""The suite checks what it reads: an `assert x, msg` checks x only, so a comparison written into msg (`assert
r.returncode == 0, r.stderr and "done" in r.stdout`) is never checked. This walks every test file's syntax tree."""
import ast
import pathlib

TESTS = pathlib.Path(__file__).parent


def comparisons_in_messages(source):
    """Line numbers of the asserts whose message holds a comparison (==, in, <, is, ...)."""
    return [node.lineno for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Assert) and node.msg is not None
            and any(isinstance(n, ast.Compare) for n in ast.walk(node.msg))]


def test_the_check_finds_a_comparison_hidden_in_a_message():
    planted = 'def f(r):\n    assert r.returncode == 0, r.stderr and "done" in r.stdout\n    assert r.ok, r.stderr\n'
    assert comparisons_in_messages(planted) == [2]


def test_no_assert_message_holds_a_comparison():
    found = {p.name: lines for p in sorted(TESTS.glob("*.py")) if (lines := comparisons_in_messages(p.read_text()))}
    assert found == {}


def test_a_test_that_leaves_torchs_global_settings_changed_fails(tmp_path):
    """tests/state_guard.py, run by pytest on planted tests: each that leaves the thread count, the default dtype or a
    backend flag changed errors, naming it; one that restores what it changed passes; and a test after a failing
    one finds the setting as it was (the guard restores it)."""
    import os
    import subprocess
    import sys
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["state_guard"]\n')
    (tmp_path / "test_planted.py").write_text(
        "import torch\n"
        "def test_threads(): torch.set_num_threads(torch.get_num_threads() + 1)\n"
        "def test_after_threads():\n"
        "    import state_guard\n"
        "    assert torch.get_num_threads() == state_guard.THREADS\n"
        "def test_dtype(): torch.set_default_dtype(torch.float64)\n"
        "def test_mkldnn(): torch.backends.mkldnn.enabled = False\n"
        "def test_restores():\n"
        "    torch.set_default_dtype(torch.float64)\n"
        "    try: pass\n"
        "    finally: torch.set_default_dtype(torch.float32)\n")
    env = dict(os.environ, PYTHONPATH=str(TESTS))
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", "-rA",
                        "test_planted.py"], cwd=tmp_path, env=env, capture_output=True, text=True)
    out = r.stdout
    assert r.returncode == 1 and "5 passed, 3 errors" in out, out[-3000:]  # pytest counts a teardown's error apart
    assert "ERROR at teardown of test_threads" in out and "torch.get_num_threads" in out
    assert "ERROR at teardown of test_dtype" in out and "torch.get_default_dtype torch.float32 -> torch.float64" in out
    assert "ERROR at teardown of test_mkldnn" in out and "torch.backends.mkldnn.enabled True -> False" in out
    assert "ERROR test_planted.py::test_restores" not in out and "ERROR test_planted.py::test_after_threads" not in out

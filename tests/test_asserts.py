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

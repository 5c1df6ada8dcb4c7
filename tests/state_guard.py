"""The process-wide settings a test must leave as it found it (a pytest plugin; tests/conftest.py loads it).

Under pytest-xdist a worker runs many test files one after another in one process, so a test that changes torch's
thread count, a backend flag or the default dtype changes the numbers of every test after it on that worker, and
a recorded value then holds in the suite and not alone, or the reverse. Before each test the guard sets the
suite's thread count and seeds, snapshots every setting of SETTINGS, and after it fails the test (an error in its
teardown) naming each setting it left changed, restoring them so that the tests after it are unaffected. The
global random states (numpy's, Python's) are restored after each test instead: a test may draw from them, it may
not pass its draws on."""
import os
import random

import numpy as np
import pytest
import torch

# Under pytest-xdist (.ci/run: two workers on two cores) every worker and everything it starts gets one thread, so
# that the threads of all running jobs never exceed the cores (oversubscribed OpenMP threads spin). Alone, a test
# gets OMP_NUM_THREADS threads (2 when unset): `OMP_NUM_THREADS=1 python -m pytest -n 0 ...` runs it at one.
THREADS = 1 if os.environ.get("PYTEST_XDIST_WORKER") else int(os.environ.get("OMP_NUM_THREADS") or 2)
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"


def _env_setter(name):
    def set_value(value):
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    return set_value


def _flag(module, name):
    """(read it, set it back) of an attribute flag such as torch.backends.cudnn.benchmark."""
    return lambda: getattr(module, name), lambda value: setattr(module, name, value)


# name: (read it, set it back)
SETTINGS = {
    "torch.get_num_threads": (torch.get_num_threads, torch.set_num_threads),
    "torch.get_default_dtype": (torch.get_default_dtype, torch.set_default_dtype),
    "torch.is_grad_enabled": (torch.is_grad_enabled, torch.set_grad_enabled),
    "torch.is_anomaly_enabled": (torch.is_anomaly_enabled, torch.set_anomaly_enabled),
    "torch.are_deterministic_algorithms_enabled": (
        lambda: (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()),
        lambda v: torch.use_deterministic_algorithms(v[0], warn_only=v[1])),
    "torch.get_float32_matmul_precision": (torch.get_float32_matmul_precision, torch.set_float32_matmul_precision),
    "torch.backends.mkldnn.enabled": _flag(torch.backends.mkldnn, "enabled"),
    "torch.backends.cudnn.enabled": _flag(torch.backends.cudnn, "enabled"),
    "torch.backends.cudnn.benchmark": _flag(torch.backends.cudnn, "benchmark"),
    "torch.backends.cudnn.deterministic": _flag(torch.backends.cudnn, "deterministic"),
    "torch.backends.cudnn.allow_tf32": _flag(torch.backends.cudnn, "allow_tf32"),
    "torch.backends.cuda.matmul.allow_tf32": _flag(torch.backends.cuda.matmul, "allow_tf32"),
    "OMP_NUM_THREADS": (lambda: os.environ.get("OMP_NUM_THREADS"), _env_setter("OMP_NUM_THREADS")),
    "ATEN_CPU_CAPABILITY": (lambda: os.environ.get("ATEN_CPU_CAPABILITY"), _env_setter("ATEN_CPU_CAPABILITY")),
}


def snapshot():
    return {name: read() for name, (read, _) in SETTINGS.items()}


def changes(before, after):
    """{name: (before, after)} of every setting that differs."""
    return {name: (before[name], after[name]) for name in before if after[name] != before[name]}


def restore(before):
    for name, value in before.items():
        SETTINGS[name][1](value)


@pytest.fixture(autouse=True)
def _global_state_guard():
    torch.manual_seed(0)  # every test starts from the same torch random state, whatever ran before it
    torch.set_num_threads(THREADS)
    before, numpy_state, python_state = snapshot(), np.random.get_state(), random.getstate()
    yield
    np.random.set_state(numpy_state)
    random.setstate(python_state)
    changed = changes(before, snapshot())
    if changed:
        restore(before)
        pytest.fail("the test left global state changed (restored now; restore it in the test, e.g. with "
                    "try/finally): " + "; ".join(f"{name} {was!r} -> {now!r}" for name, (was, now) in changed.items()),
                    pytrace=False)

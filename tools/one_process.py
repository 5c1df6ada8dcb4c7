"""Several calls of the project's scripts in one Python process, one after another, each as if it ran on
its own:

    python -m tools.one_process compute_fid.py --models a.pt --out a.npz :: compute_fid.py --models b ...

Why: every interpreter start imports torch, 3-4 s on a 2-core machine, more than the work of a small pool
or of a tiny preset's row range; run_pipeline.sh runs each lane of a stage this way. The calls share
only the interpreter (every script seeds its own draws from its arguments), so their outputs are those of
separate runs. Each call's arguments are parsed when its turn comes (it may read what an earlier one
wrote); the first call that fails ends the process with its exit code: 2 and one line on stderr for bad
input, as the script alone would.

    python -m tools.one_process --check compute_fid.py --behaviors fid,,kid ... :: eval_lds.py --also x ...

With --check nothing runs: each call's arguments are parsed, and the script's check(args), where it has one, asks
what main would find only later (the data and the contributors file load, a reference set matches the data's
shape, a behaviour or baseline is known), reading no file of the run and writing nothing. run_pipeline.sh checks
every call of a run this way before its first stage.
"""
import contextlib
import importlib
import io
import os
import sys

import data

SCRIPTS = ("train_ddpm", "prune", "make_subsets", "unlearn", "compute_fid", "proxy_game", "fit_datamodel", "eval_lds",
           "baselines", "import_model", "bank", "combine")
SEPARATOR = "::"


def split_calls(argv):
    """['a.py', '-x', '::', 'b.py'] -> [('a', ['-x']), ('b', [])]; refuses a script that is not one of ours."""
    calls, current = [], []
    for arg in list(argv) + [SEPARATOR]:
        if arg != SEPARATOR:
            current.append(arg)
            continue
        if not current:
            raise data.DataError(f"an empty call (two '{SEPARATOR}' in a row, or one at an end)")
        name = os.path.splitext(os.path.basename(current[0]))[0]
        if name not in SCRIPTS:
            raise data.DataError(f"{current[0]!r} is not one of the scripts ({', '.join(s + '.py' for s in SCRIPTS)})")
        calls.append((name, [str(a) for a in current[1:]]))
        current = []
    return calls


def call(name, argv):
    """What `python NAME.py ARGV...` does: data.run(main, parse_args(argv)) (a user error ends in one line on
    stderr and SystemExit(2)). import_model lives in tools/."""
    module = importlib.import_module(f"tools.{name}" if name == "import_model" else name)
    return data.run(module.main, module.parse_args(argv))


def check(name, argv):
    """The arguments of `python NAME.py ARGV...` parsed, and the script's check(args) where it has one; nothing
    runs. A bad value ends in one line on stderr, naming the script (a flag such as --steps is several scripts'),
    and SystemExit(2), as the script's own run would."""
    module = importlib.import_module(f"tools.{name}" if name == "import_model" else name)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = module.parse_args(argv)
            if hasattr(module, "check"):
                data.run(module.check, args)
    except SystemExit:
        print(err.getvalue().replace("error: ", f"error: {name}.py: ", 1), end="", file=sys.stderr)
        raise


def main(argv):
    checking = argv[:1] == ["--check"]
    for name, args in split_calls(argv[1:] if checking else argv):
        (check if checking else call)(name, args)


if __name__ == "__main__":
    if sys.argv[1:] in (["-h"], ["--help"]):
        sys.exit(print(__doc__))
    data.run(main, sys.argv[1:])

"""tutorial.ipynb runs top to bottom (small size) and retypes nothing the modules define."""
import ast
import glob
import os

import nbformat

from conftest import ROOT

NOTEBOOK = os.path.join(ROOT, "tutorial.ipynb")


def code_cells():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    return [c.source for c in nb.cells if c.cell_type == "code"]


def test_notebook_redefines_nothing_from_the_modules():
    module_names = set()
    for path in glob.glob(os.path.join(ROOT, "*.py")):
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                module_names.add(node.name)
    assert {"UNet", "ddim_sample", "frechet_distance", "lds"} <= module_names  # the check sees the modules
    defined = {node.name for src in code_cells() for node in ast.walk(ast.parse(src))
               if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    assert not defined & module_names, defined & module_names


def test_committed_notebook_carries_outputs_with_pictures():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 6
    assert not any(o.get("output_type") == "error" for o in outputs)


def test_notebook_executes_top_to_bottom(monkeypatch):
    from nbclient import NotebookClient
    monkeypatch.setenv("TUTORIAL_SIZE", "small")
    monkeypatch.setenv("TQDM_DISABLE", "1")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": ROOT}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors


def test_notebook_reaches_core_functions_with_plain_arguments():
    """The tutorial calls the core steps as a user's code would (unlearn.unlearn, baselines.full_model, ...), never
    a script's command line: no parse_args, no faked argparse Namespace."""
    code = "\n".join(code_cells())
    assert "parse_args" not in code and "Namespace" not in code and "argparse" not in code

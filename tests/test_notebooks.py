"""The notebooks in notebooks/: each runs clean from a fresh kernel, and each .ipynb is in sync
with its jupytext source (.py, percent format).

The notebooks assert their key numbers themselves (the gradient check passes with the flag
off, the flag-on gradients equal the quadratic-loss ones, the reference and Numba kernels agree
to 1e-12, ...), so an exception in any cell fails the test. No network, no MNIST needed.
"""

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
jupytext = pytest.importorskip("jupytext")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
NAMES = [p.stem for p in NOTEBOOKS]


def test_there_are_notebooks():
    assert {"01_the_flag", "02_stepping_through_bpcnn", "03_build_your_own_cnn"} <= set(NAMES)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_notebook_runs_clean(path, monkeypatch):
    monkeypatch.setenv(
        "PYTHONPATH",
        os.pathsep.join(
            [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        ),
    )
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    errors = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not errors


def _cells(nb):
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_notebook_is_paired_with_its_source(path):
    source = path.with_suffix(".py")
    assert source.is_file(), f"{path.name} has no jupytext source {source.name}"
    assert _cells(jupytext.read(path)) == _cells(jupytext.read(source)), (
        f"{path.name} and {source.name} differ: edit the .py, then "
        f"`jupytext --to ipynb {source.name}` and execute it"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_committed_notebook_has_its_outputs(path):
    """The .ipynb is committed executed (it renders on the repository page), without errors."""
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.get("execution_count") for c in code)
    assert any(o.get("output_type") == "display_data" for c in code for o in c.outputs)
    assert not [o for c in code for o in c.outputs if o.get("output_type") == "error"]

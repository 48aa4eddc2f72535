"""Every notebook under notebooks/ runs top to bottom with its small settings.

Code cells are executed in order in one namespace, from notebooks/ as Jupyter would, without a
kernel (no IPython magics in the notebooks, so plain `exec` is enough and needs no extra deps).
"""

import glob
import json
import os
import shutil

import matplotlib
import matplotlib.pyplot as plt
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")))


def test_notebooks_found():
    assert NOTEBOOKS, "no notebooks under notebooks/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_runs(path, tmp_path, monkeypatch, tiny_memory_run):
    matplotlib.use("Agg")
    # Start from a copy of the shared tiny run: the notebook's training cell then only restores
    # and re-evaluates (training itself is tested in test_classifier_train.py).
    config, trained_workdir, _ = tiny_memory_run
    workdir = str(tmp_path / "workdir")
    shutil.copytree(trained_workdir, workdir)
    monkeypatch.setenv("JAXACT_DATA_DIR", os.path.abspath(config.data.data_dir))  # before chdir
    monkeypatch.setenv("JAXACT_NOTEBOOK_TINY", "1")
    monkeypatch.setenv("JAXACT_NOTEBOOK_WORKDIR", workdir)
    monkeypatch.chdir(os.path.dirname(path))
    with open(path) as f:
        notebook = json.load(f)
    namespace = {"__name__": "__main__"}
    try:
        for i, cell in enumerate(notebook["cells"]):
            if cell["cell_type"] != "code":
                continue
            source = "".join(cell["source"])
            assert not any(line.lstrip().startswith(("%", "!")) for line in source.splitlines()), (
                f"cell {i}: IPython magics would not run here")
            try:
                exec(compile(source, f"{os.path.basename(path)}[cell {i}]", "exec"), namespace)
            except Exception as e:
                raise AssertionError(f"{os.path.basename(path)}: code cell {i} failed: {e!r}") from e
    finally:
        plt.close("all")

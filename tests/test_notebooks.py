"""Every notebook under notebooks/ runs top to bottom with its small settings in a real Jupyter
kernel (nbclient, the `notebooks` extra) and draws its figures.

The kernel is this interpreter's ipykernel, started from notebooks/ as Jupyter would, so IPython
magics and inline figures behave as for a user; the test fails on any error output and on a
notebook without a single `image/png` output.
"""

import glob
import os
import re
import shutil

import pytest

nbclient = pytest.importorskip("nbclient", reason="pip install -e '.[notebooks]'")
nbformat = pytest.importorskip("nbformat", reason="pip install -e '.[notebooks]'")
kernelspec = pytest.importorskip("ipykernel.kernelspec", reason="pip install -e '.[notebooks]'")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")))
# Notebooks that train a detector (~80 s on 2 cores): the slow suite, to keep the default one
# under 15 minutes.
SLOW = {"lesson_analysis.ipynb"}
KERNEL = "jaxact-test"


def test_notebooks_found():
    assert NOTEBOOKS, "no notebooks under notebooks/"


def _kernel_manager(tmp_path):
    """A manager for a kernel of this interpreter (`sys.executable -m ipykernel_launcher`): a
    spec of our own, not whatever `python3` kernel the user's Jupyter paths hold."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    kernels = tmp_path / "kernels"
    kernelspec.write_kernel_spec(str(kernels / KERNEL), overrides={"display_name": KERNEL})
    return KernelManager(kernel_name=KERNEL,
                         kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels)]))


def _outputs(notebook):
    for i, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            for output in cell.get("outputs", []):
                yield i, output


@pytest.mark.parametrize("path", [
    pytest.param(p, marks=pytest.mark.slow) if os.path.basename(p) in SLOW else p
    for p in NOTEBOOKS], ids=os.path.basename)
def test_notebook_runs(path, tmp_path, monkeypatch, tiny_memory_run):
    # Start from a copy of the shared tiny run: the notebook's training cell then only restores
    # and re-evaluates (training itself is tested in test_classifier_train.py).
    config, trained_workdir, _ = tiny_memory_run
    workdir = str(tmp_path / "workdir")
    shutil.copytree(trained_workdir, workdir)
    # The kernel inherits this environment, conftest's JAX settings and compilation cache included.
    monkeypatch.setenv("JAXACT_DATA_DIR", os.path.abspath(config.data.data_dir))
    monkeypatch.setenv("JAXACT_NOTEBOOK_TINY", "1")
    monkeypatch.setenv("JAXACT_NOTEBOOK_VARIANT", "smoke")  # the config of `tiny_memory_run`
    monkeypatch.setenv("JAXACT_NOTEBOOK_WORKDIR", workdir)
    # lesson_analysis.ipynb trains its own seconds-long detector and analyses a 3 s lesson.
    monkeypatch.setenv("JAXACT_NOTEBOOK_DETECTOR_WORKDIR", str(tmp_path / "detector"))
    monkeypatch.setenv("JAXACT_NOTEBOOK_DETECTOR_VARIANT", "smoke")
    monkeypatch.setenv("JAXACT_NOTEBOOK_LESSON_SECONDS", "3")
    # Connection files and IPython's profile in the test's own directory, not the user's.
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # a debugger warning per kernel
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook, km=_kernel_manager(tmp_path), timeout=600, allow_errors=True,
        resources={"metadata": {"path": os.path.dirname(path)}})  # cwd notebooks/, as Jupyter
    client.execute()
    nbformat.write(notebook, str(tmp_path / os.path.basename(path)))  # to read on failure
    name = os.path.basename(path)
    errors = [(i, out) for i, out in _outputs(notebook) if out.output_type == "error"]
    assert not errors, "\n".join(
        f"{name}: code cell {i} failed:\n" + re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(out.traceback))
        for i, out in errors)
    images = [i for i, out in _outputs(notebook) if "image/png" in out.get("data", {})]
    assert images, f"{name} drew no figure (no image/png output)"

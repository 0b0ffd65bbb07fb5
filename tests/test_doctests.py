"""Every docstring example of the package runs (as ``pytest --doctest-modules fiji_consensus`` would).

One test per module, so a failure names its module; a module that needs an optional backend that is not
installed (torch, Java, bioimage.io, Dask, Keras) is skipped, naming the missing package.
"""

from __future__ import annotations

import doctest
import importlib
import io
import pkgutil
from contextlib import redirect_stdout

import pytest

import fiji_consensus

#: Optional backends: a module that cannot be imported for lack of one of them is skipped, not failed.
OPTIONAL = {"torch", "jpype", "scyjava", "imagej", "bioimageio", "dask", "distributed", "zarr", "keras",
            "tensorflow", "onnx", "onnxruntime", "xarray"}

MODULES = sorted(
    m.name for m in pkgutil.walk_packages(fiji_consensus.__path__, prefix="fiji_consensus.")
    if m.name.rpartition(".")[2] != "__main__"  # running the command line is not an example
)


def _import(name: str):
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        root = (exc.name or "").split(".")[0]
        if root in OPTIONAL:
            pytest.skip(f"{name} needs the optional package {root!r}, which is not installed")
        raise


@pytest.mark.parametrize("name", ["fiji_consensus", *MODULES])
def test_docstring_examples(name):
    module = _import(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    out = io.StringIO()
    tests = [t for t in finder.find(module, name) if t.examples]
    for t in tests:
        with redirect_stdout(out):
            runner.run(t, out=out.write)
    res = runner.summarize(verbose=False)
    assert res.failed == 0, f"{res.failed} of {res.attempted} examples of {name} failed:\n{out.getvalue()}"


def test_the_examples_are_found():
    """The collection above is not vacuous: the package's modules and their examples are there."""
    assert {"fiji_consensus.evaluate.stats", "fiji_consensus.rois.tracing", "fiji_consensus.style"} <= set(MODULES)
    from fiji_consensus.evaluate import stats

    n = sum(len(t.examples) for t in doctest.DocTestFinder().find(stats))
    assert n >= 8

"""Every ``>>>`` example in scoped_params' docstrings runs and prints what it shows (doctest), and
the README's code runs.

Docstring examples see ``sp``, ``jax``, ``jnp`` and ``np``, as a user's session would after the usual
imports; all run in a fresh temporary directory, so examples that write files leave nothing behind.
"""

import doctest
import importlib
import pkgutil
import re
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoped_params as sp

MODULES = ["scoped_params"] + sorted(
    f"scoped_params.{m.name}" for m in pkgutil.iter_modules(sp.__path__) if m.name != "__main__")


def _tests(module_name):
    module = importlib.import_module(module_name)
    globs = {"sp": sp, "jax": jax, "jnp": jnp, "np": np}
    return [t for t in doctest.DocTestFinder().find(module, module_name, globs=globs) if t.examples]


def test_the_docstrings_hold_examples():
    assert sum(len(t.examples) for m in MODULES for t in _tests(m)) >= 60


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples_run(module_name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report = []
    for test in _tests(module_name):
        runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)


def test_readme_code_blocks_run(tmp_path, monkeypatch):
    """The README's Python blocks run in order in one session (those indented in a list item too)."""
    monkeypatch.chdir(tmp_path)
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    blocks = [textwrap.dedent(b) for b in re.findall(r"```python\n(.*?)```", readme, re.S)]
    assert len(blocks) >= 6
    namespace: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"README.md, Python block {i}", "exec"), namespace)

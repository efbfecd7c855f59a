"""The package ships type information (PEP 561) that holds: mypy passes on scoped_params itself and
on a user's program, whose ``assert_type`` lines pin what a type checker infers from the public API
(``with sp.scope(...) as s`` gives an ``sp.Scope``, ``get_param`` a ``jax.Array``, ...)."""

import importlib.resources
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import scoped_params

ROOT = Path(__file__).resolve().parent.parent
PROGRAM = Path(__file__).resolve().parent / "typecheck" / "user_program.py"


def test_the_package_is_marked_typed():
    assert importlib.resources.files("scoped_params").joinpath("py.typed").is_file()
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '[tool.setuptools.package-data]\nscoped_params = ["py.typed"]' in pyproject


def test_mypy_passes_on_the_package_and_on_a_users_program(tmp_path):
    pytest.importorskip("mypy")
    shutil.copy(PROGRAM, tmp_path / PROGRAM.name)
    package = Path(scoped_params.__file__).resolve().parent
    # Run from elsewhere, as a user's project would; the package is found on MYPYPATH.
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--ignore-missing-imports", f"--cache-dir={tmp_path / 'cache'}",
         PROGRAM.name, str(package)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={**os.environ, "MYPYPATH": str(package.parent)})
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert result.returncode == 0 and not errors, result.stdout + result.stderr
    assert "Success: no issues found in" in result.stdout

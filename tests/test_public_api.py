"""The public API's surface: every public function, class and method has a docstring, and the package
ships type information (PEP 561) that holds: mypy passes on scoped_params itself and on a user's
program, whose ``assert_type`` lines pin what a type checker infers from the public API
(``with sp.scope(...) as s`` gives an ``sp.Scope``, ``get_param`` a ``jax.Array``, ...)."""

import importlib.resources
import importlib.util
import inspect
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import scoped_params

ROOT = Path(__file__).resolve().parent.parent
PROGRAM = Path(__file__).resolve().parent / "typecheck" / "user_program.py"
PUBLIC_MODULES = ("", "layers", "slim", "rnn", "initializers", "checkpoint", "sharding",
                  "mixed_precision")


def _public_callables():
    """(dotted name, object) of every public function and class, and of each class's public methods,
    in sp and its public modules (``__all__`` where a module has one)."""
    seen = set()
    for module_name in PUBLIC_MODULES:
        module = getattr(scoped_params, module_name) if module_name else scoped_params
        prefix = f"sp.{module_name}." if module_name else "sp."
        names = getattr(module, "__all__", None) or [n for n in dir(module) if not n.startswith("_")]
        for name in names:
            obj = getattr(module, name)
            if inspect.ismodule(obj) or not (inspect.isroutine(obj) or inspect.isclass(obj)):
                continue  # submodules, type aliases, constants
            yield prefix + name, obj
            if inspect.isclass(obj) and obj not in seen:
                seen.add(obj)
                for attr, member in vars(obj).items():
                    if not attr.startswith("_") and (inspect.isroutine(member)
                                                      or isinstance(member, property)):
                        yield f"{prefix}{name}.{attr}", getattr(obj, attr)


def test_every_public_function_class_and_method_has_a_docstring():
    names = [name for name, _ in _public_callables()]
    assert len(names) > 250 and "sp.get_param" in names and "sp.slim.arg_scope" in names
    missing = [name for name, obj in _public_callables() if not (inspect.getdoc(obj) or "").strip()]
    assert not missing, f"no docstring: {missing}"


# Every name the API contract (API.md) documents, as a user spells it (that file is not in the
# repository: the list is kept here by hand, in the contract's order).
API_MD_NAMES = (
    # 1. inside a model function
    "get_param", "scope", "Scope", "Scope.name", "Scope.reuse", "Scope.reuse_variables",
    "Scope.original_name_scope", "name_scope", "get_scope", "AUTO_REUSE", "get_state", "set_state",
    "next_rng_key", "regularization_loss", "record",
    # 2. transforms
    "transform", "transform_with_state", "Transformed.init", "Transformed.apply",
    "Transformed.apply_with_intermediates", "Transformed.specs", "flatten", "unflatten",
    "ParamSpec", "partition_trainable", "partition_by_collection", "partition_by_scope",
    # 3. errors: the builtin TF 1.x raises, subclassed
    "ScopedParamsError",
    # 4. outside the trace
    "layers.conv2d", "layers.dense", "layers.batch_normalization", "layers.dropout",
    "layers.max_pooling2d", "layers.average_pooling2d", "layers.flatten", "layers.embedding",
    "checkpoint.save", "checkpoint.load", "checkpoint.init_from_checkpoint", "checkpoint.load_tf1",
    "checkpoint.list_variables", "sharding.Rules", "shardings", "init_sharded",
)


def test_every_name_api_md_lists_is_exported():
    absent = object()
    missing = []
    for dotted in API_MD_NAMES:
        obj = scoped_params
        for part in dotted.split("."):
            obj = getattr(obj, part, absent)
            if obj is absent:
                missing.append(f"sp.{dotted}")
                break
    assert not missing, f"API.md documents these, scoped_params does not export them: {missing}"
    assert scoped_params.AUTO_REUSE is not None and callable(scoped_params.transform)
    assert importlib.util.find_spec("scoped_params.__main__") is not None  # python -m scoped_params


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

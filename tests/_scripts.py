"""Import a script from examples/ or bench/ as a module, so tests exercise the very code users run."""

import importlib.util
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_script(relative_path: str, module_name: str):
    """Execute ``ROOT/relative_path`` as module ``module_name``, registered in ``sys.modules``
    (Flax modules and dataclasses defined in a script look their module up there)."""
    spec = importlib.util.spec_from_file_location(module_name, ROOT / relative_path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def load_example(name: str):
    return load_script(f"examples/{name}.py", f"example_{name}")


def load_bench(name: str):
    return load_script(f"bench/{name}.py", f"bench_{name}")

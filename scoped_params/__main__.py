"""Command line: ``python -m scoped_params inspect PATH [--tensor NAME] [--all]``."""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional


def main(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    """Run the command line; ``prog`` is the name its help shows (None: the invoked one, as the
    ``scoped-params`` console script runs it)."""
    parser = argparse.ArgumentParser(prog=prog, description="Tools for scoped_params checkpoints.")
    commands = parser.add_subparsers(dest="command", required=True)
    inspect = commands.add_parser(
        "inspect", help="list the tensors of a checkpoint, or print their values",
        description="List names, shapes, dtypes and sizes of a scoped_params/safetensors weights "
                    "file or a TF 1.x checkpoint (prefix, one of its files, or its directory).")
    inspect.add_argument("path")
    inspect.add_argument("--tensor", metavar="NAME", help="print this tensor's values")
    inspect.add_argument("--all", action="store_true", help="print every tensor's values (with --tensor too, as TF's "
                              "inspect_checkpoint --all_tensors)")
    args = parser.parse_args(argv)

    # A path that is not UTF-8 (its bytes come as surrogates), a name the terminal's encoding lacks:
    # printed escaped, not a UnicodeEncodeError (stdout is strict in most locales).
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's C++ start-up chatter, if TF loads
    from ._errors import ScopedParamsError
    from ._inspect import OutputError, run

    try:
        # (run flushes what it prints: a closed pipe or a full disk shows there, not at exit)
        failed = run(args.path, tensor=args.tensor, all_values=args.all, out=sys.stdout)
    except (ScopedParamsError, KeyError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"error: {message}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `... | head`: the reader has what it wanted
        # Python flushes stdout again at exit; point it at devnull so that flush cannot fail too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OutputError as e:  # a full disk, a closed terminal: not the checkpoint's fault
        print(f"error: cannot write the output: {e.strerror or e} (errno {e.errno})",
              file=sys.stderr)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # (as for a closed pipe)
        return 1
    except OSError as e:  # what the machine refused (permissions, I/O): said, not a traceback
        print(f"error: cannot read {args.path!r}: {e}", file=sys.stderr)
        return 1
    for error in failed:  # `--all`: the entries that could not be read, after those that could
        print(f"error: {error}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m scoped_params"))

"""The ``dfe`` command line: one module per subcommand in :mod:`engine.commands`.

Each module defines ``register(subparsers)``; its options come from the config dataclasses
through :mod:`engine.options`. Subcommand modules import what they need when they run, so
``dfe --help`` loads no heavy library.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from core.errors import EngineError
from engine.options import EXIT_ERROR, EXIT_OK, EXIT_PARTIAL, EXIT_PORT_BUSY, format_error

log = logging.getLogger("dfe")

__all__ = [
    "COMMAND_MODULES",
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_PARTIAL",
    "EXIT_PORT_BUSY",
    "build_parser",
    "main",
]

# Subcommands in the order `dfe --help` lists them: "engine.commands.<name>".
COMMAND_MODULES: list[str] = [
    "engine.commands.detect",
    "engine.commands.preprocess",
    "engine.commands.train",
    "engine.commands.export",
    "engine.commands.demo",
    "engine.commands.predict",
    "engine.commands.bench",
    "engine.commands.explain",
    "engine.commands.serve",
    "engine.commands.score",
    "engine.commands.eval",
    "engine.commands.calibrate",
    "engine.commands.reproduce",
    "engine.commands.build",
    "engine.commands.watch",
]


def build_parser() -> argparse.ArgumentParser:
    import engine

    parser = argparse.ArgumentParser(
        prog="dfe", description="deepfake-engine: optimized video deepfake detection"
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {engine.__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``dfe`` with ``argv``; returns the exit code (0 ok, 2 error, 3 some inputs failed,
    4 ``dfe serve``'s port is busy). An :class:`EngineError` with an ``exit_code`` attribute
    exits with that code, any other with 2."""
    args = build_parser().parse_args(argv)
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except EngineError as exc:
        print(format_error(exc), file=sys.stderr)
        if args.verbose:
            log.debug("traceback", exc_info=True)
        return int(getattr(exc, "exit_code", EXIT_ERROR))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `dfe detect ... | head`: the reader of our output went away
        # (not our error: end quietly, as `cat` does; Python's own flush at exit must not fail)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())

"""``dfe bench``: the benchmark suite (see benchmarks/)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from benchmarks.run import add_arguments

    p = sub.add_parser("bench", help="run the benchmark suite; writes JSON, Markdown and plots")
    add_arguments(p)
    p.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    from benchmarks.run import run

    return run(args)

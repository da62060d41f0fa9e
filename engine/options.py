"""Command-line options generated from the config dataclasses: the one place flags are mapped.

Each field of :class:`~core.config.EngineConfig`, :class:`SequenceConfig` and
:class:`RayConfig` becomes a flag (its metadata names the flag, the help, the allowed values and
bounds), and :func:`config_from_args` builds the frozen config back from the parsed arguments,
validated by the dataclass itself. Subcommands use these public helpers; none maps an option by
hand.
"""

from __future__ import annotations

import argparse
import dataclasses
import textwrap
from collections.abc import Iterable
from typing import Any, TypeVar

from core.config import (
    DETECTOR_FIELDS,
    EngineConfig,
    RayConfig,
    SequenceConfig,
    default_of,
    field_type,
    flag_of,
)

EXIT_OK = 0
EXIT_ERROR = 2  # a user-facing error: bad input, missing file or dependency
EXIT_PARTIAL = 3  # a batch job finished, but some inputs failed (recorded)
EXIT_PORT_BUSY = 4  # dfe serve: --port is taken on --host (core.errors.PortBusyError)

C = TypeVar("C")


def add_options(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    *,
    only: Iterable[str] | None = None,
    exclude: Iterable[str] = (),
    defaults: dict[str, Any] | None = None,
) -> None:
    """Add a flag for each CLI field of config class ``cls`` (``only`` those, minus
    ``exclude``); ``defaults`` overrides a default for this command only."""
    wanted = set(only) if only is not None else None
    skip = set(exclude)
    overrides = defaults or {}
    for f in dataclasses.fields(cls):
        if not f.metadata.get("cli", True) or f.name in skip:
            continue
        if wanted is not None and f.name not in wanted:
            continue
        meta = f.metadata
        kind, _nullable = field_type(cls, f.name)
        default = overrides.get(f.name, default_of(cls, f.name))
        help_ = meta.get("help", "")
        if kind is bool:
            action = "store_false" if default else "store_true"
            parser.add_argument(flag_of(f), dest=f.name, action=action, help=help_)
            continue
        kwargs: dict[str, Any] = {"dest": f.name, "default": default, "type": kind}
        if meta.get("choices") is not None:
            kwargs["choices"] = meta["choices"]
        if meta.get("metavar"):
            kwargs["metavar"] = meta["metavar"]
        if default is not None and "default" not in help_ and kind is not bool:
            help_ = f"{help_} (default: {default})"
        parser.add_argument(flag_of(f), help=help_, **kwargs)


def config_from_args(
    cls: type[C],
    args: argparse.Namespace,
    *,
    only: Iterable[str] | None = None,
    **overrides: Any,
) -> C:
    """The config ``cls`` from parsed ``args``: the fields ``only`` names (default: every field
    the parser has an argument for; the others keep their defaults); ``overrides`` win.
    Validated by the dataclass."""
    wanted = set(only) if only is not None else None
    values = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(cls)
        if f.init and hasattr(args, f.name) and (wanted is None or f.name in wanted)
    }
    values.update(overrides)
    return cls(**values)


# ------------------------------------------------------------------------------ groups


def add_engine_options(p: argparse.ArgumentParser, **defaults: Any) -> None:
    """Every :class:`EngineConfig` option (``dfe predict``, ``serve``, ``score``, ``eval``,
    ``explain``)."""
    add_options(p.add_argument_group("engine"), EngineConfig, defaults=defaults)


def engine_config(args: argparse.Namespace, **overrides: Any) -> EngineConfig:
    return config_from_args(EngineConfig, args, **overrides)


def detector_config(args: argparse.Namespace, **overrides: Any) -> EngineConfig:
    """The :class:`EngineConfig` of a command that offers only :data:`DETECTOR_FIELDS`."""
    return config_from_args(EngineConfig, args, only=DETECTOR_FIELDS, **overrides)


def add_detector_options(p: argparse.ArgumentParser, **defaults: Any) -> None:
    """The :class:`EngineConfig` options of face detection alone (:data:`DETECTOR_FIELDS`)."""
    add_options(
        p.add_argument_group("detector"), EngineConfig, only=DETECTOR_FIELDS, defaults=defaults
    )


def add_sequence_options(p: argparse.ArgumentParser, *, exclude: Iterable[str] = ()) -> None:
    """``--seq-len`` and ``--sampling`` (:class:`SequenceConfig`)."""
    add_options(p, SequenceConfig, exclude=exclude)


def sequence_config(args: argparse.Namespace, **overrides: Any) -> SequenceConfig:
    return config_from_args(SequenceConfig, args, **overrides)


def add_ray_options(p: argparse.ArgumentParser) -> None:
    """``--ray`` and the :class:`RayConfig` layout options."""
    g = p.add_argument_group("Ray")
    g.add_argument("--ray", action="store_true", help="run on a Ray cluster with Ray Data")
    add_options(g, RayConfig)


def ray_config(args: argparse.Namespace) -> RayConfig:
    return config_from_args(RayConfig, args)


def format_error(exc: BaseException) -> str:
    """An error as the CLI prints it: ``error: ...`` wrapped at 100 columns."""
    text = " ".join(str(exc).split())
    return textwrap.fill(
        f"error: {text}",
        width=100,
        subsequent_indent="  ",
        break_on_hyphens=False,  # paths and flags stay whole: copy-pasteable
        break_long_words=False,
    )

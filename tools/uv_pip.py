"""``pip install`` into a venv with uv, honouring pip's configuration (used by the Makefile).

uv (https://docs.astral.sh/uv/) installs the test venv in about a third of pip's time: it
unpacks wheels in parallel (torch's CUDA build and its NVIDIA libraries are ~6 GB) and resolves
faster. It does not read pip's configuration files or ``PIP_*`` variables, so this script reads
them through ``pip config list`` (files and environment, the precedence pip applies) and passes
the package sources on as uv's own options:

===================  ===========================================================
pip                  uv
===================  ===========================================================
``index-url``        ``--index-url``
``extra-index-url``  ``--extra-index-url`` (one per URL)
``find-links``       ``--find-links`` (one per location)
``constraint``       ``--constraint`` (one per file)
``no-index``         ``--no-index``
``trusted-host``     ``--allow-insecure-host``
``cert``             ``SSL_CERT_FILE`` in uv's environment
``timeout``          ``UV_HTTP_TIMEOUT`` (``default-timeout`` too)
===================  ===========================================================

and ``--index-strategy unsafe-best-match``: like pip, the best version over every index
(uv's default takes a package from the first index that has it).

Usage: ``python tools/uv_pip.py VENV_PYTHON [uv pip install arguments...]``; uv must be
installed in that venv (``VENV/bin/uv``). Exits with uv's status.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

#: sections whose keys apply to ``pip install`` (``install.*`` overrides ``global.*``).
_SECTIONS = ("global", "install")


def parse_pip_config(text: str) -> dict[str, str]:
    """The effective ``pip install`` settings from ``pip config list`` output: lines
    ``<section>.<key>='<value>'`` (``:env:.<key>`` for ``PIP_*`` variables; pip has already
    merged its files, site over user over global). ``PIP_*`` variables win over the files,
    ``install.`` over ``global.``, as in pip. Lines that do not parse are ignored."""
    found: dict[tuple[int, int], dict[str, str]] = {}
    for line in text.splitlines():
        name, sep, raw = line.partition("=")
        if not sep or "." not in name:
            continue
        section, _, key = name.rpartition(".")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            continue
        if section == ":env:":
            rank = (1, 0)
        elif section in _SECTIONS:
            rank = (0, _SECTIONS.index(section))
        else:
            continue
        found.setdefault(rank, {})[key] = str(value)
    settings: dict[str, str] = {}
    for rank in sorted(found):
        settings.update(found[rank])
    return settings


def uv_options(settings: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """uv's command-line options and environment variables for pip's ``settings``
    (:func:`parse_pip_config`), per the table in this module's docstring."""
    args = ["--index-strategy", "unsafe-best-match"]
    env: dict[str, str] = {}
    if settings.get("index-url"):
        args += ["--index-url", settings["index-url"]]
    for option, key in (
        ("--extra-index-url", "extra-index-url"),
        ("--find-links", "find-links"),
        ("--constraint", "constraint"),
        ("--allow-insecure-host", "trusted-host"),
    ):
        for value in settings.get(key, "").split():
            args += [option, value]
    if settings.get("no-index", "").lower() in ("1", "true", "yes", "on"):
        args.append("--no-index")
    if settings.get("cert"):
        env["SSL_CERT_FILE"] = settings["cert"]
    timeout = settings.get("timeout") or settings.get("default-timeout")
    if timeout:
        env["UV_HTTP_TIMEOUT"] = timeout
    return args, env


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    python, rest = argv[0], argv[1:]
    uv = Path(python).parent / "uv"
    if not uv.exists():
        print(f"{uv} not found: install uv into the venv first (pip install uv)", file=sys.stderr)
        return 2
    listed = subprocess.run(
        [python, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False
    )
    args, env = uv_options(parse_pip_config(listed.stdout))
    cmd = [str(uv), "pip", "install", "--python", python, *args, *rest]
    return subprocess.run(cmd, env={**os.environ, **env}, check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""``pip install`` into a venv with uv, honouring pip's configuration (used by the Makefile).

uv (https://docs.astral.sh/uv/) installs the test venv in about a third of pip's time: it
unpacks wheels in parallel (torch's CUDA build and its NVIDIA libraries are ~6 GB) and resolves
faster. It does not read pip's configuration files or ``PIP_*`` variables, so this script reads
them through ``pip config list`` (files and environment, the precedence pip applies) and passes
the package sources on as uv's own options:

===================  ===========================================================
pip                  uv
===================  ===========================================================
``index-url``        ``--index-url`` (``pypi-url`` too)
``extra-index-url``  ``--extra-index-url`` (one per URL)
``find-links``       ``--find-links`` (one per location)
``constraint``       ``--constraint`` (one per file)
``no-index``         ``--no-index``
``trusted-host``     ``--allow-insecure-host``
``cert``             ``SSL_CERT_FILE`` in uv's environment
``proxy``            ``HTTP_PROXY`` and ``HTTPS_PROXY``
``timeout``          ``UV_HTTP_TIMEOUT``, whole seconds rounded up (``default-timeout`` too)
===================  ===========================================================

and ``--index-strategy unsafe-best-match``: like pip, the best version over every index
(uv's default takes a package from the first index that has it). Other settings that may
change what is installed (``client-cert``, ``pre``, ``only-binary``, ``require-hashes``, ...)
are not carried over: the script names them in a warning. A configuration pip refuses (``pip
config list`` fails, a ``no-index`` that is not a yes/no word, a timeout that is not a number)
stops it with exit status 2 before uv runs.

Usage: ``python tools/uv_pip.py VENV_PYTHON [uv pip install arguments...]``; uv must be
installed in that venv (``VENV/bin/uv``); the options above must not be given again in the
arguments (uv refuses a repeated ``--index-url``). Exits with uv's status.
"""

from __future__ import annotations

import ast
import math
import os
import subprocess
import sys
from pathlib import Path

#: sections whose keys apply to ``pip install`` (``install.*`` overrides ``global.*``).
_SECTIONS = ("global", "install")
#: pip's other names for one option (``--default-timeout`` is ``--timeout``, ``--pypi-url``
#: is ``--index-url``); keys are also read with ``_`` as ``-``, as pip reads them.
_ALIASES = {"default-timeout": "timeout", "pypi-url": "index-url"}
#: pip's true and false words (``strtobool``).
_TRUE = ("y", "yes", "t", "true", "on", "1")
_FALSE = ("n", "no", "f", "false", "off", "0")
#: settings that change nothing about what is installed, or that uv has no use for.
_NOT_NEEDED = {
    "disable-pip-version-check", "no-cache-dir", "cache-dir", "progress-bar", "quiet",
    "verbose", "no-color", "root-user-action", "no-input", "log", "python", "require-virtualenv",
    "retries", "no-warn-script-location", "no-python-version-warning", "use-feature",
    "use-deprecated", "break-system-packages", "user", "exists-action",
}  # fmt: skip


def parse_pip_config(text: str) -> dict[str, str]:
    """The effective ``pip install`` settings from ``pip config list`` output: lines
    ``<section>.<key>='<value>'`` (``:env:.<key>`` for ``PIP_*`` variables; pip has already
    merged its files, site over user over global). ``PIP_*`` variables win over the files,
    ``install.`` over ``global.``, as in pip; aliases are read as their option (``_ALIASES``)
    and empty values are skipped, as pip skips them. Lines that do not parse are ignored."""
    found: dict[tuple[int, int], dict[str, str]] = {}
    for line in text.splitlines():
        name, sep, raw = line.partition("=")
        if not sep or "." not in name:
            continue
        section, _, key = name.rpartition(".")
        try:
            value = str(ast.literal_eval(raw))
        except (ValueError, SyntaxError):
            continue
        if not value.strip():
            continue
        if section == ":env:":
            rank = (1, 0)
        elif section in _SECTIONS:
            rank = (0, _SECTIONS.index(section))
        else:
            continue
        key = key.replace("_", "-")
        found.setdefault(rank, {})[_ALIASES.get(key, key)] = value
    settings: dict[str, str] = {}
    for rank in sorted(found):
        settings.update(found[rank])
    return settings


def uv_options(settings: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """uv's command-line options and environment variables for pip's ``settings``
    (:func:`parse_pip_config`), per the table in this module's docstring. Raises
    ``ValueError`` for a setting pip itself would refuse (a ``no-index`` that is not a yes or
    no word, a timeout that is not a number)."""
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
    no_index = settings.get("no-index", "").strip().lower()
    if no_index and no_index not in _TRUE + _FALSE:
        raise ValueError(f"pip's no-index setting {no_index!r} is not a yes or no word")
    if no_index in _TRUE:
        args.append("--no-index")
    if settings.get("cert"):
        env["SSL_CERT_FILE"] = settings["cert"]
    if settings.get("proxy"):  # uv reads the standard proxy variables
        env["HTTP_PROXY"] = env["HTTPS_PROXY"] = settings["proxy"]
    if settings.get("timeout"):
        try:
            seconds = float(settings["timeout"])
        except ValueError:
            raise ValueError(f"pip's timeout {settings['timeout']!r} is not a number") from None
        env["UV_HTTP_TIMEOUT"] = str(max(1, math.ceil(seconds)))  # uv takes whole seconds
    return args, env


def not_carried_over(settings: dict[str, str]) -> list[str]:
    """pip settings that this script does not pass on to uv and that may change what is
    installed or where from (``client-cert``, ``pre``, ``only-binary``, ...)."""
    carried = {
        "index-url", "extra-index-url", "find-links", "constraint", "trusted-host", "no-index",
        "cert", "proxy", "timeout",
    }  # fmt: skip
    return sorted(k for k in settings if k not in carried and k not in _NOT_NEEDED)


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
    if listed.returncode != 0:  # never install from other sources than pip would use
        print(
            f"`{python} -m pip config list` failed (exit {listed.returncode}): "
            f"{listed.stderr.strip()[-500:]}\nFix pip's configuration (pip config debug shows "
            "the files it reads), then run this again",
            file=sys.stderr,
        )
        return 2
    settings = parse_pip_config(listed.stdout)
    try:
        args, env = uv_options(settings)
    except ValueError as exc:
        print(f"{exc}; fix pip's configuration (pip config debug)", file=sys.stderr)
        return 2
    skipped = not_carried_over(settings)
    if skipped:
        print(
            f"warning: pip settings not passed on to uv: {', '.join(skipped)} "
            "(tools/uv_pip.py passes index, find-links, constraint, trusted-host, no-index, "
            "cert, proxy and timeout)",
            file=sys.stderr,
        )
    cmd = [str(uv), "pip", "install", "--python", python, *args, *rest]
    return subprocess.run(cmd, env={**os.environ, **env}, check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

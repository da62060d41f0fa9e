"""tools/uv_pip.py: pip's configuration carried over to uv (what `make setup` installs from)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "uv_pip", Path(__file__).resolve().parents[1] / "tools" / "uv_pip.py"
)
uv_pip = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(uv_pip)


def test_pip_config_list_becomes_uv_options_with_pips_precedence():
    listed = "\n".join(
        [
            ":env:.find-links='/opt/wheels /srv/more'",
            ":env:.default-timeout='180'",
            "global.cert='/etc/ssl/certs/ca-certificates.crt'",
            "global.constraint='/etc/xdg/pip/constraints.txt'",
            "global.extra-index-url='file:///opt/pypi/simple file:///opt/pypi-more/simple'",
            "global.find-links='/ignored/because/env/wins'",
            "global.index-url='https://mirror.example/simple'",
            "install.index-url='https://install.example/simple'",
            "global.trusted-host='mirror.example'",
            "not a setting",
            "global.broken='unterminated",
        ]
    )
    settings = uv_pip.parse_pip_config(listed)
    assert settings["find-links"] == "/opt/wheels /srv/more"  # PIP_FIND_LINKS over the file
    assert settings["index-url"] == "https://install.example/simple"  # install. over global.
    assert "broken" not in settings
    args, env = uv_pip.uv_options(settings)
    pairs = list(zip(args[::2], args[1::2]))
    assert pairs == [
        ("--index-strategy", "unsafe-best-match"),  # pip: the best version over all indexes
        ("--index-url", "https://install.example/simple"),
        ("--extra-index-url", "file:///opt/pypi/simple"),
        ("--extra-index-url", "file:///opt/pypi-more/simple"),
        ("--find-links", "/opt/wheels"),
        ("--find-links", "/srv/more"),
        ("--constraint", "/etc/xdg/pip/constraints.txt"),
        ("--allow-insecure-host", "mirror.example"),
    ]
    assert env == {"SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt", "UV_HTTP_TIMEOUT": "180"}


def test_no_configuration_keeps_uvs_defaults_and_no_index_is_passed_on():
    assert uv_pip.uv_options(uv_pip.parse_pip_config("")) == (
        ["--index-strategy", "unsafe-best-match"],
        {},
    )
    args, _ = uv_pip.uv_options(uv_pip.parse_pip_config("global.no-index='true'"))
    assert args[-1] == "--no-index"


def test_missing_uv_names_the_fix(tmp_path, capsys):
    assert uv_pip.main([str(tmp_path / "bin" / "python")]) == 2
    assert "pip install uv" in capsys.readouterr().err

"""tools/uv_pip.py: pip's configuration carried over to uv (what `make setup` installs from)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

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


def test_aliases_empty_values_and_pips_yes_no_words_read_as_pip_reads_them():
    # --default-timeout is pip's --timeout: the higher scope wins, whatever the key's name
    listed = "global.timeout='30'\n:env:.default-timeout='180'\n:env:.find-links=''"
    listed += "\nglobal.find_links='/opt/wheels'\n:env:.pypi-url='https://alias.example/simple'"
    settings = uv_pip.parse_pip_config(listed)
    assert settings["timeout"] == "180"
    assert settings["find-links"] == "/opt/wheels"  # an empty PIP_FIND_LINKS is no setting
    assert settings["index-url"] == "https://alias.example/simple"
    for word in ("y", "t", "yes", "On", "1"):
        args, _ = uv_pip.uv_options({"no-index": word})
        assert args[-1] == "--no-index", word
    for word in ("n", "f", "off", "0"):
        assert "--no-index" not in uv_pip.uv_options({"no-index": word})[0]
    with pytest.raises(ValueError, match="yes or no"):
        uv_pip.uv_options({"no-index": "2"})


def test_timeout_in_whole_seconds_proxy_and_settings_not_carried_over_are_named():
    _, env = uv_pip.uv_options({"timeout": "15.5", "proxy": "http://proxy.example:3128"})
    assert env["UV_HTTP_TIMEOUT"] == "16"  # uv takes an integer
    assert env["HTTP_PROXY"] == env["HTTPS_PROXY"] == "http://proxy.example:3128"
    with pytest.raises(ValueError, match="not a number"):
        uv_pip.uv_options({"timeout": "soon"})
    settings = {"pre": "true", "client-cert": "/c.pem", "quiet": "1", "cert": "/ca.pem"}
    assert uv_pip.not_carried_over(settings) == ["client-cert", "pre"]


def test_a_pip_configuration_pip_refuses_stops_it_before_uv_runs(tmp_path, capsys, monkeypatch):
    import sys

    venv = tmp_path / "bin"
    venv.mkdir()
    (venv / "uv").write_text("#!/bin/sh\nexit 0\n")  # never reached
    (venv / "python").symlink_to(sys.executable)
    broken = tmp_path / "pip.conf"
    broken.write_text("[global\nindex-url = https://example.invalid/simple\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(broken))
    assert uv_pip.main([str(venv / "python"), "six"]) == 2
    assert "pip config list` failed" in capsys.readouterr().err

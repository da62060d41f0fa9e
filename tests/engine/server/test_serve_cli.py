"""``dfe serve``'s options and port: clear one-line errors and exit codes, never a traceback,
and never after the models have loaded."""

from __future__ import annotations

import socket

import pytest

from core.errors import PortBusyError
from engine.cli import main
from engine.options import EXIT_ERROR, EXIT_PORT_BUSY


@pytest.fixture
def loads(monkeypatch):
    """Records every Engine.load call (and refuses to load anything)."""
    from engine.api import Engine

    calls = []

    def load(*args, **kwargs):
        calls.append(args)
        raise AssertionError("dfe serve loaded a model before checking its options")

    monkeypatch.setattr(Engine, "load", load)
    return calls


def _serve(tmp_path, *extra: str) -> list[str]:
    return ["serve", "--model", str(tmp_path / "no-model"), "--data", str(tmp_path / "d"), *extra]


def _err(capsys) -> str:
    return capsys.readouterr().err


@pytest.mark.parametrize("port", ["99999", "0", "-1", "65536"])
def test_port_out_of_range_is_one_line_error_exit_2(port, tmp_path, capsys, loads):
    assert main(_serve(tmp_path, "--port", port)) == EXIT_ERROR
    err = _err(capsys)
    assert err == f"error: --port must be from 1 to 65535, got {port}\n"
    assert loads == [] and "Traceback" not in err
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--max-upload-mb", "nan"),
        ("--max-upload-mb", "inf"),
        ("--max-upload-mb", "0"),
        ("--queue", "0"),
        ("--workers", "0"),
        ("--retention-hours", "nan"),
        ("--retention-hours", "-1"),
        ("--retention-hours", "inf"),
        ("--max-results-mb", "nan"),
        ("--max-results-mb", "-inf"),
        ("--max-results-mb", "-5"),
        ("--live-sessions", "-1"),
        ("--live-fps", "0"),
        ("--live-fps", "nan"),
    ],
)
def test_bad_numbers_name_the_flag(flag, value, tmp_path, capsys, loads):
    assert main(_serve(tmp_path, f"{flag}={value}")) == EXIT_ERROR
    err = _err(capsys)
    assert err.startswith(f"error: {flag} must be a finite number") and value in err
    assert err.count("\n") == 1 and loads == []


@pytest.mark.parametrize("flag", ["--queue", "--workers", "--port"])
def test_non_integer_counts_are_refused_by_argparse(flag, tmp_path, capsys, loads):
    with pytest.raises(SystemExit) as exit_:
        main(_serve(tmp_path, flag, "nan"))
    assert exit_.value.code == 2
    assert f"argument {flag}: invalid int value: 'nan'" in _err(capsys)
    assert loads == []


def test_busy_port_exits_4_before_loading_a_model(tmp_path, capsys, loads):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(_serve(tmp_path, "--host", "127.0.0.1", "--port", str(port)))
    assert code == EXIT_PORT_BUSY == 4
    err = " ".join(_err(capsys).split())
    assert err.startswith(f"error: --port {port} on 127.0.0.1 is already in use (")
    assert err.endswith("; choose another port with --port")
    assert loads == [] and "Traceback" not in err


def test_busy_port_is_detected_for_the_wildcard_host_too(tmp_path, capsys, loads):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(_serve(tmp_path, "--host", "0.0.0.0", "--port", str(port)))
    assert code == 4 and f"--port {port} on 0.0.0.0 is already in use" in _err(capsys)
    assert loads == []


def test_unresolvable_host_is_error_exit_2(tmp_path, capsys, loads):
    assert main(_serve(tmp_path, "--host", "no-such-host.invalid", "--port", "8000")) == 2
    err = " ".join(_err(capsys).split())
    assert err.startswith("error: --host 'no-such-host.invalid' cannot be resolved")
    assert loads == []


def test_port_busy_error_carries_its_exit_code():
    assert PortBusyError.exit_code == EXIT_PORT_BUSY
    assert issubclass(PortBusyError, OSError)


def test_help_documents_exit_codes_and_the_new_options(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "exit codes:" in out
    for line in ("0  ok", "2  error", "3  some inputs failed", "4  --port is already in use"):
        assert line in out
    assert "--retention-hours" in out and "--max-results-mb" in out and "DELETE" in out


def _serve_without_listening(monkeypatch, serve_engine, tmp_path, *options) -> tuple[int, dict]:
    """``dfe serve`` on a free port with ``options``, the model load and ``uvicorn.run``
    replaced (nothing listens): (exit code, the keywords and ``app`` uvicorn got)."""
    import logging

    import uvicorn

    from engine.api import Engine

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ran = {"port_asked": port}
    monkeypatch.setattr(Engine, "load", lambda *a, **k: serve_engine)
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: ran.update(app=app, **kw))
    level = logging.getLogger("engine.server").level
    try:
        code = main([*_serve(tmp_path, "--port", str(port)), *options])
    finally:
        logging.getLogger("engine.server").setLevel(level)
    return code, ran


def test_free_port_serves_with_the_options_passed_to_the_app(
    tmp_path, monkeypatch, serve_engine, capsys
):
    """With a free port, the model loads and uvicorn gets an app with the retention and the
    budget asked for (uvicorn.run is replaced: nothing listens)."""
    code, ran = _serve_without_listening(
        monkeypatch, serve_engine, tmp_path, "--retention-hours", "1.5",
        "--max-results-mb", "3", "--live-sessions", "1", "--live-fps", "2",
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert ran["port"] == ran["port_asked"] and ran["host"] == "127.0.0.1"
    janitor = ran["app"].state.janitor
    assert janitor.retention_s == 1.5 * 3600 and janitor.max_bytes == 3 * 2**20
    live = ran["app"].state.live.limits
    assert (live.sessions, live.fps, live.accept_fps) == (1, 2.0, 4.0)


def test_dfe_serve_on_loopback_answers_only_loopback_host_names(
    tmp_path, monkeypatch, serve_engine, capsys
):
    """DNS rebinding: a page at evil.example whose name is made to resolve to 127.0.0.1 sends
    ``Host: evil.example`` (and a matching Origin, which the live WebSocket's same-origin check
    accepts). `dfe serve` on loopback answers only loopback names (and --allowed-host), over
    HTTP and the live WebSocket alike."""
    from fastapi.testclient import TestClient
    from starlette.testclient import WebSocketDenialResponse

    code, ran = _serve_without_listening(
        monkeypatch, serve_engine, tmp_path, "--allowed-host", "Scorer.Lan"
    )
    assert code == 0, capsys.readouterr().err
    port = ran["port"]
    with TestClient(ran["app"]) as client:
        for name in ("localhost", "127.0.0.1", "[::1]", "scorer.lan"):
            got = client.get("/api/v1/health", headers={"host": f"{name}:{port}"})
            assert got.status_code == 200, name
        evil = {"host": f"evil.example:{port}", "origin": f"http://evil.example:{port}"}
        assert client.get("/api/v1/health", headers=evil).status_code == 400
        assert client.get("/", headers=evil).status_code == 400
        with pytest.raises(WebSocketDenialResponse) as denied:  # refused at the handshake
            client.websocket_connect("/api/v1/live", headers=evil).__enter__()
        assert denied.value.status_code == 400


def test_allowed_hosts_default_follows_the_bind_address():
    from engine.commands.serve import LOOPBACK_HOSTS, allowed_hosts

    assert allowed_hosts("127.0.0.1", []) == list(LOOPBACK_HOSTS)
    assert allowed_hosts("::1", ["a.lan"]) == [*LOOPBACK_HOSTS, "a.lan"]
    assert allowed_hosts("localhost", []) == list(LOOPBACK_HOSTS)
    assert allowed_hosts("0.0.0.0", []) is None  # any name, with a warning
    assert allowed_hosts("0.0.0.0", ["Scorer.Lan "]) == ["scorer.lan"]

"""Known detector weights: manifest, lookup, verification, offline errors and downloads.

No test touches the network: downloads are served from local zips through ``file://`` URLs or a
monkeypatched opener.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import shutil
import urllib.error
import zipfile
from pathlib import Path

import pytest

import weights
from core.errors import ArtifactNotFoundError, ModelFormatError
from weights import ModelInfo, find_model, known_models, models_dir, sha256_file, verify_model

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("DFE_SHARED", REPO.parent / "shared"))
MODELS = SHARED / "models"

needs_models = pytest.mark.skipif(
    not (MODELS / "det_500m.onnx").is_file(),
    reason=f"shared test models not found in {MODELS} (set DFE_SHARED)",
)

FAKE_BYTES = b"fake onnx bytes for tests " * 100


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any real download attempt fails the test."""

    def refuse(url: str, *args: object, **kwargs: object) -> object:
        if not str(url).startswith("file:"):
            raise AssertionError(f"test tried to reach the network: {url}")
        import urllib.request

        return urllib.request.urlopen(url, *args, **kwargs)

    monkeypatch.setattr(weights, "_urlopen", refuse)
    monkeypatch.delenv("DFE_MODELS", raising=False)


def fake_info(urls: tuple[str, ...], *, data: bytes = FAKE_BYTES, member: str = "det_x.onnx"):
    return ModelInfo(
        name="det_x",
        file="det_x.onnx",
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        packs=("buffalo_x",),
        urls=urls,
        member=member,
    )


def use_manifest(monkeypatch: pytest.MonkeyPatch, *infos: ModelInfo) -> None:
    monkeypatch.setattr(weights, "known_models", lambda: {i.name: i for i in infos})


def make_zip(path: Path, members: dict[str, bytes]) -> str:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path.resolve().as_uri()


# -------------------------------------------------------------------------------------- manifest


def test_manifest_lists_the_known_scrfd_files() -> None:
    models = known_models()
    assert set(models) == {"det_500m", "det_2.5g", "det_10g"}
    d500 = models["det_500m"]
    assert d500.sha256 == "5e4447f50245bbd7966bd6c0fa52938c61474a04ec7def48753668a9d8b4ea3a"
    assert d500.size == 2_524_817
    assert d500.packs == ("buffalo_sc", "buffalo_s")
    assert models["det_2.5g"].sha256 == (
        "041f73f47371333d1d17a6fee6c8ab4e6aecabefe398ff32cca4e2d5eaee0af9"
    )
    assert models["det_2.5g"].packs == ("buffalo_m",)
    assert models["det_10g"].packs == ("buffalo_l",)
    for info in models.values():
        assert info.license == "InsightFace pretrained models: non-commercial research use only"
        assert info.urls[0] == (
            f"https://github.com/deepinsight/insightface/releases/download/v0.7/{info.packs[0]}.zip"
        )
        assert info.member == info.file == f"{info.name}.onnx"
        assert info.sha256 is None or len(info.sha256) == 64


@needs_models
@pytest.mark.parametrize("name", ["det_500m", "det_2.5g"])
def test_manifest_matches_the_real_files(name: str) -> None:
    info = known_models()[name]
    path = MODELS / info.file
    assert path.stat().st_size == info.size
    assert sha256_file(path) == info.sha256
    assert verify_model(path, info) is True


# ------------------------------------------------------------------------------------ models_dir


def test_models_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert models_dir() == tmp_path / "home" / ".cache" / "deepfake-engine" / "models"
    monkeypatch.setenv("DFE_MODELS", str(tmp_path / "env"))
    assert models_dir() == tmp_path / "env"
    assert models_dir(tmp_path / "cli") == tmp_path / "cli"
    assert not (tmp_path / "env").exists(), "models_dir() does not create anything"


# ---------------------------------------------------------------------------------- explicit path


def test_explicit_path_of_unknown_file_is_used_as_is(tmp_path: Path) -> None:
    path = tmp_path / "my_detector.onnx"
    path.write_bytes(b"anything")
    assert find_model(path) == path
    assert find_model(str(path)) == path


@needs_models
def test_explicit_path_of_known_release_is_verified(tmp_path: Path) -> None:
    good = tmp_path / "det_500m.onnx"
    shutil.copy(MODELS / "det_500m.onnx", good)
    assert find_model(good) == good

    corrupt = tmp_path / "corrupt" / "det_500m.onnx"
    corrupt.parent.mkdir()
    data = bytearray(good.read_bytes())
    data[1000] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    with pytest.raises(ModelFormatError, match="corrupt") as err:
        find_model(corrupt)
    assert "buffalo_sc.zip" in str(err.value)


def test_explicit_path_with_known_name_but_other_size_is_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "det_500m.onnx"
    path.write_bytes(b"a re-export")
    with caplog.at_level(logging.INFO, logger="weights"):
        assert find_model(path) == path
    assert "not that release file" in caplog.text


# --------------------------------------------------------------------------------- by name, local


@needs_models
def test_name_is_found_and_verified_in_the_models_dir(tmp_path: Path) -> None:
    shutil.copy(MODELS / "det_500m.onnx", tmp_path / "det_500m.onnx")
    assert find_model("det_500m", models_dir=tmp_path) == tmp_path / "det_500m.onnx"
    assert find_model("det_500m.onnx", models_dir=tmp_path) == tmp_path / "det_500m.onnx"


@needs_models
def test_name_is_found_in_insightface_pack_layout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "buffalo_m").mkdir()
    shutil.copy(MODELS / "det_2.5g.onnx", tmp_path / "buffalo_m" / "det_2.5g.onnx")
    monkeypatch.setenv("DFE_MODELS", str(tmp_path))
    assert find_model("det_2.5g") == tmp_path / "buffalo_m" / "det_2.5g.onnx"


def test_corrupt_file_in_models_dir_raises_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = fake_info(("https://example.invalid/buffalo_x.zip",))
    use_manifest(monkeypatch, info)
    (tmp_path / "det_x.onnx").write_bytes(FAKE_BYTES[:-1] + b"!")
    with pytest.raises(ModelFormatError) as err:
        find_model("det_x", models_dir=tmp_path)
    message = str(err.value)
    assert "corrupt" in message and "Delete it" in message
    assert "https://example.invalid/buffalo_x.zip" in message and info.sha256 in message


def test_unknown_name_lists_supported_values(tmp_path: Path) -> None:
    with pytest.raises(ArtifactNotFoundError, match="supported values are det_500m"):
        find_model("det_99t", models_dir=tmp_path)


# -------------------------------------------------------------------------------- offline / fails


def test_offline_says_which_file_to_put_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(url: str, *args: object, **kwargs: object) -> object:
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(weights, "_urlopen", offline)
    with pytest.raises(ArtifactNotFoundError) as err:
        find_model("det_500m", models_dir=tmp_path / "models")
    message = str(err.value)
    assert str(tmp_path / "models" / "det_500m.onnx") in message
    assert "v0.7/buffalo_sc.zip" in message and "member det_500m.onnx" in message
    assert "5e4447f50245bbd7966bd6c0fa52938c61474a04ec7def48753668a9d8b4ea3a" in message
    assert "name resolution" in message and "non-commercial" in message
    assert isinstance(err.value, FileNotFoundError)
    leftovers = list((tmp_path / "models").iterdir())
    assert leftovers == [], f"temporary files left behind: {leftovers}"


def test_download_disabled_never_opens_a_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def forbidden(*args: object, **kwargs: object) -> object:
        raise AssertionError("download=False must not download")

    monkeypatch.setattr(weights, "_urlopen", forbidden)
    with pytest.raises(ArtifactNotFoundError, match="downloads are disabled"):
        find_model("det_2.5g", models_dir=tmp_path, download=False)


def test_unreachable_file_url_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = (tmp_path / "nowhere" / "buffalo_x.zip").as_uri()
    use_manifest(monkeypatch, fake_info((missing,)))
    with pytest.raises(ArtifactNotFoundError, match="could not be downloaded"):
        find_model("det_x", models_dir=tmp_path / "m")


# ------------------------------------------------------------------------------------- download


def test_download_extract_verify_via_file_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = make_zip(tmp_path / "buffalo_x.zip", {"w600k.onnx": b"x" * 10, "det_x.onnx": FAKE_BYTES})
    use_manifest(monkeypatch, fake_info((url,)))
    target = find_model("det_x", models_dir=tmp_path / "models")
    assert target == tmp_path / "models" / "det_x.onnx"
    assert target.read_bytes() == FAKE_BYTES
    assert sorted(p.name for p in target.parent.iterdir()) == ["det_x.onnx"]
    # the second call finds it locally and downloads nothing
    monkeypatch.setattr(weights, "_urlopen", lambda *a, **k: pytest.fail("downloaded twice"))
    assert find_model("det_x", models_dir=tmp_path / "models") == target


def test_download_falls_back_to_the_next_url_and_finds_nested_members(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = make_zip(tmp_path / "nested.zip", {"buffalo_x/det_x.onnx": FAKE_BYTES})
    dead = (tmp_path / "dead.zip").as_uri()
    use_manifest(monkeypatch, fake_info((dead, good)))
    target = find_model("det_x", models_dir=tmp_path / "models")
    assert target.read_bytes() == FAKE_BYTES


def test_download_with_wrong_content_is_rejected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = make_zip(tmp_path / "buffalo_x.zip", {"det_x.onnx": b"tampered" * 325})
    use_manifest(monkeypatch, fake_info((url,)))
    with pytest.raises(ArtifactNotFoundError, match="corrupt"):
        find_model("det_x", models_dir=tmp_path / "models")
    assert list((tmp_path / "models").iterdir()) == []


def test_download_of_a_non_zip_is_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    page = tmp_path / "error.html"
    page.write_text("<html>rate limited</html>")
    use_manifest(monkeypatch, fake_info((page.as_uri(),)))
    with pytest.raises(ArtifactNotFoundError, match="could not be downloaded"):
        find_model("det_x", models_dir=tmp_path / "models")


def test_download_through_a_monkeypatched_opener(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The https URL of the manifest, answered locally."""
    archive = tmp_path / "served.zip"
    make_zip(archive, {"det_x.onnx": FAKE_BYTES})
    seen: list[str] = []

    def opener(url: str, *, timeout: float) -> object:
        seen.append(url)
        return open(archive, "rb")

    monkeypatch.setattr(weights, "_urlopen", opener)
    use_manifest(monkeypatch, fake_info(("https://example.invalid/buffalo_x.zip",)))
    assert find_model("det_x", models_dir=tmp_path / "m").read_bytes() == FAKE_BYTES
    assert seen == ["https://example.invalid/buffalo_x.zip"]


def test_model_without_known_hash_cannot_be_verified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    info = dataclasses.replace(fake_info(("https://example.invalid/x.zip",)), sha256=None)
    assert not info.verifiable
    use_manifest(monkeypatch, info)
    (tmp_path / "det_x.onnx").write_bytes(b"whatever")
    with caplog.at_level(logging.WARNING, logger="weights"):
        assert find_model("det_x", models_dir=tmp_path) == tmp_path / "det_x.onnx"
    assert "cannot be verified" in caplog.text


@needs_models
def test_a_checkout_finds_the_demo_detector_where_make_demo_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`make demo` takes its detector from the shared assets; the README's next step,
    `dfe predict ... --model demo_out/model` with no --models, must find it there too, offline
    (and verified), while an explicit --models DIR is the only place looked in."""
    monkeypatch.setenv("DFE_MODELS", str(tmp_path / "empty"))
    monkeypatch.setenv("DFE_SHARED", str(MODELS.parent))
    monkeypatch.setattr(weights, "_urlopen", lambda *a, **k: pytest.fail("no download"))
    assert find_model("det_500m", download=False) == MODELS / "det_500m.onnx"
    with pytest.raises(ArtifactNotFoundError, match="downloads are disabled"):
        find_model("det_500m", models_dir=tmp_path / "empty", download=False)

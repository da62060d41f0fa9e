"""What a file is, from its first bytes: the checks made before any decoder opens it (missing,
empty, a directory, a still image), the description an error gives of a file that does not
decode (``_describe``: JPEG, PDF, HTML, an MP4 without its ``moov`` index, ...), and
:func:`is_animated_image` (animated WebP and APNG, from their headers)."""

from __future__ import annotations

import os
from pathlib import Path

from core.errors import ArtifactNotFoundError, InvalidInputError, InvalidVideoError

_BAD_FILE_HINT = (
    "Pass a video file (mp4, webm, avi, mkv, gif, ...); if it is one, it is probably truncated "
    "or corrupt: re-create or re-download it"
)


def _check_file(path: str | os.PathLike[str]) -> str:
    """Reject what is not a readable, non-empty file with an error that says what was found."""
    try:
        p = Path(os.fspath(path))
    except TypeError as exc:
        raise InvalidInputError(f"path must be a str or os.PathLike, got {path!r}") from exc
    if not p.exists():
        raise ArtifactNotFoundError(
            f"video file not found: '{p}' (working directory: {Path.cwd()}); check the path"
        )
    if p.is_dir():
        raise InvalidVideoError(f"'{p}' is a directory; pass the path of a video file")
    size = p.stat().st_size
    if size == 0:
        raise InvalidVideoError(
            f"'{p}' is empty (0 bytes), so there is nothing to decode; the file was probably not "
            "fully written or copied: re-create or re-download it"
        )
    kind, still = _sniff(p, size)
    if still and not is_animated_image(p):
        one = " (a still image: one frame)" if kind in ("a WebP image", "a PNG image") else ""
        raise InvalidVideoError(
            f"'{p}' is {kind}{one}, not a video; pass a video file (mp4, webm, avi, mkv, gif, "
            "animated WebP or PNG, ...)"
        )
    return str(p)


def is_animated_image(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` declares an animation: a WebP whose VP8X header has the animation flag,
    or a PNG with an acTL chunk before its image data (APNG). Read from the headers only; the
    Pillow backend then decodes it, or says why it cannot."""
    try:
        with Path(path).open("rb") as f:
            head = f.read(21)
            if head[:4] == b"RIFF" and head[8:16] == b"WEBPVP8X":
                return len(head) > 20 and bool(head[20] & 0x02)
            if not head.startswith(b"\x89PNG\r\n\x1a\n"):
                return False
            f.seek(8)
            for _ in range(64):  # acTL must come before the first IDAT
                chunk = f.read(8)
                if len(chunk) < 8 or chunk[4:8] in (b"IDAT", b"IEND"):
                    return False
                if chunk[4:8] == b"acTL":
                    return True
                f.seek(int.from_bytes(chunk[:4], "big") + 4, os.SEEK_CUR)
    except OSError:
        return False
    return False


def _sniff(p: Path, size: int) -> tuple[str, bool]:
    """(what the file looks like, whether it is a still image) from its first bytes."""
    try:
        with p.open("rb") as f:
            head = f.read(512)
    except OSError as exc:
        return f"an unreadable file ({exc})", False
    if head.startswith(b"\xff\xd8\xff"):
        return "a JPEG image", True
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "a PNG image", True
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "a WebP image", True
    if head[4:8] == b"ftyp":
        boxes = _mp4_boxes(p, size)
        if "moov" not in boxes:
            return (
                f"an MP4/MOV file without its 'moov' index (top-level boxes: {', '.join(boxes)}), "
                "which happens when the file was cut short or is still being written",
                False,
            )
        return f"an MP4/MOV file (top-level boxes: {', '.join(boxes)})", False
    signatures = (
        (b"\x1a\x45\xdf\xa3", "a Matroska/WebM file"),
        (b"%PDF", "a PDF document"),
        (b"PK\x03\x04", "a ZIP archive"),
        (b"ID3", "an MP3 audio file"),
        (b"fLaC", "a FLAC audio file"),
        (b"OggS", "an Ogg file"),
        (b"GIF8", "a GIF image"),
    )
    for magic, kind in signatures:
        if head.startswith(magic):
            return kind, False
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "a WAV audio file", False
    if head[:4] == b"RIFF":
        return f"a RIFF file of type {head[8:12].decode('latin-1')!r}", False
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html")) or b"<html" in text:
        return "an HTML document", False
    decoded = head.decode("utf-8", errors="replace").rstrip("\ufffd")  # may cut a character
    if decoded and all(c.isprintable() or c in "\t\r\n" for c in decoded):
        return "a text file", False
    return f"unrecognised data (first bytes: {head[:8].hex(' ')})", False


def _mp4_boxes(p: Path, size: int) -> list[str]:
    """Names of the top-level ISO-BMFF boxes; a box that runs past the end is marked 'cut'."""
    boxes: list[str] = []
    offset = 0
    with p.open("rb") as f:
        while offset + 8 <= size and len(boxes) < 32:
            f.seek(offset)
            header = f.read(16)
            box_size = int.from_bytes(header[:4], "big")
            name = header[4:8].decode("latin-1")
            if box_size == 1 and len(header) >= 16:
                box_size = int.from_bytes(header[8:16], "big")
            elif box_size == 0:
                box_size = size - offset
            if box_size < 8:
                boxes.append(f"{name} (bad size)")
                break
            boxes.append(name if offset + box_size <= size else f"{name} (cut)")
            offset += box_size
    return boxes


def _describe(path: str) -> str:
    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError as exc:
        return f"the file cannot be read ({exc})"
    return f"found {_sniff(p, size)[0]}, {size} bytes"

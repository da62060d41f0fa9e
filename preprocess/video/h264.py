"""H.264 access units without decoding: the NAL length-prefix size of a stream, the NAL
headers of a packet, and whether a picture is disposable (no other picture references it, so
seeking may skip it unless it is a target)."""

from __future__ import annotations

from typing import Any


def _h264_nal_length_size(stream: Any) -> int | None:
    """NAL length-prefix size of an H.264 stream (0 for Annex B start codes); None if not H.264."""
    if stream.codec_context.name != "h264":
        return None
    extradata = stream.codec_context.extradata or b""
    if len(extradata) >= 7 and extradata[0] == 1:  # avcC: lengthSizeMinusOne in byte 4
        return (extradata[4] & 3) + 1
    return 0


def _h264_nal_headers(data: bytes, length_size: int) -> list[int] | None:
    """First byte of each NAL unit of an H.264 access unit, or None if the packet does not
    parse cleanly as ``length_size``-prefixed NAL units (0: Annex B start codes)."""
    headers: list[int] = []
    if length_size:
        i = 0
        while i < len(data):
            size = int.from_bytes(data[i : i + length_size], "big")
            i += length_size
            if size == 0 or i + size > len(data):
                return None
            headers.append(data[i])
            i += size
        return headers
    if not data.startswith((b"\x00\x00\x01", b"\x00\x00\x00\x01")):
        return None
    i = data.find(b"\x00\x00\x01")
    while 0 <= i < len(data) - 3:
        headers.append(data[i + 3])
        i = data.find(b"\x00\x00\x01", i + 3)
    return headers


def _h264_is_disposable(data: bytes, length_size: int) -> bool:
    """True for a picture that no other picture references: every slice has nal_ref_idc 0, and
    the packet carries no parameter set or extension NAL that later pictures could need. Any
    doubt (a packet that does not parse) answers False, which only costs decoding time."""
    headers = _h264_nal_headers(data, length_size)
    if not headers:
        return False
    slices = 0
    for header in headers:
        nal_type, ref_idc = header & 0x1F, (header >> 5) & 3
        if header & 0x80:  # forbidden_zero_bit: not H.264 as we understand it
            return False
        if 1 <= nal_type <= 5:  # coded slice (or data partition), 5 = IDR
            if ref_idc or nal_type == 5:
                return False
            slices += 1
        elif nal_type in (7, 8, 13, 14, 15, 20, 21):  # SPS, PPS, SPS ext, prefix, subset SPS, MVC
            return False
    return slices > 0

"""Colour as a player shows it: decoded pictures to 8-bit BT.709 SDR with FFmpeg's own filters.

The model was trained on 8-bit BT.709 SDR frames (OpenCV's decode of ordinary video). Phones and
cameras also record wide-gamut and HDR video; decoded without conversion, such frames look
washed out (BT.2020 primaries read as BT.709) or dim and flat (HDR transfer functions read as
SDR), and the model scores other colours than it was trained on. This module describes a
stream's colour (:class:`ColourDescription`), decides what to convert (:func:`plan_conversion`,
recorded as a :class:`ColourConversion`) and runs the conversion in an FFmpeg filter graph
(:class:`FrameConverter`). No colour science is done here: every formula is FFmpeg's.

What is converted (``colour="bt709"``, the default):

- **8-bit BT.709, BT.601 and untagged SDR video: nothing.** Frames are exactly today's decode
  (and OpenCV's): swscale's YUV -> BGR with the stream's own matrix. Legacy SD primaries
  (BT.601 525/625, BT.470 M, SMPTE 240M, EBU 3213) are treated as BT.709, as OpenCV does.
  10/12-bit SDR BT.709 video is only reduced to 8 bits by that same YUV -> BGR step.
- **Wide-gamut SDR** (BT.2020, DCI-P3 or Display P3 primaries with an SDR transfer such as
  ``bt709``, ``bt2020-10``, ``bt2020-12`` or sRGB): FFmpeg's ``colorspace`` filter,
  ``colorspace=all=bt709:format=yuv4XXp`` (linearise, 3x3 primaries matrix with Bradford
  white-point adaptation, BT.709 transfer and matrix; see FFmpeg's ``vf_colorspace.c``),
  8-bit output with the source's chroma subsampling. This is exactly what
  ``ffmpeg -vf colorspace=all=bt709:format=yuv420p`` gives.
- **HDR: PQ (SMPTE ST 2084, HDR10) and HLG (ARIB STD-B67 / BT.2100)** and any other transfer
  the ``colorspace`` filter does not know: FFmpeg's swscale colour management (FFmpeg >= 8,
  ``libswscale/cms.c``), through the ``scale`` filter with ``out_primaries=bt709``,
  ``out_transfer=bt709`` and ``intent=relative_colorimetric`` (swscale's default intent). The
  tone mapping is the one of ITU-R BT.2408: HDR reference white, 203 cd/m^2 (HLG at 75 %
  signal, PQ at 58 %), becomes SDR white; everything darker keeps its absolute luminance and
  colour (the PQ EOTF is absolute; HLG is displayed through the BT.2100 OOTF for a 1000 cd/m^2
  reference display); brighter highlights are clipped hue-preservingly in the IPT colour space
  and out-of-gamut colours are mapped into BT.709. Diffuse content such as faces keeps the
  colours of an SDR grade of the same scene (measured within about 3-4 levels of 255 on clips
  made from SDR by zimg); specular highlights lose their detail. swscale's ``perceptual``
  intent was rejected: without mastering metadata it assumes a 10000 cd/m^2 PQ peak and darkens
  the mid-tones by about 50 levels. The swscale 3-D LUT behind the conversion takes several
  seconds to build (1.5-7 s measured on a shared 2-core machine) once per picture size and
  colour description in a process; graphs are reused across videos (:data:`_POOL`), and FFmpeg
  releases the GIL meanwhile.

``colour="keep"`` skips every conversion (raw pixels: YUV -> BGR with the stream's matrix only)
and says so in the warning.

Interlaced video: :class:`Deinterlacer` runs FFmpeg's ``bwdif`` (``mode=send_frame``, one frame
per frame) on the frames flagged interlaced, before the colour conversion, as a player
deinterlaces (``deinterlace="auto"``; ``"off"`` keeps the woven fields).

Unspecified fields of a stream that needs conversion are assumed and listed in
:attr:`ColourConversion.assumed`: HDR primaries -> ``bt2020`` (BT.2100), matrix -> ``bt2020nc``
for BT.2020 primaries else ``bt709``, transfer -> ``bt709`` (the BT.2020 SDR curve is the same),
range -> ``tv`` (``pc`` for the ``yuvj`` formats).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from core.config import COLOUR_MODES as CONFIG_COLOUR_MODES
from core.config import DEINTERLACE_MODES as CONFIG_DEINTERLACE_MODES
from core.errors import InvalidInputError, InvalidVideoError

logger = logging.getLogger(__name__)

__all__ = [
    "COLOUR_MODES",
    "DEINTERLACE_MODES",
    "ColourConversion",
    "ColourDescription",
    "DeinterlaceGapError",
    "Deinterlacer",
    "FrameConverter",
    "check_colour",
    "check_deinterlace",
    "describe_frame",
    "field_order_name",
    "plan_conversion",
]

COLOUR_MODES = CONFIG_COLOUR_MODES  # defined once, in core.config
DEINTERLACE_MODES = CONFIG_DEINTERLACE_MODES

# FFmpeg's names (libavutil/pixdesc.c, av_color_*_name; what ffprobe prints) for the values of
# AVColorPrimaries, AVColorTransferCharacteristic, AVColorSpace and AVColorRange.
_PRIMARIES = {
    1: "bt709",
    2: "unknown",
    4: "bt470m",
    5: "bt470bg",
    6: "smpte170m",
    7: "smpte240m",
    8: "film",
    9: "bt2020",
    10: "smpte428",
    11: "smpte431",
    12: "smpte432",
    22: "ebu3213",
}
_TRANSFERS = {
    1: "bt709",
    2: "unknown",
    4: "bt470m",
    5: "bt470bg",
    6: "smpte170m",
    7: "smpte240m",
    8: "linear",
    9: "log100",
    10: "log316",
    11: "iec61966-2-4",
    12: "bt1361e",
    13: "iec61966-2-1",
    14: "bt2020-10",
    15: "bt2020-12",
    16: "smpte2084",
    17: "smpte428",
    18: "arib-std-b67",
}
_MATRICES = {
    0: "gbr",
    1: "bt709",
    2: "unknown",
    4: "fcc",
    5: "bt470bg",
    6: "smpte170m",
    7: "smpte240m",
    8: "ycgco",
    9: "bt2020nc",
    10: "bt2020c",
    11: "smpte2085",
    12: "chroma-derived-nc",
    13: "chroma-derived-c",
    14: "ictcp",
    15: "ipt-c2",
    16: "ycgco-re",
    17: "ycgco-ro",
}
_RANGES = {0: "unknown", 1: "tv", 2: "pc"}

HDR_TRANSFERS = frozenset({"smpte2084", "arib-std-b67"})
# Primaries shown as BT.709 without conversion (OpenCV and today's decode do the same).
_BT709_LIKE_PRIMARIES = frozenset(
    {"bt709", "unknown", "bt470m", "bt470bg", "smpte170m", "smpte240m", "ebu3213"}
)
# SDR transfers: gamma-like curves a BT.709 display shows about right.
_SDR_TRANSFERS = frozenset(
    {
        "bt709",
        "unknown",
        "bt470m",
        "bt470bg",
        "smpte170m",
        "smpte240m",
        "iec61966-2-1",
        "iec61966-2-4",
        "bt1361e",
        "bt2020-10",
        "bt2020-12",
    }
)
# What FFmpeg's colorspace filter accepts (libavfilter/vf_colorspace.c option tables).
_CS_PRIMARIES = frozenset(
    {
        "bt709",
        "bt470m",
        "bt470bg",
        "smpte170m",
        "smpte240m",
        "smpte428",
        "film",
        "smpte431",
        "smpte432",
        "bt2020",
        "ebu3213",
    }
)
_CS_TRANSFERS = frozenset(
    {
        "bt709",
        "bt470m",
        "bt470bg",
        "smpte170m",
        "smpte240m",
        "linear",
        "iec61966-2-1",
        "iec61966-2-4",
        "bt2020-10",
        "bt2020-12",
    }
)
_CS_MATRICES = frozenset({"bt709", "fcc", "bt470bg", "smpte170m", "smpte240m", "bt2020nc"})
# swscale's names for YUV matrices (libavfilter/vf_scale.c, in_color_matrix).
_SCALE_MATRICES = {
    "bt709": "bt709",
    "fcc": "fcc",
    "bt470bg": "bt470",
    "smpte170m": "smpte170m",
    "smpte240m": "smpte240m",
    "bt2020nc": "bt2020",
    "bt2020c": "bt2020",
}
_TRANSFER_NAMES = {"smpte2084": "PQ (SMPTE ST 2084)", "arib-std-b67": "HLG (ARIB STD-B67)"}


def check_colour(colour: str) -> str:
    """Return ``colour`` if it is one of :data:`COLOUR_MODES`, else raise InvalidInputError."""
    if colour not in COLOUR_MODES:
        raise InvalidInputError(
            f"colour={colour!r} is not supported; supported values are "
            f"{', '.join(repr(m) for m in COLOUR_MODES)} ('bt709': convert wide-gamut and HDR "
            "video to 8-bit BT.709 SDR as the model was trained on; 'keep': raw pixels)"
        )
    return colour


@dataclass(frozen=True)
class ColourDescription:
    """How a video stream's pictures encode colour, as FFmpeg reports it on decoded frames.

    Every name is FFmpeg's (what ``ffprobe`` prints): ``primaries`` (``bt709``, ``bt2020``,
    ``smpte432``, ...), ``transfer`` (``bt709``, ``smpte2084`` = PQ, ``arib-std-b67`` = HLG,
    ``bt2020-10``, ...), ``matrix`` (``bt709``, ``bt2020nc``, ``smpte170m``, ``gbr`` for RGB,
    ...), ``range`` (``tv`` = limited, ``pc`` = full); ``unknown`` where the stream does not say.
    ``bit_depth`` is the bits per component of the decoded pictures, ``pix_fmt`` their pixel
    format.
    """

    primaries: str
    transfer: str
    matrix: str
    range: str
    bit_depth: int
    pix_fmt: str

    @property
    def hdr(self) -> bool:
        """True for PQ and HLG video."""
        return self.transfer in HDR_TRANSFERS

    @property
    def wide_gamut(self) -> bool:
        """True when the primaries are not BT.709 or one of the legacy SD sets shown as it."""
        return self.primaries not in _BT709_LIKE_PRIMARIES

    def summary(self) -> str:
        """One line for warnings, e.g. ``HLG (ARIB STD-B67) transfer, bt2020 primaries, ...``."""
        transfer = _TRANSFER_NAMES.get(self.transfer, self.transfer)
        return (
            f"{transfer} transfer, {self.primaries} primaries, {self.matrix} matrix, "
            f"{self.range} range, {self.bit_depth}-bit"
        )


@dataclass(frozen=True)
class ColourConversion:
    """What was done to a stream's colours before the frames were returned.

    ``kind``: ``"none"`` (already what the model expects: frames as decoded), ``"gamut"``
    (wide-gamut SDR converted to BT.709), ``"tone-map"`` (HDR converted to SDR BT.709),
    ``"transfer"`` (another transfer function converted to BT.709), or ``"kept"``
    (``colour="keep"`` on a stream that would have been converted). ``filters`` is the FFmpeg
    filter chain that ran (``""`` when none), ``assumed`` lists source fields the stream left
    unspecified and the value used (``"primaries=bt2020"``), and ``warning`` is the sentence
    added to the clip's warnings (None when nothing needed saying).
    """

    source: ColourDescription
    mode: str
    kind: str
    filters: str = ""
    assumed: tuple[str, ...] = ()
    warning: str | None = None

    @property
    def converted(self) -> bool:
        """True when FFmpeg changed the colours (``kind`` is gamut, tone-map or transfer)."""
        return self.kind in ("gamut", "tone-map", "transfer")


def describe_frame(frame: Any) -> ColourDescription:
    """The :class:`ColourDescription` of a decoded ``av.VideoFrame``."""
    fmt = frame.format
    components = [c for c in fmt.components if not c.is_alpha]
    return ColourDescription(
        primaries=_PRIMARIES.get(frame.color_primaries, "unknown"),
        transfer=_TRANSFERS.get(frame.color_trc, "unknown"),
        matrix="gbr" if fmt.is_rgb else _MATRICES.get(frame.colorspace, "unknown"),
        range=_RANGES.get(frame.color_range, "unknown"),
        bit_depth=max((c.bits for c in components), default=8),
        pix_fmt=fmt.name,
    )


def _needs_conversion(d: ColourDescription) -> str | None:
    """The conversion kind ``d`` needs to become BT.709 SDR, or None."""
    if d.hdr:
        return "tone-map"
    if d.wide_gamut:
        return "gamut"
    if d.transfer not in _SDR_TRANSFERS:
        return "transfer"
    return None


def _yuv8(frame: Any) -> str | None:
    """The 8-bit planar YUV format with ``frame``'s chroma subsampling, if it is planar YUV."""
    fmt = frame.format
    if fmt.is_rgb or len([c for c in fmt.components if not c.is_alpha]) != 3:
        return None
    chroma = fmt.components[1]
    sub_w = round(frame.width / max(chroma.width, 1))
    sub_h = round(frame.height / max(chroma.height, 1))
    return {(2, 2): "yuv420p", (2, 1): "yuv422p", (1, 1): "yuv444p"}.get((sub_w, sub_h))


def plan_conversion(frame: Any, mode: str) -> ColourConversion:
    """Decide how to bring ``frame`` (an ``av.VideoFrame``) to 8-bit BT.709 SDR (see module doc).

    Pure decision, nothing runs here. Raises :class:`InvalidInputError` for an unknown ``mode``.
    """
    check_colour(mode)
    d = describe_frame(frame)
    kind = _needs_conversion(d)
    if kind is None:
        return ColourConversion(source=d, mode=mode, kind="none")
    what = {"tone-map": "HDR", "gamut": "wide-gamut", "transfer": "non-BT.709-transfer"}[kind]
    if mode == "keep":
        return ColourConversion(
            source=d,
            mode=mode,
            kind="kept",
            warning=(
                f"colour: {what} video ({d.summary()}) kept as decoded (colour='keep'): the "
                "frames keep the source's transfer and primaries, unlike the 8-bit BT.709 SDR "
                "frames the model was trained on"
            ),
        )

    assumed: list[str] = []
    primaries, transfer, matrix, rng = d.primaries, d.transfer, d.matrix, d.range
    if primaries == "unknown":
        primaries = "bt2020" if d.hdr else "bt709"
        assumed.append(f"primaries={primaries}")
    if matrix == "unknown":
        matrix = "bt2020nc" if primaries == "bt2020" else "bt709"
        assumed.append(f"matrix={matrix}")
    if transfer == "unknown":
        transfer = "bt709"
        assumed.append(f"transfer={transfer}")
    if rng == "unknown" and matrix != "gbr":
        rng = "pc" if d.pix_fmt.startswith("yuvj") else "tv"
        assumed.append(f"range={rng}")

    out_fmt = _yuv8(frame)
    if (
        kind == "gamut"
        and out_fmt
        and primaries in _CS_PRIMARIES
        and transfer in _CS_TRANSFERS
        and matrix in _CS_MATRICES
        and d.bit_depth in (8, 10, 12)
        and not d.pix_fmt.startswith("yuvj")
    ):
        filters = (
            f"colorspace=all=bt709:iprimaries={primaries}:itrc={transfer}:ispace={matrix}:"
            f"irange={rng}:format={out_fmt}"
        )
        how = "FFmpeg's colorspace filter"
    else:
        scale = [f"in_primaries={primaries}", f"in_transfer={transfer}"]
        if matrix != "gbr":
            if matrix not in _SCALE_MATRICES:
                raise InvalidVideoError(
                    f"the video's {matrix!r} YUV matrix cannot be converted to BT.709 by "
                    "FFmpeg's swscale; pass colour='keep' to read its pixels unconverted"
                )
            scale += [f"in_color_matrix={_SCALE_MATRICES[matrix]}", f"in_range={rng}"]
        scale += [
            "out_primaries=bt709",
            "out_transfer=bt709",
            "out_color_matrix=bt709",
            "out_range=tv",
            "intent=relative_colorimetric",
        ]
        filters = f"scale={':'.join(scale)},format={out_fmt or 'bgr24'}"
        how = (
            "FFmpeg's swscale (BT.2408: reference white 203 cd/m^2 becomes SDR white, "
            "brighter highlights are clipped)"
            if kind == "tone-map"
            else "FFmpeg's swscale"
        )
    verb = "tone-mapped" if kind == "tone-map" else "converted"
    note = f"; unspecified {', '.join(assumed)} assumed" if assumed else ""
    return ColourConversion(
        source=d,
        mode=mode,
        kind=kind,
        filters=filters,
        assumed=tuple(assumed),
        warning=(
            f"colour: {what} video ({d.summary()}) {verb} to 8-bit BT.709 SDR by {how}{note}; "
            "pass colour='keep' for unconverted pixels"
        ),
    )


class _GraphPool:
    """Configured filter graphs, reused across videos of the same shape and colour.

    The swscale colour-management LUT is built when a graph sees its first frame (seconds), so
    a graph is checked out by one converter at a time and returned afterwards for the next
    video. At most ``size`` idle graphs are kept, least recently used dropped first.
    """

    def __init__(self, size: int = 6) -> None:
        self.size = size
        self._idle: OrderedDict[tuple[str, str], list[Any]] = OrderedDict()
        self._lock = threading.Lock()

    def acquire(self, key: tuple[str, str]) -> Any | None:
        with self._lock:
            graphs = self._idle.get(key)
            if not graphs:
                return None
            graph = graphs.pop()
            if not graphs:
                del self._idle[key]
            return graph

    def release(self, key: tuple[str, str], graph: Any) -> None:
        with self._lock:
            self._idle.setdefault(key, []).append(graph)
            self._idle.move_to_end(key)
            while sum(len(g) for g in self._idle.values()) > self.size:
                oldest = next(iter(self._idle))
                self._idle[oldest].pop(0)
                if not self._idle[oldest]:
                    del self._idle[oldest]


_POOL = _GraphPool()


class FrameConverter:
    """Converts decoded ``av.VideoFrame`` objects as :func:`plan_conversion` decides.

    One per decoding session (not thread-safe); call :meth:`close` when done so its filter
    graph can serve the next video. ``conversion`` is the plan of the first frame; a stream whose
    colour description changes mid-way gets a new plan, recorded in ``changes``.
    """

    def __init__(self, av: Any, mode: str, path: str = "") -> None:
        self.av = av
        self.mode = check_colour(mode)
        self.path = path  # named in error messages
        self.conversion: ColourConversion | None = None
        self.changes: list[ColourConversion] = []
        self._key: tuple[Any, ...] | None = None
        self._plan: ColourConversion | None = None
        self._graph: Any = None
        self._graph_key: tuple[str, str] | None = None
        self.seen = 0  # frames converted
        self.interlaced = 0  # of which still flagged interlaced (woven fields: not deinterlaced)

    def __call__(self, frame: Any) -> Any:
        """``frame`` itself when nothing is to convert, else FFmpeg's 8-bit BT.709 frame."""
        self.seen += 1
        self.interlaced += bool(getattr(frame, "interlaced_frame", False))
        key = (
            frame.format.name,
            frame.width,
            frame.height,
            frame.colorspace,
            frame.color_range,
            frame.color_trc,
            frame.color_primaries,
        )
        if key != self._key:
            self._replan(frame, key)
        if self._graph is None:
            return frame
        try:
            self._graph.vpush(frame)
            return self._graph.vpull()
        except self.av.error.FFmpegError as exc:
            self._drop_graph()
            filters = self._plan.filters if self._plan else ""
            raise InvalidVideoError(
                f"'{self.path}': FFmpeg could not convert a frame's colours with {filters!r} "
                f"({exc}); pass colour='keep' to read the pixels unconverted"
            ) from exc

    def _replan(self, frame: Any, key: tuple[Any, ...]) -> None:
        try:
            plan = plan_conversion(frame, self.mode)
        except InvalidVideoError as exc:
            raise InvalidVideoError(f"'{self.path}': {exc}") from exc
        self._key = key
        if self.conversion is None:
            self.conversion = plan
        elif plan != self._plan:
            self.changes.append(plan)
        self._plan = plan
        self._drop_graph(keep=True)
        if plan.filters:
            self._graph_key = (self._buffer_args(frame), plan.filters)
            self._graph = _POOL.acquire(self._graph_key) or self._build(*self._graph_key)

    @staticmethod
    def _buffer_args(frame: Any) -> str:
        args = f"video_size={frame.width}x{frame.height}:pix_fmt={frame.format.name}"
        args += ":time_base=1/90000:pixel_aspect=1/1"
        matrix = _MATRICES.get(frame.colorspace)
        if matrix and matrix != "unknown" and not frame.format.is_rgb:
            args += f":colorspace={matrix}"
        rng = _RANGES.get(frame.color_range)
        if rng and rng != "unknown":
            args += f":range={rng}"
        return args

    def _build(self, buffer_args: str, filters: str) -> Any:
        av = self.av
        graph = av.filter.Graph()
        try:
            last = graph.add("buffer", buffer_args)
            for spec in filters.split(","):
                name, _, args = spec.partition("=")
                node = graph.add(name, args or None)
                last.link_to(node)
                last = node
            sink = graph.add("buffersink")
            last.link_to(sink)
            graph.configure()
        except av.error.FFmpegError as exc:
            raise InvalidVideoError(
                f"'{self.path}': FFmpeg cannot build the colour conversion {filters!r} ({exc}); "
                "pass colour='keep' to read the pixels unconverted"
            ) from exc
        return graph

    def _drop_graph(self, keep: bool = False) -> None:
        if self._graph is not None and keep and self._graph_key is not None:
            _POOL.release(self._graph_key, self._graph)
        self._graph, self._graph_key = None, None

    def close(self) -> None:
        """Return the filter graph to the pool for the next video of this shape and colour."""
        self._drop_graph(keep=True)

    def warnings(self) -> list[str]:
        """The conversion's warning, plus one line if the colour description changed."""
        out = [self.conversion.warning] if self.conversion and self.conversion.warning else []
        for change in self.changes:
            out.append(
                f"colour: the stream's colour description changes mid-way to "
                f"{change.source.summary()}; those frames were handled as {change.kind!r}"
            )
        return out


# --------------------------------------------------------------------------- deinterlacing

#: FFmpeg's AVFieldOrder values (``tt``, ``bb``, ``tb``, ``bt`` as ffprobe prints them), named
#: by the field shown first, as bwdif's ``parity`` names it: ``tff`` or ``bff``. The first
#: letter is the first field, as FFmpeg's own decoders read a container's field order (rawvideo,
#: v210: ``tt`` and ``tb`` are top field first) and as its CLI writes it (``tb`` for top field
#: first frames of every codec but MJPEG), although libavcodec's comment has ``tb`` as "bottom
#: displayed first".
_FIELD_ORDERS = {0: "unknown", 1: "progressive", 2: "tff", 3: "bff", 4: "tff", 5: "bff"}
#: Codecs whose FFmpeg decoder flags each interlaced picture itself (from the bitstream, or
#: from the container's field order for raw formats): their frames' flags are trusted, so a
#: stream interlaced only in part has only its interlaced part deinterlaced. Other codecs
#: (lossless intermediates such as HuffYUV or Ut Video) carry no such flag: they are
#: deinterlaced when the container's field order says the stream is interlaced.
_FLAGGING_CODECS = frozenset(
    {
        "h264",
        "hevc",
        "mpeg1video",
        "mpeg2video",
        "mpeg4",
        "h263",
        "vc1",
        "wmv3",
        "prores",
        "dvvideo",
        "dnxhd",
        "ffv1",
        "mjpeg",
        "rawvideo",
        "v210",
        "cfhd",
        "vp8",
        "vp9",
        "av1",
    }
)
#: bwdif as a player runs it: one frame out per frame in (``send_frame``), the field order read
#: from each frame's own flag (``parity=auto``), only the frames flagged interlaced
#: (``deint=interlaced``; the others pass through untouched).
BWDIF_FLAGGED = "bwdif=mode=send_frame:parity=auto:deint=interlaced"


def check_deinterlace(mode: str) -> str:
    """Return ``mode`` if it is one of :data:`DEINTERLACE_MODES`, else raise InvalidInputError."""
    if mode not in DEINTERLACE_MODES:
        raise InvalidInputError(
            f"deinterlace={mode!r} is not supported; supported values are "
            f"{', '.join(repr(m) for m in DEINTERLACE_MODES)} ('auto': interlaced video is "
            "deinterlaced with FFmpeg's bwdif as a player does; 'off': woven fields kept)"
        )
    return mode


def field_order_name(value: int | None) -> str:
    """``tff``, ``bff``, ``progressive`` or ``unknown`` for an FFmpeg AVFieldOrder value."""
    return _FIELD_ORDERS.get(int(value or 0), "unknown")


class DeinterlaceGapError(Exception):
    """A frame to deinterlace lacks a neighbour it needs (the previous or next frame was not
    decoded in the same run): the caller decodes sequentially instead."""


class Deinterlacer:
    """FFmpeg's ``bwdif`` on a stream's frames, as a player deinterlaces (see :meth:`feed`).

    ``mode`` ``"off"`` passes every frame on as decoded. With ``"auto"``, a frame flagged
    interlaced (woven fields) goes through ``bwdif`` in ``send_frame`` mode: one frame out per
    frame in, so frame indices and counts do not change; each missing line is interpolated from
    its field's neighbours in space and in the previous and next frames (the filter reads three
    frames). A stream whose codec carries no per-frame flag (see ``_FLAGGING_CODECS``) but whose
    container's field order is ``tff``/``bff`` is deinterlaced whole, in that order.

    Only the frames to return (targets) are filtered: a target is pushed with the frame before
    it, and is done once the frame after it has been pushed (or the stream ended: bwdif then
    repeats the last frame, as over a whole stream). The result is exactly what one ``bwdif``
    over the whole stream gives for that frame, because bwdif reads no other frames; a size or
    pixel-format change restarts the filter, as FFmpeg's CLI reconfigures it there.

    One per decoding session; not thread-safe.
    """

    def __init__(
        self,
        av: Any,
        mode: str = "auto",
        path: str = "",
        *,
        field_order: int | None = None,
        codec: str = "",
    ) -> None:
        self.av = av
        self.mode = check_deinterlace(mode)
        self.path = path
        self.field_order = field_order_name(field_order)  # the stream's declared order
        interlaced_stream = self.field_order in ("tff", "bff")
        self._stream_spec = (
            f"bwdif=mode=send_frame:parity={self.field_order}:deint=all"
            if interlaced_stream and codec not in _FLAGGING_CODECS
            else None
        )
        #: whether targets need their neighbours decoded (the stream says it is interlaced)
        self.expects_fields = self.mode == "auto" and interlaced_stream
        self.deinterlaced = 0  # targets deinterlaced
        self.filters: str | None = None  # the bwdif filter that ran (None: none ran)
        self._last: tuple[int, Any] | None = None  # the last frame fed
        self._graph: Any = None
        self._geometry: tuple[int, int, str] | None = None
        self._queue: list[tuple[int, bool]] = []  # pushed frames awaiting output: (index, target)
        self._pending = 0  # targets in the queue

    def spec(self, frame: Any) -> str | None:
        """The bwdif filter ``frame`` goes through, or None when it is passed on as decoded."""
        if self.mode == "off":
            return None
        if self._stream_spec is not None:
            return self._stream_spec
        return BWDIF_FLAGGED if frame.interlaced_frame else None

    def feed(self, index: int, frame: Any, target: bool) -> list[tuple[int, Any]]:
        """Frame ``index`` (presentation order) of the current run; ``target``: it is to be
        returned. Returns the targets now ready, ``(index, frame)`` in index order: a
        progressive target at once (the decoded frame itself), an interlaced one once its next
        frame was fed. Raises :class:`DeinterlaceGapError` when a target's neighbour is missing
        from the run."""
        if self.mode == "off":
            return [(index, frame)] if target else []
        spec = self.spec(frame) if target else None
        prev, self._last = self._last, (index, frame)
        adjacent = prev is not None and prev[0] == index - 1
        ready: list[tuple[int, Any]] = []
        pushed = False
        if self._graph is not None:  # open while a target waits for its next frame
            if not adjacent:
                if self._pending:
                    raise DeinterlaceGapError(f"frame {self._queue[-1][0] + 1} was not decoded")
                self._close()
            elif self._geometry != _geometry(frame):
                ready += self._drain()  # a size change ends the filter's run (as FFmpeg's CLI)
            else:
                ready += self._push(index, frame, spec is not None)
                pushed = True
            if self._graph is not None and not self._pending:
                self._close()
        if spec is not None and not pushed:
            if index > 0 and not adjacent:
                raise DeinterlaceGapError(f"frame {index - 1} before frame {index} not decoded")
            self._open(frame, spec)
            if adjacent and _geometry(prev[1]) == self._geometry:  # type: ignore[index]
                self._push(prev[0], prev[1], False)  # type: ignore[index]
            ready += self._push(index, frame, True)
            if not self._pending:
                self._close()
        if target and spec is None:
            ready.append((index, frame))
        return ready

    def finish(self) -> list[tuple[int, Any]]:
        """The end of the stream: the targets still waiting for a next frame (bwdif takes the
        last frame as its own next, as at the end of a whole stream)."""
        ready = self._drain() if self._graph is not None else []
        self._last = None
        return ready

    def reset(self) -> None:
        """A new run (after a seek): no frame before it is adjacent. Raises
        :class:`DeinterlaceGapError` when a target still waits for its next frame."""
        if self._pending:
            raise DeinterlaceGapError("a seek left a frame to deinterlace without its next frame")
        self._close()
        self._last = None

    def close(self) -> None:
        self._close()
        self._last = None

    # ----- the filter graph

    def _open(self, frame: Any, spec: str) -> None:
        av = self.av
        graph = av.filter.Graph()
        try:
            src = graph.add("buffer", FrameConverter._buffer_args(frame))
            name, _, args = spec.partition("=")
            node = graph.add(name, args)
            sink = graph.add("buffersink")
            src.link_to(node)
            node.link_to(sink)
            graph.configure()
        except av.error.FFmpegError as exc:
            raise InvalidVideoError(
                f"'{self.path}': FFmpeg cannot deinterlace this video's "
                f"{frame.format.name} frames with {spec!r} ({exc}); pass deinterlace='off' to "
                "read them with their fields woven"
            ) from exc
        self._graph, self._geometry, self._queue, self._pending = graph, _geometry(frame), [], 0
        self.filters = self.filters or spec

    def _push(self, index: int, frame: Any, target: bool) -> list[tuple[int, Any]]:
        try:
            self._graph.vpush(frame)
        except self.av.error.FFmpegError as exc:
            self._close()
            raise InvalidVideoError(
                f"'{self.path}': FFmpeg could not deinterlace frame {index} ({exc}); pass "
                "deinterlace='off' to read the frames with their fields woven"
            ) from exc
        self._queue.append((index, target))
        self._pending += target
        return self._pull()

    def _pull(self) -> list[tuple[int, Any]]:
        ready = []
        av = self.av
        while self._queue:
            try:
                out = self._graph.vpull()
            except (av.error.BlockingIOError, av.error.EOFError):
                break
            index, target = self._queue.pop(0)
            if target:
                self._pending -= 1
                self.deinterlaced += 1
                ready.append((index, out))
        return ready

    def _drain(self) -> list[tuple[int, Any]]:
        ready: list[tuple[int, Any]] = []
        if self._pending:
            with contextlib.suppress(self.av.error.FFmpegError):
                self._graph.vpush(None)  # end of stream: bwdif repeats the last frame
            ready = self._pull()
        if self._pending:
            raise InvalidVideoError(
                f"'{self.path}': FFmpeg's bwdif returned fewer frames than it was given"
            )
        self._close()
        return ready

    def _close(self) -> None:
        self._graph, self._geometry, self._queue, self._pending = None, None, [], 0


def _geometry(frame: Any) -> tuple[int, int, str]:
    return frame.width, frame.height, frame.format.name

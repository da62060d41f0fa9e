"""Which FFmpeg input options exist, so that a misspelt, removed or misplaced one is an error.

``av.open(url, options={...})`` hands the dictionary to ``avformat_open_input``: the format
context, the demuxer and the protocol (``rtsp_transport``, ``timeout``, ``reconnect``,
``probesize``, v4l2's ``input_format``). FFmpeg gives back the entries it did not use instead of
failing, and PyAV drops that list, so a misspelt option (``rtsp_tranport=tcp``), one FFmpeg
removed (``stimeout``, dropped from the RTSP demuxer in FFmpeg 5; ``timeout`` replaced it), an
output option (``movflags``) or a decoder option (``threads``, ``skip_frame``: PyAV does not
pass these options to the decoder) would have no effect without a word. The ``ffmpeg`` tool
refuses such names (``opt_default`` in FFmpeg's ``fftools/cmdutils.c`` looks them up with
``av_opt_find``); :func:`check_input_options` looks each name up through ctypes among
libavformat's input options (the format context's flagged ``AV_OPT_FLAG_DECODING_PARAM``, and
every option of a demuxer's or a protocol's class: ``_FFmpegOptions._index``), in the FFmpeg
libraries PyAV itself uses (so the answer is that build's, whatever its version; not
the FFmpeg another package such as OpenCV bundles). A name FFmpeg knows that the opened format
and protocol do not use (``rtsp_transport`` on a file) is not caught: FFmpeg's list of unused
entries would tell, and PyAV does not return it.
"""

from __future__ import annotations

import ctypes
import difflib
import logging
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from core.errors import InvalidInputError

log = logging.getLogger(__name__)

# libavutil/opt.h
_AV_OPT_SEARCH_CHILDREN = 1 << 0
_AV_OPT_SEARCH_FAKE_OBJ = 1 << 1
_AV_OPT_FLAG_DECODING_PARAM = 2

#: Options FFmpeg renamed or removed that users still copy from old advice: the hint given.
RENAMED = {
    "stimeout": "timeout (RTSP's socket timeout, in microseconds, since FFmpeg 5)",
}
#: ``ffmpeg`` command-line flags that are not options of an input: what to use instead.
CLI_FLAGS = {
    "pix_fmt": "pixel_format (the raw/v4l2 demuxers' option)",
    "r": "framerate (the raw/v4l2 demuxers' option), or dfe watch --fps for the rate scored",
    "s": "video_size (the raw/v4l2 demuxers' option)",
    "f": "dfe watch --format",
    "re": "dfe watch --realtime",
    "ss": "nothing: a live watch starts where the source is",
    "t": "nothing: stop the watch (Ctrl-C, SIGTERM) or end the source",
    "stream_loop": "nothing: dfe watch reads a source once",
    "hwaccel": "nothing: decoding runs on the CPU",
    "thread_queue_size": "dfe watch --queue (frames held ahead of the scorer)",
}
#: Names listed in one error before "and N more".
_LISTED = 10

_LIBS = ("avformat", "avcodec", "avutil")
_SUFFIXES = (".so", ".dylib", ".dll")


class _FFmpegOptions:
    """The option lookup over one process's FFmpeg libraries (see the module docstring)."""

    def __init__(self, libs: Mapping[str, str]) -> None:
        fmt = ctypes.CDLL(libs["avformat"])
        codec = ctypes.CDLL(libs["avcodec"])
        util = ctypes.CDLL(libs["avutil"])
        fmt.avformat_get_class.restype = ctypes.c_void_p
        codec.avcodec_get_class.restype = ctypes.c_void_p
        util.av_opt_find.restype = ctypes.c_void_p
        util.av_opt_find.argtypes = [
            ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_int
        ]  # fmt: skip
        util.av_opt_next.restype = ctypes.c_void_p
        util.av_opt_next.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        util.av_opt_child_class_iterate.restype = ctypes.c_void_p
        util.av_opt_child_class_iterate.argtypes = [
            ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)
        ]  # fmt: skip
        fmt.avio_find_protocol_name.restype = ctypes.c_char_p
        fmt.avio_find_protocol_name.argtypes = [ctypes.c_char_p]
        fmt.avio_enum_protocols.restype = ctypes.c_char_p
        fmt.avio_enum_protocols.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int]
        self._avformat = fmt
        self._util = util
        self._format = fmt.avformat_get_class()
        self._codec = codec.avcodec_get_class()
        self._sets: tuple[set[str], set[str]] | None = None

    @staticmethod
    def _raw(name: str) -> bytes | None:
        """``name`` as FFmpeg reads it, or None where no option can have it (a command line's
        undecodable bytes, empty, a NUL that C would cut the name at)."""
        try:
            raw = name.encode("utf-8")
        except UnicodeEncodeError:
            return None
        return raw if raw and b"\0" not in raw else None

    def _find(self, cls: int, raw: bytes, flags: int, *, children: bool) -> bool:
        holder = ctypes.c_void_p(cls)  # a fake object: a pointer to the class
        search = _AV_OPT_SEARCH_FAKE_OBJ | (_AV_OPT_SEARCH_CHILDREN if children else 0)
        return bool(self._util.av_opt_find(ctypes.byref(holder), raw, None, flags, search))

    def _muxer_classes(self) -> set[int] | None:
        """The private classes of the muxers that no demuxer shares, read from the public
        head of ``AVOutputFormat`` (``priv_class`` after name, long_name, mime_type,
        extensions, three codec ids, flags and codec_tag: 56 bytes on 64-bit builds) and
        ``AVInputFormat`` (after name, long_name, flags, extensions, codec_tag: 40), unchanged
        since FFmpeg 5; None where the pointers do not look like classes."""
        if ctypes.sizeof(ctypes.c_void_p) != 8:
            return None
        fmt = self._avformat

        def classes(iterate: Any, offset: int) -> set[int]:
            iterate.restype = ctypes.c_void_p
            iterate.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
            out, opaque = set(), ctypes.c_void_p(None)
            while entry := iterate(ctypes.byref(opaque)):
                if cls := ctypes.c_void_p.from_address(entry + offset).value:
                    out.add(cls)
            return out

        muxers = classes(fmt.av_muxer_iterate, 56)
        demuxers = classes(fmt.av_demuxer_iterate, 40)
        tree = self._tree()
        if not muxers <= tree or not demuxers <= tree:
            return None
        return muxers - demuxers

    def _tree(self) -> set[int]:
        """libavformat's class and, recursively, its children's (demuxers, muxers, protocols)."""
        util, seen, stack = self._util, set(), [self._format] if self._format else []
        while stack:
            cls = stack.pop()
            if cls in seen:
                continue
            seen.add(cls)
            it = ctypes.c_void_p(None)
            while child := util.av_opt_child_class_iterate(cls, ctypes.byref(it)):
                stack.append(child)
        return seen

    def _index(self) -> tuple[set[str], set[str]]:
        """(input names, output names). Input: the format context's options flagged for
        decoding, and every option of a demuxer's or a protocol's class (FFmpeg sets those
        whatever their flags: the file and pipe protocols' ``blocksize``, flagged for
        encoding, limits reads too; mpegts' ``skip_changes`` has no flags). Output: the rest
        of the format context's and the muxers' own. Where the muxers' classes cannot be read
        (:meth:`_muxer_classes`), every option flagged for decoding is input."""
        if self._sets is None:
            util, root = self._util, self._format
            muxers = self._muxer_classes()
            inputs: set[str] = set()
            outputs: set[str] = set()
            for cls in self._tree():
                holder, opt = ctypes.c_void_p(cls), None
                while opt := util.av_opt_next(ctypes.byref(holder), opt):
                    raw = ctypes.c_char_p.from_address(opt).value or b""
                    if not self._find(cls, raw, 0, children=False):
                        continue  # a constant (an option's named value), not an option
                    name = raw.decode("utf-8", "replace")
                    if cls == root or muxers is None:
                        decoding = self._find(cls, raw, _AV_OPT_FLAG_DECODING_PARAM, children=False)
                        (inputs if decoding else outputs).add(name)
                    else:
                        (outputs if cls in muxers else inputs).add(name)
            self._sets = (inputs, outputs - inputs)
        return self._sets

    def kind(self, name: str) -> str | None:
        """``"input"`` (an option of the format context, a demuxer or a protocol:
        :meth:`_index`), ``"output"`` (of the format context or a muxer, for muxing only),
        ``"decoder"`` (a codec option: PyAV does not pass these to the decoder) or None
        (FFmpeg has no such name)."""
        raw = self._raw(name)
        if raw is None:
            return None
        inputs, outputs = self._index()
        if name in inputs:
            return "input"
        if name in outputs:
            return "output"
        if self._find(self._codec, raw, 0, children=True):
            return "decoder"
        return None

    def protocol(self, url: str) -> str | None:
        """The input protocol FFmpeg would open ``url`` with (``avio_find_protocol_name``),
        or None when this build has none for it."""
        name = self._avformat.avio_find_protocol_name(url.encode("utf-8", "surrogateescape"))
        return name.decode() if name else None

    def protocols(self) -> list[str]:
        """The input protocols of this build (``avio_enum_protocols``), sorted."""
        out, opaque = [], ctypes.c_void_p(None)
        while name := self._avformat.avio_enum_protocols(ctypes.byref(opaque), 0):
            out.append(name.decode())
        return sorted(out)

    def names(self) -> list[str]:
        """Every input option name (:meth:`_index`), sorted."""
        return sorted(self._index()[0])


_LOOKUP: dict[int, _FFmpegOptions | None] = {}


def _candidates(av: Any) -> dict[str, list[str]]:
    """Files of each FFmpeg library that may be PyAV's, PyAV's own bundle first (wheels keep
    them in ``av.libs`` or ``av/.dylibs``), then those mapped in this process (Linux): another
    package may bundle its own FFmpeg (OpenCV's wheel does), so a name alone does not tell."""
    here = Path(av.__file__).resolve().parent
    out: dict[str, list[str]] = {name: [] for name in _LIBS}
    for folder in (here.parent / "av.libs", here / ".dylibs", here):
        if folder.is_dir():
            for name in _LIBS:
                out[name] += [
                    str(h)
                    for h in sorted(folder.glob(f"*{name}*"))
                    if h.suffix in _SUFFIXES or ".so." in h.name
                ]
    pattern = re.compile(r"(/\S*/(?:lib)?(avformat|avcodec|avutil)[-.][^/\s]*)$")
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                m = pattern.search(line.strip())
                if m and m.group(1) not in out[m.group(2)]:
                    out[m.group(2)].append(m.group(1))
    except OSError:
        pass
    return out


def _version(path: str, name: str) -> tuple[int, int, int] | None:
    """``lib<name>``'s own ``<name>_version()`` (FFmpeg's AV_VERSION_INT: major << 16 | minor
    << 8 | micro), or None when the file cannot be loaded."""
    try:
        lib = ctypes.CDLL(path)
        fn = getattr(lib, f"{name}_version")
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_uint
    v = int(fn())
    return (v >> 16, (v >> 8) & 0xFF, v & 0xFF)


def _library_paths(av: Any) -> dict[str, str]:
    """The files of the FFmpeg libraries PyAV uses: the first candidate of each
    (:func:`_candidates`) whose version is the one PyAV reports (``av.library_versions``)."""
    wanted = getattr(av, "library_versions", {})
    found: dict[str, str] = {}
    for name, paths in _candidates(av).items():
        for path in paths:
            if _version(path, name) == tuple(wanted.get(f"lib{name}", ())):
                found[name] = path
                break
    return found


def _lookup(av: Any) -> _FFmpegOptions | None:
    """The lookup for ``av``'s libraries, made once per process; None (with a warning) where
    they cannot be found or read."""
    if id(av) not in _LOOKUP:
        libs = _library_paths(av)
        try:
            if len(libs) < len(_LIBS):
                raise OSError(f"found {sorted(libs) or 'none'} of {list(_LIBS)}")
            _LOOKUP[id(av)] = _FFmpegOptions(libs)
        except (OSError, AttributeError) as exc:
            log.warning(
                "FFmpeg option names cannot be checked on this system (%s: %s); FFmpeg ignores "
                "an input option it does not know, so check the spelling of each one",
                sys.platform,
                exc,
            )
            _LOOKUP[id(av)] = None
    return _LOOKUP[id(av)]


def unknown_input_options(av: Any, names: Iterable[str]) -> list[str] | None:
    """The names among ``names`` that are not an input option of FFmpeg (the build ``av``
    uses: format context, demuxers, protocols), in the order given; None when they cannot be
    checked (a warning is logged)."""
    lookup = _lookup(av)
    if lookup is None:
        return None
    return [n for n in names if lookup.kind(n) != "input"]


def _why(lookup: _FFmpegOptions, name: str) -> str:
    """``name`` quoted, with why it is not an input option or the closest ones that are."""
    if name in RENAMED:
        return f"{name!r} (removed: use {RENAMED[name]})"
    if name in CLI_FLAGS:
        return f"{name!r} (an ffmpeg command-line flag: use {CLI_FLAGS[name]})"
    kind = lookup.kind(name)
    if kind == "output":
        return f"{name!r} (an output option: muxers and output protocols only)"
    if kind == "decoder":
        return f"{name!r} (a decoder option: --option reaches the demuxer and protocol only)"
    names = lookup.names()
    lower = {n.lower(): n for n in names}
    key = name.strip().lower().replace("-", "_")
    close = [lower[n] for n in difflib.get_close_matches(key, list(lower), n=3, cutoff=0.75)]
    return f"{name!r}" + (f" (did you mean {' or '.join(close)}?)" if close else "")


def check_input_options(av: Any, options: Mapping[str, str], source: str) -> None:
    """Raise :class:`InvalidInputError` naming ``source`` when ``options`` (FFmpeg input
    options, as given to ``av.open``) holds a name that is not an input option of FFmpeg, with
    why (removed: :data:`RENAMED`; a command-line flag: :data:`CLI_FLAGS`; an output or a
    decoder option) or the closest input options (case and ``-``/``_`` ignored); the first
    :data:`_LISTED` names are given. Does nothing where the names cannot be checked (a
    warning is logged once)."""
    unknown = unknown_input_options(av, options)
    if not unknown:
        return
    lookup = _lookup(av)
    assert lookup is not None
    parts = [_why(lookup, n) for n in unknown[:_LISTED]]
    if len(unknown) > _LISTED:
        parts.append(f"and {len(unknown) - _LISTED} more")
    one = len(unknown) == 1
    raise InvalidInputError(
        f"{source}: FFmpeg {av.ffmpeg_version_info} (through PyAV {av.__version__}) has no input "
        f"option {', '.join(parts)}; FFmpeg would ignore {'it' if one else 'them'} without a "
        "word. `ffmpeg -h demuxer=NAME` and `ffmpeg -h protocol=NAME` list a format's and a "
        "protocol's options"
    )


#: URL schemes FFmpeg's demuxers open themselves (``AVFMT_NOFILE``), not through a protocol.
DEMUXER_SCHEMES = frozenset(("rtsp", "rtsps", "sdp"))


def missing_protocol(av: Any, url: str) -> str | None:
    """Why FFmpeg (the build ``av`` uses) cannot open ``url``, a network URL, when it has no
    protocol for its scheme (PyAV's wheels leave some out, SRT and RIST among them): a
    sentence listing the protocols it has; None when it has one, the scheme is a demuxer's
    (:data:`DEMUXER_SCHEMES`) or the libraries cannot be read."""
    scheme = url.partition("://")[0]
    if scheme != scheme.lower():  # FFmpeg matches schemes as written
        return f"FFmpeg reads URL schemes in lower case only: write {scheme.lower()}://"
    lookup = _lookup(av)
    if lookup is None or scheme in DEMUXER_SCHEMES or lookup.protocol(url) is not None:
        return None
    return (
        f"FFmpeg {av.ffmpeg_version_info} (through PyAV {av.__version__}) has no {scheme!r} "
        f"protocol; its input protocols: {', '.join(lookup.protocols())} (and rtsp, which its "
        "demuxer opens). Install a PyAV built on an FFmpeg that has it, or relay the stream "
        "through one this build has (e.g. ffmpeg -i srt://... -c copy -f mpegts tcp://...)"
    )

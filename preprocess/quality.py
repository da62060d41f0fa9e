"""How good the evidence of one scored person is: measures of the face crops and of the source.

Pure functions on what the face chain already has (the crops, the crop boxes in source pixels,
the decoder's report), measured per scored person and recorded with the score. The classifier
was trained on faces of reasonable size, sharpness and exposure in colour, progressive, moderately
compressed video; outside that range its score says little, and the verdict (``core.
verdict``) turns UNCERTAIN with the reason.

=====================  ======================================================================
measure                definition
=====================  ======================================================================
``face_px``            median height of the face boxes, source pixels (frames with a face)
``upscale``            the model's input size over ``face_px``: how far the crop was enlarged
``sharpness``          median over the crops of the variance of the Laplacian of the grayscale
                       crop (OpenCV's ``cv2.Laplacian``, 3x3; the usual focus measure,
                       Pech-Pacheco et al., 2000) over the crop's own variance, so that a dark
                       or flat face is not taken for a blurred one
``exposure``           median mean luma (BT.601 weights, 0-255) of the crops
``colourfulness``      median of mean(|B - G|, |G - R|) over the crops, 0-255: 0 for gray
``hue_spread``         median over the crops of the circular standard deviation (Mardia & Jupp,
                       *Directional Statistics*, 2000: sqrt(-2 ln R)), in degrees, of the CIELAB
                       hue angle atan2(b*, a*) of the pixels with a chroma above
                       :data:`CHROMATIC_ABOVE` (OpenCV's 8-bit Lab); 0 when under 1% of them
                       are. A tinted monochrome picture (sepia, a colour filter over gray) has
                       one hue; colour faces have skin, lips, eyes, hair and background
``chroma_spread``      median over the crops of the colour lightness does not explain: the root of
                       the summed variances of CIELAB a* and b* around their least-squares
                       quadratic fits on L*; a tint over gray has one chroma per lightness
``grayscale``          no colour the model can use: ``colourfulness`` below
                       :data:`GRAYSCALE_BELOW` (gray), or tinted monochrome: ``hue_spread``
                       below :data:`MONOCHROME_BELOW` and ``chroma_spread`` below
                       :data:`TINT_CHROMA_BELOW` (one hue alone is also a warm white balance)
``roll``               median over the face frames of the in-plane rotation of the face, degrees
                       (0 upright, 90 sideways): the angle of the line from
                       the image-left eye to the image-right eye of SCRFD's five keypoints
                       (InsightFace's order: left eye, right eye, nose, mouth corners); None
                       without keypoints
``interlaced``         share of the frames read that came from interlaced video (flagged by
                       the decoder), and ``deinterlaced``: whether FFmpeg's bwdif ran on them
                       (else the woven fields reached the model)
``bits_per_pixel``     the video stream's compressed bits per pixel (bytes x 8 / (w x h x
                       frames); the mean size of the frames read when the video changes size)
``codec``              the stream's codec: HEVC, VP9 and AV1 need fewer bits than H.264 for the
                       same picture (:data:`CODEC_EFFICIENCY`)
``face_frames``        frames of the person that had their face, and ``face_coverage``, that
                       share of the frames used
=====================  ======================================================================

The limits (``FACE_TOO_SMALL`` and the others below) were set on the shared clips and variants
of them made with FFmpeg (grayscale, sepia, a tint, CRF 45 at 240p, 144p, a box blur, brightness
-0.35 and +0.45, 576i; ``tests/engine/test_verdicts.py``): the six shared clips have faces of
140-286 px, exposure 15-115, colourfulness 5-27, hue spread 11.6-24.7, 0.035-0.17 bits per pixel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

#: Limits of what the model can judge; a measure outside gives the reason code named here.
#: ``FACE_TOO_SMALL``: faces under 48 px are enlarged more than 2.3x to the 112 px input.
MIN_FACE_PX = 48.0
#: ``FACE_TOO_BLURRY``: the Laplacian's variance under 0.015 of the crop's own (a 6 px box blur of
#: the 480p clip gives 0.007, CRF 45 at 240p 0.007, 144p 0.010; the shared clips 0.025-0.104, a
#: dark face as sharp as a lit one).
MIN_SHARPNESS = 0.015
#: ``FACE_TOO_DARK`` / ``FACE_OVEREXPOSED``: mean luma of the face outside [40, 215].
MIN_EXPOSURE = 40.0
MAX_EXPOSURE = 215.0
#: ``GRAYSCALE_SOURCE``: faces with (almost) no colour; gray video gives 0, colour faces 5-27.
GRAYSCALE_BELOW = 1.5
#: ``GRAYSCALE_SOURCE`` too: one hue, in degrees of circular standard deviation. The shared
#: clips' faces measure 11.6-24.7 (the least colourful, 24.7); a clip in sepia (FFmpeg's
#: colorchannelmixer with the usual sepia matrix) 4.9, gray under a blue tint 5.2, both after
#: H.264 (``tests/engine/test_verdicts.py``'s variants).
MONOCHROME_BELOW = 8.0
#: ``GRAYSCALE_SOURCE`` for one hue needs as well chroma that lightness explains: sepia 1.8,
#: blue-tinted gray 1.4; colour faces under a warm white balance (FFmpeg's colortemperature
#: 3000-5000 K), whose hue spread falls to 4.7-7.8, keep 4.0-4.3; the shared clips 2.0-7.3.
TINT_CHROMA_BELOW = 2.5
#: Chroma (sqrt(a*^2 + b*^2), OpenCV's 8-bit Lab) above which a pixel's hue counts.
CHROMATIC_ABOVE = 4.0
#: ``FACE_ROTATED``: faces turned more than this from upright (the training faces were upright;
#: the shared clips' heads stay within 20 degrees). A clip stored sideways without rotation
#: metadata gives 84. Upside down is not caught: SCRFD still puts the eyes above the mouth.
MAX_ROLL = 45.0
#: ``INTERLACED_SOURCE``: at least this share of decoded frames flagged interlaced.
INTERLACED_SHARE = 0.5
#: ``HEAVY_COMPRESSION``: under 0.02 compressed bits per pixel, counted as H.264's (CRF 45 at
#: 240p: 0.017; the DFDC 1080p clips 0.035-0.047), and a face softened by it (sharpness under
#: twice :data:`MIN_SHARPNESS`): a sharp face in a frame of static or black background needs
#: few bits and is not flagged.
MIN_BITS_PER_PIXEL = 0.02
#: Bits a codec needs for the picture H.264 codes in one (the usual rough ratios: HEVC and VP9
#: save about 40%, AV1 about 50%; MPEG-2 needs about twice as many). Unknown codecs: 1.
CODEC_EFFICIENCY = {
    "hevc": 0.6, "h265": 0.6, "vp9": 0.6, "av1": 0.5, "libdav1d": 0.5, "libaom-av1": 0.5,
    "mpeg2video": 2.0, "mpeg1video": 2.0, "mpeg4": 1.5, "msmpeg4v3": 1.5, "mjpeg": 4.0,
}  # fmt: skip
#: ``FEW_FACE_FRAMES``: the person's face in fewer than four in five of the frames used (the
#: others are classified whole, no_face=full_frame, and weigh on the score as much: at half,
#: two black frames of four made a one-person video REAL).
MIN_FACE_COVERAGE = 0.8


@dataclass(frozen=True)
class Quality:
    """The quality measures of one scored person (see the module docstring); ``None`` where
    a measure does not apply (no face found; a decoder that does not report it)."""

    face_px: float | None
    upscale: float | None
    sharpness: float | None
    exposure: float | None
    colourfulness: float | None
    hue_spread: float | None
    chroma_spread: float | None
    grayscale: bool | None
    roll: float | None
    interlaced: float | None
    deinterlaced: bool | None
    bits_per_pixel: float | None
    codec: str | None
    face_frames: int
    face_coverage: float

    def reasons(self) -> list[str]:
        """The reason codes (their words: ``core.verdict.REASONS``) of the limits this
        person is outside, in that order (empty when every measure is within range)."""
        out = []
        if self.face_px is not None and self.face_px < MIN_FACE_PX:
            out.append("FACE_TOO_SMALL")
        if self.exposure is not None and self.exposure < MIN_EXPOSURE:
            out.append("FACE_TOO_DARK")
        if self.exposure is not None and self.exposure > MAX_EXPOSURE:
            out.append("FACE_OVEREXPOSED")
        if self.sharpness is not None and self.sharpness < MIN_SHARPNESS:
            out.append("FACE_TOO_BLURRY")
        if self.roll is not None and self.roll > MAX_ROLL:
            out.append("FACE_ROTATED")
        if self.grayscale:
            out.append("GRAYSCALE_SOURCE")
        if self.interlaced is not None and self.interlaced >= INTERLACED_SHARE:
            out.append("INTERLACED_SOURCE")
        if self.bits_per_pixel is not None:
            as_h264 = self.bits_per_pixel / CODEC_EFFICIENCY.get(self.codec or "", 1.0)
            softened = self.sharpness is None or self.sharpness < 2 * MIN_SHARPNESS
            if as_h264 < MIN_BITS_PER_PIXEL and softened:
                out.append("HEAVY_COMPRESSION")
        if self.face_frames and self.face_coverage < MIN_FACE_COVERAGE:
            out.append("FEW_FACE_FRAMES")
        return out

    def to_record(self) -> dict[str, object]:
        """The record's ``quality`` object (numbers rounded for reading)."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, float):
                out[key] = round(value, 4)
        return out


def _median(values: Sequence[float]) -> float | None:
    return float(np.median(values)) if len(values) else None


def lab_pixels(crop: np.ndarray) -> np.ndarray:
    """A crop's pixels (HxWx3 uint8 BGR) in OpenCV's 8-bit CIELAB, (H*W, 3) float64: what
    :func:`hue_spread` and :func:`chroma_spread` read (converted once per crop)."""
    import cv2

    return cv2.cvtColor(crop, cv2.COLOR_BGR2LAB).reshape(-1, 3).astype(np.float64)


def hue_spread(crop: np.ndarray, lab: np.ndarray | None = None) -> float:
    """How many hues a crop (HxWx3 uint8 BGR; ``lab``: its :func:`lab_pixels` when already
    made) has: the circular standard deviation, degrees, of the CIELAB hue angle of its pixels
    with chroma above :data:`CHROMATIC_ABOVE` (module docstring); 0.0 when under 1% of the
    pixels have colour. The mean resultant length R is the length of the mean unit vector
    (a*, b*) / chroma of those pixels (Mardia & Jupp 2000)."""
    lab = lab_pixels(crop) if lab is None else lab
    a, b = lab[:, 1] - 128.0, lab[:, 2] - 128.0
    chroma = np.hypot(a, b)
    keep = chroma > CHROMATIC_ABOVE
    if np.count_nonzero(keep) < max(1, 0.01 * len(chroma)):
        return 0.0
    kept = chroma[keep]
    resultant = float(np.hypot((a[keep] / kept).mean(), (b[keep] / kept).mean()))
    return float(np.degrees(np.sqrt(-2.0 * np.log(max(resultant, 1e-12)))))


def roll_degrees(kps: Sequence[Sequence[float]] | None) -> float | None:
    """The in-plane rotation of a face from its SCRFD keypoints (5 x (x, y) pixels, InsightFace's
    order: the image-left eye first): |angle| in degrees, 0-180, of the eye line from
    horizontal; None without keypoints."""
    if kps is None or len(kps) < 2:
        return None
    (x0, y0), (x1, y1) = kps[0][:2], kps[1][:2]
    return float(abs(np.degrees(np.arctan2(y1 - y0, x1 - x0))))


def chroma_spread(crop: np.ndarray, lab: np.ndarray | None = None) -> float:
    """The colour of a crop (HxWx3 uint8 BGR; ``lab``: its :func:`lab_pixels` when already
    made) that lightness does not explain: the root of the summed variances of CIELAB a* and
    b* (OpenCV's 8-bit Lab) around their least-squares quadratic fits on L*. About 0 for gray
    and for a tint over gray (sepia).

    The fit solves the 3x3 normal equations of the basis (1, l, l^2), l = L*/255 centred on its
    mean (the same fitted values as a least-squares solve of the pixel system, and a residual
    computed from the pixels; a flat crop, whose basis has rank 1, gets the minimum-norm
    solution, as ``numpy.linalg.lstsq`` would give)."""
    lab = lab_pixels(crop) if lab is None else lab
    lum = lab[:, 0] / 255.0
    lum -= lum.mean()
    lum2 = lum * lum
    s2, s3, s4 = lum2.sum(), lum2 @ lum, lum2 @ lum2  # sum(lum) is 0 (centred)
    gram = np.array([[len(lum), 0.0, s2], [0.0, s2, s3], [s2, s3, s4]])
    variance = 0.0
    for channel in (1, 2):  # a*, b*
        y = np.ascontiguousarray(lab[:, channel])
        coef, *_ = np.linalg.lstsq(gram, np.array([y.sum(), lum @ y, lum2 @ y]), rcond=None)
        residual = y - coef[0] - coef[1] * lum - coef[2] * lum2
        variance += float(residual @ residual) / len(y)
    return float(np.sqrt(variance))


def measure(
    crops: Sequence[np.ndarray],
    boxes: Sequence[Sequence[int] | None],
    *,
    keypoints: Sequence[Sequence[Sequence[float]] | None] | None = None,
    input_size: int = 112,
    interlaced: float | None = None,
    deinterlaced: bool | None = None,
    bits_per_pixel: float | None = None,
    codec: str | None = None,
) -> Quality:
    """The :class:`Quality` of one person: ``crops`` (HxWx3 uint8 BGR, one per frame used),
    ``boxes`` (the crop box per frame in source pixels, None where the whole frame was used:
    those frames are left out of the face measures), the face's SCRFD ``keypoints`` per frame
    (None where unknown; for :func:`roll_degrees`), the model's ``input_size``, and the
    source's ``interlaced`` share and ``bits_per_pixel`` when the decoder reported them."""
    import cv2

    faces = [(c, b) for c, b in zip(crops, boxes) if b is not None]
    heights = [float(b[3] - b[1]) for _, b in faces]
    sharp, luma, colour, hues, chromas = [], [], [], [], []
    for crop, _ in faces:
        gray = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
        spread = float(gray.var())
        if spread >= 1.0:  # a flat crop has no detail to be sharp or blurred
            sharp.append(float(cv2.Laplacian(gray, cv2.CV_64F).var()) / spread)
        luma.append(float(gray.mean()))
        c = crop.astype(np.int16)
        b_g = np.abs(c[..., 0] - c[..., 1]).mean()
        g_r = np.abs(c[..., 1] - c[..., 2]).mean()
        colour.append(float((b_g + g_r) / 2))
        lab = lab_pixels(crop)
        hues.append(hue_spread(crop, lab))
        chromas.append(chroma_spread(crop, lab))
    face_px = _median(heights)
    rolls = [
        r
        for r in (roll_degrees(k) for k, b in zip(keypoints or (), boxes) if b is not None)
        if r is not None
    ]
    colourfulness = _median(colour)
    hue = _median(hues)
    chroma = _median(chromas)
    return Quality(
        face_px=face_px,
        upscale=input_size / face_px if face_px else None,
        sharpness=_median(sharp),
        exposure=_median(luma),
        colourfulness=colourfulness,
        hue_spread=hue,
        chroma_spread=chroma,
        grayscale=None
        if colourfulness is None or hue is None or chroma is None
        else bool(
            colourfulness < GRAYSCALE_BELOW
            or (hue < MONOCHROME_BELOW and chroma < TINT_CHROMA_BELOW)
        ),
        roll=_median(rolls),
        interlaced=interlaced,
        deinterlaced=deinterlaced,
        bits_per_pixel=bits_per_pixel,
        codec=codec,
        face_frames=len(faces),
        face_coverage=len(faces) / len(crops) if crops else 0.0,
    )

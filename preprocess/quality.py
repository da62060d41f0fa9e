"""How good the evidence of one scored person is: measures of the face crops and of the source.

Pure functions on what the face chain already has (the crops, the crop boxes in source pixels,
the decoder's report), measured per scored person and recorded with the score. The classifier
was trained on faces of reasonable size, sharpness and exposure in colour, progressive, moderately
compressed video; outside that range its score says little, and the verdict (``engine.core.
verdict``) turns UNCERTAIN with the reason.

=====================  ======================================================================
measure                definition
=====================  ======================================================================
``face_px``            median height of the face boxes, source pixels (frames with a face)
``upscale``            the model's input size over ``face_px``: how far the crop was enlarged
``sharpness``          median variance of the Laplacian of the grayscale crop (OpenCV's
                       ``cv2.Laplacian``, 3x3), the usual focus measure (Pech-Pacheco et al.,
                       2000)
``exposure``           median mean luma (BT.601 weights, 0-255) of the crops
``colourfulness``      median of mean(|B - G|, |G - R|) over the crops, 0-255: 0 for gray
``grayscale``          ``colourfulness`` below :data:`GRAYSCALE_BELOW`
``interlaced``         share of the frames read that came from interlaced video (flagged by
                       the decoder), and ``deinterlaced``: whether FFmpeg's bwdif ran on them
                       (else the woven fields reached the model)
``bits_per_pixel``     the video stream's compressed bits per pixel (bytes x 8 / (w x h x
                       frames))
``face_frames``        frames of the person that had their face, and ``face_coverage``, that
                       share of the frames used
=====================  ======================================================================

The limits (``FACE_TOO_SMALL`` and the others in :data:`LIMITS`) were set on the shared clips
and variants of them made with FFmpeg (grayscale, CRF 45 at 240p, 144p, a box blur, brightness
-0.35 and +0.45, 576i), measured with ``tests/preprocess/test_quality.py``'s clips: the six
shared clips have faces of 140-286 px, sharpness 4-181, exposure 15-115, colourfulness 5-27,
0.035-0.17 bits per pixel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

#: Limits of what the model can judge; a measure outside gives the reason code named here.
#: ``FACE_TOO_SMALL``: faces under 48 px are enlarged more than 2.3x to the 112 px input.
MIN_FACE_PX = 48.0
#: ``FACE_TOO_BLURRY``: variance of the Laplacian below 10 (a 6 px box blur of the 480p clip
#: gives 4.4, CRF 45 at 240p 5.2; sharp faces 40-180).
MIN_SHARPNESS = 10.0
#: ``FACE_TOO_DARK`` / ``FACE_OVEREXPOSED``: mean luma of the face outside [40, 215].
MIN_EXPOSURE = 40.0
MAX_EXPOSURE = 215.0
#: ``GRAYSCALE_SOURCE``: faces with (almost) no colour; gray video gives 0, colour faces 5-27.
GRAYSCALE_BELOW = 1.5
#: ``INTERLACED_SOURCE``: at least this share of decoded frames flagged interlaced.
INTERLACED_SHARE = 0.5
#: ``HEAVY_COMPRESSION``: under 0.02 compressed bits per pixel (CRF 45 at 240p: 0.017; the
#: DFDC 1080p clips 0.035-0.047).
MIN_BITS_PER_PIXEL = 0.02
#: ``FEW_FACE_FRAMES``: the person's face in fewer than half of the frames used.
MIN_FACE_COVERAGE = 0.5


@dataclass(frozen=True)
class Quality:
    """The quality measures of one scored person (see the module docstring); ``None`` where
    a measure does not apply (no face found; a decoder that does not report it)."""

    face_px: float | None
    upscale: float | None
    sharpness: float | None
    exposure: float | None
    colourfulness: float | None
    grayscale: bool | None
    interlaced: float | None
    deinterlaced: bool | None
    bits_per_pixel: float | None
    face_frames: int
    face_coverage: float

    def reasons(self) -> list[str]:
        """The reason codes (their words: ``engine.core.verdict.REASONS``) of the limits this
        person is outside, in that order (empty when every measure is within range)."""
        out = []
        if self.face_px is not None and self.face_px < MIN_FACE_PX:
            out.append("FACE_TOO_SMALL")
        if self.sharpness is not None and self.sharpness < MIN_SHARPNESS:
            out.append("FACE_TOO_BLURRY")
        if self.exposure is not None and self.exposure < MIN_EXPOSURE:
            out.append("FACE_TOO_DARK")
        if self.exposure is not None and self.exposure > MAX_EXPOSURE:
            out.append("FACE_OVEREXPOSED")
        if self.grayscale:
            out.append("GRAYSCALE_SOURCE")
        if self.interlaced is not None and self.interlaced >= INTERLACED_SHARE:
            out.append("INTERLACED_SOURCE")
        if self.bits_per_pixel is not None and self.bits_per_pixel < MIN_BITS_PER_PIXEL:
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


def measure(
    crops: Sequence[np.ndarray],
    boxes: Sequence[Sequence[int] | None],
    *,
    input_size: int = 112,
    interlaced: float | None = None,
    deinterlaced: bool | None = None,
    bits_per_pixel: float | None = None,
) -> Quality:
    """The :class:`Quality` of one person: ``crops`` (HxWx3 uint8 BGR, one per frame used),
    ``boxes`` (the crop box per frame in source pixels, None where the whole frame was used:
    those frames are left out of the face measures), the model's ``input_size``, and the
    source's ``interlaced`` share and ``bits_per_pixel`` when the decoder reported them."""
    import cv2

    faces = [(c, b) for c, b in zip(crops, boxes) if b is not None]
    heights = [float(b[3] - b[1]) for _, b in faces]
    sharp, luma, colour = [], [], []
    for crop, _ in faces:
        gray = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
        sharp.append(float(cv2.Laplacian(gray, cv2.CV_64F).var()))
        luma.append(float(gray.mean()))
        c = crop.astype(np.int16)
        b_g = np.abs(c[..., 0] - c[..., 1]).mean()
        g_r = np.abs(c[..., 1] - c[..., 2]).mean()
        colour.append(float((b_g + g_r) / 2))
    face_px = _median(heights)
    colourfulness = _median(colour)
    return Quality(
        face_px=face_px,
        upscale=input_size / face_px if face_px else None,
        sharpness=_median(sharp),
        exposure=_median(luma),
        colourfulness=colourfulness,
        grayscale=None if colourfulness is None else colourfulness < GRAYSCALE_BELOW,
        interlaced=interlaced,
        deinterlaced=deinterlaced,
        bits_per_pixel=bits_per_pixel,
        face_frames=len(faces),
        face_coverage=len(faces) / len(crops) if crops else 0.0,
    )

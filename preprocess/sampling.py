"""Which frames of a video to read: pure functions, no decoding.

``first`` takes the first N frames, as the original project did (the default, for parity).
``uniform`` spreads N frames over the whole video with a fixed, documented rounding rule, so the
same video always gives the same frames whatever backend or seek strategy decodes them.
"""

from __future__ import annotations

import operator

from core.config import SAMPLING_MODES
from core.errors import InvalidInputError


def check_sampling(sampling: str) -> str:
    """Return ``sampling`` if it is a supported mode, else raise :class:`InvalidInputError`."""
    if sampling not in SAMPLING_MODES:
        raise InvalidInputError(
            f"sampling={sampling!r} is not supported; supported values are "
            f"{', '.join(repr(m) for m in SAMPLING_MODES)}"
        )
    return sampling


def as_int(value: object) -> int | None:
    """``value`` as an int if it is an integer (numpy integers too, bools not), else None."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        return None


def check_count(n: object, *, name: str = "n", what: str | None = None) -> int:
    """Return ``n`` if it is a positive integer, else raise :class:`InvalidInputError` naming
    ``name`` (and ``what`` it counts, e.g. ``"frames to read"``)."""
    value = as_int(n)
    if value is None or value <= 0:
        counts = f" ({what})" if what else ""
        raise InvalidInputError(f"{name} must be a positive integer{counts}, got {n!r}")
    return value


def sample_indices(frame_count: int, n: int, sampling: str) -> list[int]:
    """0-based indices of the frames to read from a video of ``frame_count`` frames.

    ``first``: ``[0, 1, ..., min(n, frame_count) - 1]``.

    ``uniform``: when ``frame_count <= n``, every frame (a short video gives fewer frames than
    asked, never padding, like the original). Otherwise index ``i`` of ``n`` is
    ``floor(i * (frame_count - 1) / (n - 1) + 1/2)``, i.e. ``np.linspace(0, frame_count - 1, n)``
    rounded half up, computed in exact integer arithmetic. The first index is 0, the last is
    ``frame_count - 1`` (for ``n > 1``; ``n == 1`` gives ``[0]``), and since the step is at least 1
    the indices are strictly increasing with no duplicates.
    """
    check_sampling(sampling)
    n = check_count(n, what="frames to read")
    count = as_int(frame_count)
    if count is None or count < 0:
        raise InvalidInputError(f"frame_count must be an integer >= 0, got {frame_count!r}")
    frame_count = count
    if sampling == "first" or frame_count <= n:
        return list(range(min(n, frame_count)))
    if n == 1:
        return [0]
    span, steps = frame_count - 1, n - 1
    # floor(i * span / steps + 1/2) == (2 * i * span + steps) // (2 * steps), exactly.
    return [(2 * i * span + steps) // (2 * steps) for i in range(n)]

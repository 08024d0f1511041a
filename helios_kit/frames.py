"""Frame arithmetic shared by the planner, the CLI and the job-file converter: durations to frame counts.

A leaf module (it imports nothing of helios_kit), so the contract (`spec.py`), the converter of original
Helios job files (`helios_format.py`) and the planner can all use the one rule without an import cycle.
"""

from __future__ import annotations

import math
from fractions import Fraction

#: Highest frame rate a RenderConfig accepts.
MAX_FPS = 1000
#: Longest render a job may describe: 24 hours at the highest frame rate.
MAX_HOURS = 24
#: Upper bound of `frameCount` and `startFrame` (86,400,000 frames).
MAX_FRAMES = MAX_HOURS * 3600 * MAX_FPS
#: How close (in frames) `duration x fps` must be to a whole number to count as that number: absorbs the
#: error of binary floating point (1.1 x 30 = 33.000000000000004), far below any real fraction of a frame.
_SNAP_FRAMES = Fraction(1, 10**6)


def frames_for_duration(duration_s: float, fps: float) -> int:
    """Frames that cover `duration_s` seconds at `fps`: `ceil(duration x fps)`, float-safe.

    `--duration 1.01 --fps 30` is 31 frames (30.3 rounded up); 1.1 s at 30 fps is 33, not 34, although
    `1.1 * 30` is 33.000000000000004 in floating point. ValueError for a duration or fps that is not a
    finite number > 0.
    """
    for name, value in (("duration", duration_s), ("fps", fps)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    exact = Fraction(duration_s) * Fraction(fps)
    nearest = round(exact)
    if nearest > 0 and abs(exact - nearest) <= _SNAP_FRAMES:
        return int(nearest)
    return math.ceil(exact)

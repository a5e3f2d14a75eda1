"""Split tasks (the first, "legacy" generation of PIANO tasks; names as in the reference).

- quantile splits of pitch or velocity: the target is the notes whose value lies inside (or outside)
  ``[q_low, q_high)`` of the fragment's own quantiles (numpy's linear interpolation); the source is
  the rest. E.g. ``above_median_prediction``: target = pitch >= median.
- denoising: source = the notes with Gaussian noise, target = the clean notes.
  velocity N(0, 30) rounded, clipped to 1..127 (0 would be a note-off); pitch N(0, 5) rounded,
  clipped to 21..108; start N(0, 0.3 s), durations kept, starts clipped at 0; "time" adds
  N(0, 0.3 s) to durations as well (kept >= 10 ms); "comprehensive" does all of these.
- performance: source = the notes in order, 0.2 s apart, 0.2 s long, velocity 80 (a "score");
  target = the real performance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from piano_gpt.midi import PIANO_PITCH_RANGE, make_notes
from piano_gpt.tasks.base import SPLIT, SelectionTask, Task

VELOCITY_NOISE = 30.0
PITCH_NOISE = 5.0
TIME_NOISE = 0.3
MIN_NOISY_DURATION = 0.01
PERFORMANCE_STEP = 0.2
PERFORMANCE_VELOCITY = 80


@dataclass(frozen=True, repr=False)
class QuantileSplit(SelectionTask):
    """Target = notes with ``column`` inside (``inside=True``) or outside ``[q(low), q(high))``.

    ``low``/``high`` are quantile levels; None means unbounded.
    """

    name: str
    column: str
    low: float | None
    high: float | None
    inside: bool = True
    kind: str = SPLIT
    combine: bool = True

    @property
    def family(self) -> str:
        return self.name

    @property
    def group(self) -> str:
        return f"{self.column} split"

    @property
    def description(self) -> str:
        low, high = _quantile_name(self.low), _quantile_name(self.high)
        if self.low is not None and self.high is not None:
            where = (
                f"between the fragment's {low} and {high}"
                if self.inside
                else f"below the fragment's {low} or at or above its {high}"
            )
        elif self.low is not None:
            where = f"at or above the fragment's {low}" if self.inside else f"below the fragment's {low}"
        else:
            where = f"below the fragment's {high}" if self.inside else f"at or above the fragment's {high}"
        return f"target: the notes with {self.column} {where}; source: the rest"

    def target_mask(self, notes: pd.DataFrame, rng: np.random.Generator) -> np.ndarray:
        values = notes[self.column].to_numpy(np.float64)
        if len(values) == 0:
            return np.zeros(0, bool)
        within = np.ones(len(values), bool)
        if self.low is not None:
            within &= values >= np.quantile(values, self.low)
        if self.high is not None:
            within &= values < np.quantile(values, self.high)
        return within if self.inside else ~within


@dataclass(frozen=True, repr=False)
class Denoising(Task):
    """Source = the notes with the enabled kinds of noise; target = the clean notes."""

    name: str
    velocity: bool = False
    pitch: bool = False
    start: bool = False
    duration: bool = False
    kind: str = SPLIT
    combine: bool = False

    @property
    def family(self) -> str:
        return self.name

    @property
    def group(self) -> str:
        return "denoising"

    @property
    def description(self) -> str:
        kinds = [k for k, on in [("velocity", self.velocity), ("pitch", self.pitch), ("onset", self.start),
                                 ("duration", self.duration)] if on]  # fmt: skip
        return f"source: the notes with Gaussian {', '.join(kinds)} noise; target: the clean notes"

    def add_noise(self, notes: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
        n = len(notes)
        pitch = notes["pitch"].to_numpy(np.int64)
        velocity = notes["velocity"].to_numpy(np.int64)
        start = notes["start"].to_numpy(np.float64)
        duration = notes["end"].to_numpy(np.float64) - start
        # Draws happen in a fixed order, each only when enabled.
        if self.velocity:
            velocity = np.clip(velocity + np.round(rng.normal(0, VELOCITY_NOISE, n)).astype(np.int64), 1, 127)
        if self.pitch:
            pitch = np.clip(
                pitch + np.round(rng.normal(0, PITCH_NOISE, n)).astype(np.int64), *PIANO_PITCH_RANGE
            )
        if self.start:
            start = np.maximum(start + rng.normal(0, TIME_NOISE, n), 0.0)
        if self.duration:
            duration = np.maximum(duration + rng.normal(0, TIME_NOISE, n), MIN_NOISY_DURATION)
        return make_notes(pitch, velocity, start, start + duration)

    def split(self, notes: pd.DataFrame, rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
        return self.add_noise(notes, rng), notes


@dataclass(frozen=True, repr=False)
class PerformanceTask(Task):
    """Source = the notes as a plain "score" (evenly spaced, fixed velocity); target = the performance."""

    name: str = "performance_task"
    step: float = PERFORMANCE_STEP
    velocity: int = PERFORMANCE_VELOCITY
    kind: str = SPLIT
    combine: bool = False

    @property
    def family(self) -> str:
        return self.name

    @property
    def group(self) -> str:
        return "performance"

    @property
    def description(self) -> str:
        return (
            f"source: the notes as a plain score ({self.step} s apart, velocity {self.velocity}); "
            "target: the real performance"
        )

    def split(self, notes: pd.DataFrame, rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
        start = np.arange(len(notes)) * self.step
        score = make_notes(notes["pitch"], np.full(len(notes), self.velocity), start, start + self.step)
        return score, notes


def _quantile_name(level: float | None) -> str:
    return {0.25: "lower quartile", 0.5: "median", 0.75: "upper quartile"}.get(level, f"{level} quantile")


def _quantile_pair(name_above: str, name_below: str, column: str, level: float) -> list[Task]:
    return [
        QuantileSplit(name_above, column, low=level, high=None, inside=True),
        QuantileSplit(name_below, column, low=level, high=None, inside=False),
    ]


SPLIT_TASK_LIST: list[Task] = [
    # pitch
    *_quantile_pair("above_median_prediction", "below_median_prediction", "pitch", 0.5),
    *_quantile_pair("above_low_quartile_prediction", "below_low_quartile_prediction", "pitch", 0.25),
    *_quantile_pair("above_high_quartile_prediction", "below_high_quartile_prediction", "pitch", 0.75),
    QuantileSplit("middle_quartiles_prediction", "pitch", low=0.25, high=0.75, inside=True),
    QuantileSplit("extreme_quartiles_prediction", "pitch", low=0.25, high=0.75, inside=False),
    # volume
    *_quantile_pair("loud_prediction", "soft_prediction", "velocity", 0.5),
    QuantileSplit("very_loud_prediction", "velocity", low=0.75, high=None, inside=True),
    QuantileSplit("very_soft_prediction", "velocity", low=None, high=0.25, inside=True),
    QuantileSplit("moderate_velocity_prediction", "velocity", low=0.25, high=0.75, inside=True),
    QuantileSplit("extreme_velocity_prediction", "velocity", low=0.25, high=0.75, inside=False),
    # denoising
    Denoising("velocity_denoising", velocity=True),
    Denoising("pitch_denoising", pitch=True),
    Denoising("start_time_denoising", start=True),
    Denoising("time_denoising", start=True, duration=True),
    Denoising("comprehensive_denoising", velocity=True, pitch=True, start=True, duration=True),
    # performance
    PerformanceTask(),
]

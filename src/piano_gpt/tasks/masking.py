"""Masking tasks (the modern, parametric PIANO tasks), named ``{family}-x{param}``.

Family names, tokens and semantics follow the reference (piano-dataset ``piano_tasks.py``); the
target is always a subset of the input and the source the rest, so source ∪ target == input.

- ``top_line_masking`` / ``bottom_line_masking`` (param: repetitions): over 0.2 s windows from the
  first to the last onset, the highest (lowest) note sounding in the window (start <= t + 0.2 and
  end > t) is taken; this is repeated ``param`` times on the remaining notes, peeling off the
  ``param`` highest (lowest) lines.
- ``high_notes_masking`` / ``low_notes_masking`` / ``short_notes_masking`` / ``long_notes_masking``
  (param: count): the ``param`` highest / lowest / shortest / longest notes (ties: earlier first).
- ``stride_notes_masking`` (param: stride): in note order, keep ``param`` notes, mask ``param``
  notes, alternately (the first ``param`` notes stay in the source).
- ``chord_masking`` (param: threshold): a note starting within 15 ms of the previous one joins its
  group; every group of at least ``param`` notes is the target (the whole group: the reference
  keeps the group's first note in the source, which leaves the model unable to place lone chords).
- ``random_masking`` (param: percentage): that share of the notes, chosen at random.
- ``linear_random_masking`` (param: percentage): a random line in the (time, pitch) plane from a
  pitch among the first 10 notes at the first onset to one among the last 10 at the last onset;
  notes within ``2 + U{0..9}`` semitones of it (vertical distance, in semitones: the reference's
  perpendicular distance mixes seconds and semitones) are candidates; ``param`` % of them are the
  target.
- ``band_random_masking`` (param: percentage): as linear, with a band whose half-width goes from
  ``1 + U{0..9}`` semitones at the first onset to ``1 + U{0..9}`` at the last.

Each masking task's prefix is its family token and a ``<PARAMETER_n>`` token (1 <= n <= 100).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from piano_gpt.tasks.base import MASKING, SelectionTask

LINE_WINDOW = 0.2
CHORD_TOLERANCE = 0.015
LINE_ENDPOINT_NOTES = 10
MAX_PARAMETER = 100

Selector = Callable[[pd.DataFrame, int, np.random.Generator], np.ndarray]


def parameter_token(param: int) -> str:
    return f"<PARAMETER_{int(param)}>"


def _line_once(notes: pd.DataFrame, available: np.ndarray, highest: bool) -> np.ndarray:
    """Indices (into ``notes``) of the highest/lowest available note sounding in each window."""
    index = np.flatnonzero(available)
    if len(index) == 0:
        return index
    start = notes["start"].to_numpy(np.float64)[index]
    end = notes["end"].to_numpy(np.float64)[index]
    key = notes["pitch"].to_numpy(np.float64)[index]
    key = key if highest else -key
    first = start.min()
    n_windows = int(np.floor((start.max() - first) / LINE_WINDOW + 1e-9)) + 1
    chosen = []
    for block in range(0, n_windows, 256):  # bounded memory: 256 windows at a time
        t = first + LINE_WINDOW * np.arange(block, min(block + 256, n_windows))
        sounding = (start[None, :] <= t[:, None] + LINE_WINDOW) & (end[None, :] > t[:, None])
        scores = np.where(sounding, key[None, :], -np.inf)
        best = scores.argmax(axis=1)  # first maximum: ties go to the earlier note
        chosen.append(best[sounding.any(axis=1)])
    return np.unique(index[np.concatenate(chosen)])


def _line_selector(highest: bool) -> Selector:
    def select(notes: pd.DataFrame, repetitions: int, rng: np.random.Generator) -> np.ndarray:
        mask = np.zeros(len(notes), bool)
        for _ in range(repetitions):
            mask[_line_once(notes, ~mask, highest)] = True
        return mask

    return select


def _extreme_selector(column: str, largest: bool) -> Selector:
    def select(notes: pd.DataFrame, count: int, rng: np.random.Generator) -> np.ndarray:
        if column == "duration":
            values = (notes["end"] - notes["start"]).to_numpy(np.float64)
        else:
            values = notes[column].to_numpy(np.float64)
        order = np.argsort(-values if largest else values, kind="stable")
        mask = np.zeros(len(notes), bool)
        mask[order[:count]] = True
        return mask

    return select


def _stride(notes: pd.DataFrame, stride: int, rng: np.random.Generator) -> np.ndarray:
    return (np.arange(len(notes)) // stride) % 2 == 1


def chord_groups(start: np.ndarray, tolerance: float = CHORD_TOLERANCE) -> np.ndarray:
    """Group id per note (notes sorted by start): a note within ``tolerance`` of the previous joins it."""
    start = np.asarray(start, np.float64)
    if len(start) == 0:
        return np.zeros(0, np.int64)
    new_group = np.concatenate([[True], np.diff(start) > tolerance + 1e-9])
    return np.cumsum(new_group) - 1


def _chord(notes: pd.DataFrame, threshold: int, rng: np.random.Generator) -> np.ndarray:
    groups = chord_groups(notes["start"].to_numpy())
    if len(groups) == 0:
        return np.zeros(0, bool)
    return np.bincount(groups)[groups] >= threshold


def _sample(candidates: np.ndarray, percentage: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A mask choosing ``round(percentage% of the candidates)`` of them at random."""
    candidates = np.flatnonzero(candidates)
    k = int(np.round(len(candidates) * percentage / 100))
    mask = np.zeros(size, bool)
    mask[rng.choice(candidates, size=k, replace=False)] = True
    return mask


def _random(notes: pd.DataFrame, percentage: int, rng: np.random.Generator) -> np.ndarray:
    return _sample(np.ones(len(notes), bool), percentage, len(notes), rng)


def _band_selector(band: bool) -> Selector:
    def select(notes: pd.DataFrame, percentage: int, rng: np.random.Generator) -> np.ndarray:
        n = len(notes)
        if n == 0:
            return np.zeros(0, bool)
        pitch = notes["pitch"].to_numpy(np.float64)
        start = notes["start"].to_numpy(np.float64)
        pitch_first = pitch[rng.integers(min(n, LINE_ENDPOINT_NOTES))]
        pitch_last = pitch[n - 1 - rng.integers(min(n, LINE_ENDPOINT_NOTES))]
        span = start[-1] - start[0]
        position = (start - start[0]) / span if span > 0 else np.zeros(n)
        line = pitch_first + (pitch_last - pitch_first) * position
        if band:
            width_first, width_last = 1 + rng.integers(10), 1 + rng.integers(10)
            half_width = width_first + (width_last - width_first) * position
        else:
            half_width = 2 + rng.integers(10)
        near = np.abs(pitch - line) <= half_width + 1e-9
        return _sample(near, percentage, n, rng)

    return select


@dataclass(frozen=True)
class MaskingFamily:
    name: str
    token: str
    select: Selector
    default: int
    min_param: int = 1
    max_param: int = MAX_PARAMETER
    alias: str = ""
    description: str = ""  # one line; "{param}" stands for the parameter

    def check(self, param: int) -> int:
        if isinstance(param, bool) or int(param) != param:
            raise ValueError(f"{self.name}: parameter must be an integer, got {param!r}")
        param = int(param)
        if not self.min_param <= param <= self.max_param:
            raise ValueError(f"{self.name}: parameter {param} outside {self.min_param}..{self.max_param}")
        return param


@dataclass(frozen=True, repr=False)
class MaskingTask(SelectionTask):
    """``{family}-x{param}``: the family's selector, at one parameter value."""

    masking_family: MaskingFamily
    param: int
    kind: str = MASKING
    combine: bool = True

    def __post_init__(self):
        self.masking_family.check(self.param)

    @property
    def family(self) -> str:
        return self.masking_family.name

    @property
    def name(self) -> str:
        return f"{self.family}-x{self.param}"

    @property
    def token(self) -> str:
        return self.masking_family.token

    @property
    def prefix_tokens(self) -> list[str]:
        return [self.token, parameter_token(self.param)]

    @property
    def group(self) -> str:
        return self.family

    @property
    def description(self) -> str:
        return f"target: {self.masking_family.description.format(param=self.param)}; source: the rest"

    def target_mask(self, notes: pd.DataFrame, rng: np.random.Generator) -> np.ndarray:
        return self.masking_family.select(notes, self.param, rng)


def _family(
    name: str, select: Selector, default: int, alias: str, description: str, min_param: int = 1
) -> MaskingFamily:
    return MaskingFamily(
        name=name,
        token=f"<{name.upper()}>",
        select=select,
        default=default,
        min_param=min_param,
        alias=alias,
        description=description,
    )


LINE = "highest note sounding in each 0.2 s window"
MASKING_FAMILY_LIST: list[MaskingFamily] = [
    _family("top_line_masking", _line_selector(highest=True), 1, "top_line", f"the top {{param}} line(s) (the {LINE})"),
    _family("bottom_line_masking", _line_selector(highest=False), 1, "bottom_line",
            f"the bottom {{param}} line(s) (the {LINE.replace('highest', 'lowest')})"),
    _family("high_notes_masking", _extreme_selector("pitch", largest=True), 5, "high_notes",
            "the {param} highest notes"),
    _family("low_notes_masking", _extreme_selector("pitch", largest=False), 5, "low_notes",
            "the {param} lowest notes"),
    _family("short_notes_masking", _extreme_selector("duration", largest=False), 5, "short_notes",
            "the {param} shortest notes"),
    _family("long_notes_masking", _extreme_selector("duration", largest=True), 5, "long_notes",
            "the {param} longest notes"),
    _family("stride_notes_masking", _stride, 2, "stride",
            "every other run of {param} notes (keep {param}, mask {param}, in note order)"),
    _family("chord_masking", _chord, 3, "chord", "every chord of at least {param} notes (onsets within 15 ms)",
            min_param=2),
    _family("random_masking", _random, 50, "random", "{param}% of the notes, at random"),
    _family("linear_random_masking", _band_selector(band=False), 50, "linear_random",
            "{param}% of the notes near a random line in the (time, pitch) plane"),
    _family("band_random_masking", _band_selector(band=True), 50, "band_random",
            "{param}% of the notes in a random band of the (time, pitch) plane"),
]  # fmt: skip
MASKING_FAMILIES: dict[str, MaskingFamily] = {family.name: family for family in MASKING_FAMILY_LIST}

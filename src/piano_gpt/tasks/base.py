"""The task interface shared by every PIANO task.

A task turns a note table into a :class:`TaskSample`: ``prefix_tokens`` (the task's special tokens),
``source`` (the notes the model is shown) and ``target`` (the notes it must produce). Every task
draws its randomness from ``numpy.random.default_rng(seed)``, so a task is deterministic for a
given seed.

Input tables are made canonical first (columns ``pitch, velocity, start, end``, sorted by start then
pitch, fresh index; extra columns such as ``duration`` are dropped). Times are not re-based: the
caller (the data pipeline) shifts a fragment to start at 0 before preparing it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import pandas as pd

from piano_gpt.midi import NOTE_COLUMNS, make_notes

SPLIT = "split"
MASKING = "masking"


@dataclass(frozen=True)
class TaskSample:
    """What a task makes of a note table."""

    prefix_tokens: list[str]
    source: pd.DataFrame
    target: pd.DataFrame
    task: str = ""


def as_note_table(notes) -> pd.DataFrame:
    """The canonical note table of ``notes`` (typed, sorted by start then pitch, fresh index).

    ``notes`` is a note table or a mapping of equal-length columns (a record's ``notes`` field)."""
    if not isinstance(notes, pd.DataFrame):
        notes = pd.DataFrame(dict(notes))
    missing = [column for column in NOTE_COLUMNS if column not in notes.columns]
    if missing:
        raise ValueError(f"note table lacks columns {missing}; has {list(notes.columns)}")
    return make_notes(notes["pitch"], notes["velocity"], notes["start"], notes["end"])


def task_token(name: str) -> str:
    """The special token of a task or task family: ``above_median_prediction`` -> ``<ABOVE_MEDIAN_PREDICTION>``."""
    return f"<{name.upper()}>"


class Task(ABC):
    """One PIANO task.

    Attributes: ``name`` (registry name), ``family`` (the task class's name; equal to ``name`` for
    split tasks; ``group`` is the family a person would name), ``description`` (one line), ``kind`` (``"split"`` or ``"masking"``), ``param`` (the ``-x`` parameter of a
    masking task, else None), ``combine`` (True when source and target together are the input, so a
    generation is merged with the source; False when the target replaces the source: denoising,
    performance).
    """

    name: str
    family: str
    kind: str
    param: int | None = None
    combine: bool = True

    @property
    def group(self) -> str:
        """The family a person would name (``pitch split``, ``denoising``, ``top_line_masking``...)."""
        return self.family

    @property
    def description(self) -> str:
        """One line: what the source and the target are."""
        return ""

    @property
    def token(self) -> str:
        return task_token(self.family)

    @property
    def prefix_tokens(self) -> list[str]:
        return [self.token]

    def prepare(self, notes: pd.DataFrame, seed: int | np.random.Generator | None = None) -> TaskSample:
        """Split ``notes`` into source and target; deterministic for a given ``seed``."""
        notes = as_note_table(notes)
        rng = np.random.default_rng(seed)
        source, target = self.split(notes, rng)
        return TaskSample(prefix_tokens=self.prefix_tokens, source=source, target=target, task=self.name)

    @abstractmethod
    def split(self, notes: pd.DataFrame, rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(source, target) of a canonical note table."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class SelectionTask(Task):
    """A task whose target is a subset of the input notes and whose source is the rest."""

    @abstractmethod
    def target_mask(self, notes: pd.DataFrame, rng: np.random.Generator) -> np.ndarray:
        """Boolean array over the (canonical) notes: True for the notes to infer."""

    def split(self, notes: pd.DataFrame, rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
        mask = np.asarray(self.target_mask(notes, rng), dtype=bool)
        if mask.shape != (len(notes),):
            raise AssertionError(f"{self.name}: target mask of shape {mask.shape} for {len(notes)} notes")
        source = notes[~mask].reset_index(drop=True)
        target = notes[mask].reset_index(drop=True)
        return source, target

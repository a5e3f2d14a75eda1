"""PIANO task training samples drawn from token shards, each one a pure function of (seed, index).

Sample ``i`` (``rng = numpy.random.default_rng([seed, i])``):

1. a record, drawn with probability proportional to its number of notes;
2. a window of ``notes_per_record`` consecutive notes of it, shifted to start at time 0;
3. (training only) augmentation: pitch shift and speed change (``piano_gpt.midi.augment``);
4. a task drawn uniformly from the task set, and the task's own seed;
5. ``task.prepare(notes, task_seed)`` -> ``build_task_sequence`` -> ids + loss mask (the target part
   and ``<EOGENAI>``), then ``make_example`` (music time restarting after ``<GENAI>``); with
   ``prompt_masking`` the loss falls on the target part only.

A sequence that would not fit the context is never cut through its target: the note window is
shortened (its first notes kept) until prompt + target + ``<EOGENAI>`` fit (:func:`fit_task_sequence`).

With no task (``tasks=subsequence``, ``names: []``) a sample is plain next-token training on the
note window's tokens.

Validation uses the same code with another seed and no augmentation: its samples are fixed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from piano_gpt.data.datasets import make_example, train_and_validation
from piano_gpt.data.shards import SplitShards
from piano_gpt.midi import augment, make_notes
from piano_gpt.tasks import Task, TaskSample, add_task_tokens, build_task_sequence, resolve_tasks
from piano_gpt.tokenizers import GENAI_TOKEN, MidiTokenizer

MIN_WINDOW_NOTES = 8  # a window is never shortened below this many notes to fit the context


def record_weights(shards: SplitShards) -> np.ndarray:
    """Cumulative probabilities of drawing each record, proportional to its number of notes."""
    counts = shards.index["note_count"].to_numpy(np.float64)
    if len(counts) == 0 or counts.sum() <= 0:
        raise ValueError(f"{shards.root}: no records with notes")
    return np.cumsum(counts) / counts.sum()


def draw_window(
    shards: SplitShards, cumulative: np.ndarray, rng: np.random.Generator, n_notes: int
) -> tuple[int, int, pd.DataFrame]:
    """(record, first note, notes) of a random window of ``n_notes`` consecutive notes, times from 0."""
    record = min(int(np.searchsorted(cumulative, rng.random(), side="right")), len(cumulative) - 1)
    count = int(shards.index["note_count"].iloc[record])
    first = int(rng.integers(0, max(1, count - n_notes + 1)))
    notes = shards.record_notes(record, first, n_notes)
    return record, first, rebase(notes)


def rebase(notes: pd.DataFrame) -> pd.DataFrame:
    """The notes shifted so the first starts at 0."""
    if len(notes) == 0:
        return notes
    offset = float(notes["start"].min())
    return make_notes(notes["pitch"], notes["velocity"], notes["start"] - offset, notes["end"] - offset)


def fit_task_sequence(
    tokenizer: MidiTokenizer,
    task: Task,
    notes: pd.DataFrame,
    task_seed: int,
    max_tokens: int | None,
) -> tuple[TaskSample, np.ndarray, np.ndarray, pd.DataFrame]:
    """(sample, ids, loss_mask, notes used) of ``task`` on ``notes``, the window shortened (first notes
    kept, same task seed) until the whole sequence has at most ``max_tokens`` ids (or the window is
    down to ``MIN_WINDOW_NOTES`` notes; make_example then cuts the end)."""
    n = len(notes)
    while True:
        window = notes.iloc[:n].reset_index(drop=True)
        sample = task.prepare(window, task_seed)
        ids, loss_mask = build_task_sequence(tokenizer, sample)
        if max_tokens is None or len(ids) <= max_tokens or n <= MIN_WINDOW_NOTES:
            return sample, ids, loss_mask, window
        n = max(MIN_WINDOW_NOTES, min(n - 1, int(n * max_tokens / len(ids) * 0.95)))


class TaskDataset(Dataset):
    """PIANO task sequences (or plain note windows when ``tasks`` is empty) from one split."""

    def __init__(
        self,
        shards: SplitShards,
        tokenizer: MidiTokenizer,
        tasks: list[Task],
        context_size: int,
        notes_per_record: int = 128,
        seed: int = 0,
        prompt_masking: bool = True,
        max_music_time: int = 10_000,
        max_pitch_shift: int = 0,
        speed_change_factors: list[float] | tuple[float, ...] = (),
        length: int = 10**12,
    ):
        if len(shards) == 0:
            raise ValueError(f"{shards.root}: no records to train on")
        self.shards = shards
        self.tokenizer = tokenizer
        self.tasks = list(tasks)
        self.context_size = int(context_size)
        self.notes_per_record = int(notes_per_record)
        if self.notes_per_record < 1:
            raise ValueError(f"notes_per_record={notes_per_record}: must be >= 1")
        self.seed = int(seed)
        self.prompt_masking = bool(prompt_masking)
        self.max_music_time = int(max_music_time)
        self.max_pitch_shift = int(max_pitch_shift or 0)
        self.speed_change_factors = list(speed_change_factors or [])
        self.length = int(length)
        self.cumulative = record_weights(shards)
        if self.tasks:
            add_task_tokens(tokenizer)  # idempotent; the ids are fixed (see piano_gpt.tasks.registry)
        self.genai_id = tokenizer.token_to_id.get(GENAI_TOKEN)

    def __len__(self) -> int:
        return self.length

    @property
    def augmenting(self) -> bool:
        return self.max_pitch_shift > 0 or bool(self.speed_change_factors)

    def sample(self, index: int) -> dict:
        """Everything sample ``index`` is made of: record, first note, notes, task, task sample, ids, mask."""
        rng = np.random.default_rng([self.seed, int(index)])
        record, first, notes = draw_window(self.shards, self.cumulative, rng, self.notes_per_record)
        if self.augmenting:
            notes = augment(notes, rng, self.max_pitch_shift, self.speed_change_factors)
        if not self.tasks:
            ids = np.asarray(self.tokenizer.encode(notes), dtype=np.int64)
            return dict(
                record=record, first=first, notes=notes, task=None, task_sample=None, ids=ids, mask=None
            )
        task = self.tasks[int(rng.integers(len(self.tasks)))]
        task_seed = int(rng.integers(2**31))
        task_sample, ids, mask, notes = fit_task_sequence(
            self.tokenizer, task, notes, task_seed, self.context_size + 1
        )
        return dict(
            record=record,
            first=first,
            notes=notes,
            task=task.name,
            task_sample=task_sample,
            ids=ids,
            mask=mask,
        )

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = self.sample(index)
        mask = sample["mask"] if self.prompt_masking else None
        return make_example(
            sample["ids"], self.context_size, self.tokenizer, self.max_music_time, self.genai_id, mask
        )


def make_task_datasets(
    tokenizer: MidiTokenizer,
    shards: dict[str, SplitShards],
    tasks: list[str] | str | None,
    *,
    context_size: int,
    max_music_time: int,
    seed: int,
    notes_per_record: int = 128,
    prompt_masking: bool = False,
    augmentation: dict | None = None,
):
    """(train, validation) TaskDatasets over the PIANO ``tasks`` (a set name, a task name or a list);
    adds the task tokens to ``tokenizer`` (placeholder slots: the vocabulary size is unchanged)."""
    common = dict(
        tokenizer=tokenizer,
        tasks=resolve_tasks(tasks),
        context_size=context_size,
        notes_per_record=notes_per_record,
        prompt_masking=prompt_masking,
        max_music_time=max_music_time,
    )
    return train_and_validation(TaskDataset, shards, seed, augmentation or {}, **common)


__all__ = [
    "MIN_WINDOW_NOTES",
    "TaskDataset",
    "draw_window",
    "fit_task_sequence",
    "make_task_datasets",
    "rebase",
    "record_weights",
]

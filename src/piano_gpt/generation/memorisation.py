"""How much of a generation copies the training corpus: an n-gram index over the shards' notes.

A note is compared by its pitch and its onset gap to the previous note in tokenizer time units
(10 ms): velocities and durations are left out, so a copy played with other dynamics still counts,
and the absolute time does not matter. Notes are ordered as the tokenizer orders them (by onset on the
time grid, then pitch), so a chord matches whatever the order of its notes in the source file.

:meth:`NgramIndex.check` reports the longest run of consecutive generated notes found verbatim in one
training record (exact: candidate positions come from hashed ``n``-grams, then runs are extended and
compared note by note) and the share of generated notes that lie in some ``n``-gram of the corpus.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from piano_gpt.data.shards import SplitShards, shards_key
from piano_gpt.tokenizers import MidiTokenizer, tokenizer_from_dict
from piano_gpt.train.checkpoint import CheckpointConfig

DEFAULT_NGRAM = 8
MAX_OCCURRENCES = 64  # positions examined per n-gram of the generation (popular n-grams: scales)
_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)


def _grid(start: np.ndarray, time_unit: float) -> np.ndarray:
    return np.round(np.asarray(start, np.float64) / time_unit).astype(np.int64)


def _hashes(pitch: np.ndarray, gap: np.ndarray, n: int) -> np.ndarray:
    """One uint64 per window of ``n`` notes: the pitches of all, the gaps of all but the first."""
    count = len(pitch) - n + 1
    if count <= 0:
        return np.zeros(0, np.uint64)
    value = (pitch.astype(np.int64) + 128 * (gap.astype(np.int64) + 1)).astype(np.uint64)
    first_gap = (128 * (gap[:count].astype(np.int64) + 1)).astype(np.uint64)
    with np.errstate(over="ignore"):
        h = np.zeros(count, np.uint64)
        for j in range(n):
            h = h * _MULTIPLIER + value[j : j + count]
        h -= first_gap * (_MULTIPLIER ** np.uint64(n - 1))
    return h


@dataclass
class MemorisationReport:
    n_notes: int  # generated notes checked
    longest_run: int  # longest run of them found verbatim in one training record
    copied_fraction: float  # share of notes inside an n-gram that occurs in the corpus
    ngram: int
    record: int | None = None  # the record holding the longest run
    source: dict | None = None  # that record's source (title, composer, ...)

    def summary(self) -> str:
        where = ""
        if self.source:
            name = self.source.get("title") or self.source.get("midi_filename") or self.source.get("name")
            composer = self.source.get("composer")
            where = (
                f" (from {', '.join(str(x) for x in (composer, name) if x)})" if (name or composer) else ""
            )
        return (
            f"longest run copied from the training set: {self.longest_run} of {self.n_notes} notes{where}; "
            f"{100 * self.copied_fraction:.1f}% of notes in a copied {self.ngram}-note sequence"
        )

    def to_dict(self) -> dict:
        return {
            "n_notes": self.n_notes,
            "longest_run": self.longest_run,
            "copied_fraction": round(self.copied_fraction, 4),
            "ngram": self.ngram,
            "record": self.record,
        }


class NgramIndex:
    """Sorted hashes of every ``n``-note window of a corpus, with where each one starts."""

    def __init__(
        self,
        pitch: np.ndarray,
        start_units: np.ndarray,
        record_offsets: np.ndarray,
        n: int = DEFAULT_NGRAM,
        time_unit: float = 0.01,
        sources: list | None = None,
    ):
        """``pitch``/``start_units`` of every note, records back to back (``record_offsets``: first note
        of each record, ascending); notes are put in tokenizer order within each record here."""
        if n < 2:
            raise ValueError(f"n={n}: an n-gram index needs n >= 2")
        self.n = int(n)
        self.time_unit = float(time_unit)
        self.sources = sources
        pitch = np.asarray(pitch, np.int64)
        start_units = np.asarray(start_units, np.int64)
        self.record_offsets = np.asarray(record_offsets, np.int64)
        record = np.searchsorted(self.record_offsets, np.arange(len(pitch)), side="right") - 1
        order = np.lexsort((pitch, start_units, record))
        self.pitch, start_units, self.record = pitch[order], start_units[order], record[order]
        gap = np.diff(start_units, prepend=0)
        gap[self.record_offsets[self.record_offsets < len(gap)]] = -1  # a record's first note: no gap
        self.gap = gap
        hashes = _hashes(self.pitch, self.gap, self.n)
        self.order = np.argsort(hashes, kind="stable")
        self.hashes = hashes[self.order]

    def __len__(self) -> int:
        return len(self.pitch)

    @classmethod
    def from_notes(
        cls, pieces: list[pd.DataFrame], time_unit: float = 0.01, n: int = DEFAULT_NGRAM, sources=None
    ):
        counts = np.array([len(p) for p in pieces], np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]) if len(pieces) else np.zeros(0, np.int64)
        pitch = np.concatenate([p["pitch"].to_numpy() for p in pieces]) if pieces else np.zeros(0)
        start = np.concatenate([p["start"].to_numpy() for p in pieces]) if pieces else np.zeros(0)
        return cls(pitch, _grid(start, time_unit), offsets, n, time_unit, sources)

    @classmethod
    def from_shards(cls, shards: SplitShards | str | Path, time_unit: float = 0.01, n: int = DEFAULT_NGRAM):
        if not isinstance(shards, SplitShards):
            shards = SplitShards.open(shards)
        notes = shards.notes
        sources = list(shards.index["source"])
        return cls(
            np.asarray(notes["pitch"]),
            _grid(notes["start"], time_unit),
            shards.index["note_offset"].to_numpy(),
            n,
            time_unit,
            sources,
        )

    def _run_length(self, pitch: np.ndarray, gap: np.ndarray, i: int, c: int) -> int:
        """How many notes from generated note ``i`` equal corpus notes from ``c`` on (same record)."""
        limit = min(len(pitch) - i, len(self.pitch) - c)
        same = (self.pitch[c : c + limit] == pitch[i : i + limit]) & (
            self.record[c : c + limit] == self.record[c]
        )
        same[1:] &= self.gap[c + 1 : c + limit] == gap[i + 1 : i + limit]
        mismatch = np.flatnonzero(~same)
        return int(mismatch[0]) if len(mismatch) else limit

    def check(self, notes: pd.DataFrame) -> MemorisationReport:
        """The memorisation figures of ``notes`` (a generated note table)."""
        units = _grid(notes["start"].to_numpy(), self.time_unit)
        pitch = notes["pitch"].to_numpy(np.int64)
        order = np.lexsort((pitch, units))
        pitch, units = pitch[order], units[order]
        gap = np.diff(units, prepend=units[0] if len(units) else 0)
        m = len(pitch)
        report = MemorisationReport(m, 0, 0.0, self.n)
        hashes = _hashes(pitch, gap, self.n)
        if len(hashes) == 0 or len(self.hashes) == 0:
            return report
        lo = np.searchsorted(self.hashes, hashes, side="left")
        hi = np.searchsorted(self.hashes, hashes, side="right")
        covered = np.zeros(m, bool)
        best, best_at = 0, None
        previous: set[int] = set()  # corpus starts matched at the previous window
        for i in range(len(hashes)):
            if hi[i] == lo[i]:
                previous = set()
                continue
            current = set(self.order[lo[i] : min(hi[i], lo[i] + MAX_OCCURRENCES)].tolist())
            for c in sorted(current):
                if c - 1 in previous:
                    continue  # inside a run already measured from an earlier note
                length = self._run_length(pitch, gap, i, c)
                if length >= self.n:
                    covered[i : i + length] = True
                if length > best:
                    best, best_at = length, c
            previous = current
        report.longest_run = best
        report.copied_fraction = float(covered.mean()) if m else 0.0
        if best_at is not None:
            report.record = int(self.record[best_at])
            if self.sources is not None:
                source = self.sources[report.record]
                report.source = json.loads(source) if isinstance(source, str) else source
        return report


@functools.lru_cache(maxsize=4)
def load_index(shards_path: str, time_unit: float = 0.01, n: int = DEFAULT_NGRAM) -> NgramIndex:
    """The index of a split's shards, built once per process."""
    return NgramIndex.from_shards(shards_path, time_unit, n)


def find_training_shards(
    checkpoint_config: CheckpointConfig, tokenizer: MidiTokenizer, cache_dir: str | Path = "tmp/shards"
) -> Path | None:
    """The ``train`` split shards of the dataset a checkpoint was trained on, if they were built here.

    Tried in order: the shards key of the checkpoint's tokenizer; of that tokenizer without its
    special tokens (training builds shards before adding composer or task tokens); then any shards of
    a dataset with the same name (the notes of a split do not depend on the tokenizer).
    """
    dataset_cfg = checkpoint_config.run.get("dataset")
    cache_dir = Path(cache_dir)
    if not dataset_cfg or not cache_dir.is_dir():
        return None
    name = dataset_cfg.get("name", dataset_cfg.get("type"))
    candidates = [tokenizer]
    data = tokenizer.to_dict()
    if data.get("special_tokens"):
        try:
            candidates.append(tokenizer_from_dict({**data, "special_tokens": []}))
        except (ValueError, KeyError, TypeError):
            pass
    for candidate in candidates:
        split = cache_dir / f"{name}-{shards_key(dataset_cfg, candidate)}" / "train"
        if (split / "manifest.json").exists():
            return split
    others = sorted(cache_dir.glob(f"{name}-*/train/manifest.json"), key=lambda p: p.stat().st_mtime)
    return others[-1].parent if others else None

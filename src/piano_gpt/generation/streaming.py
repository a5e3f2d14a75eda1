"""Notes from a stream of token ids, each given out as soon as nothing later can change it.

:class:`NoteStream` takes one sample's generated ids one at a time and hands out each note once it is
final: its ``NOTE_OFF`` has been decoded (or another strike of its key ended it), or it has reached
the longest note allowed (``max_note_seconds``), and the clock has moved past its start (a second
strike of the same key at the same time would make the two one note). What it hands out, put
together, is exactly what the batch path computes from the same ids: the tokenizer's ``decode`` of
prompt + generated ids, the prompt's notes dropped, shifted by the prompt's offset and made
``playable`` (same floats, bit for bit; tests/test_streaming.py checks it on random id streams).

It reads the base (exponential) tokenizer's tables: ``note_on_ids``, ``note_off_ids``,
``velocity_ids``, ``token_time_units()``; a BPE tokenizer's ids are expanded to base ids first.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from piano_gpt.midi import make_notes
from piano_gpt.tokenizers import MidiTokenizer

_OTHER, _ON, _OFF, _VELOCITY = 0, 1, 2, 3


class _Note:
    __slots__ = ("pitch", "velocity", "start", "generated", "dropped", "ended", "emitted")

    def __init__(self, pitch: int, velocity: int, start: int, generated: bool):
        self.pitch, self.velocity, self.start, self.generated = pitch, velocity, start, generated
        self.dropped = self.emitted = False
        self.ended: int | None = None  # end, in time units, once an event of its pitch ended it


class NoteTables:
    """Per-id facts of one tokenizer that :class:`NoteStream` needs (build once, share between rows)."""

    def __init__(self, tokenizer: MidiTokenizer):
        base = getattr(tokenizer, "base", tokenizer)
        self.pieces = None
        if base is not tokenizer:  # BPE: one id stands for several base ids
            self.pieces = [tokenizer.token_base_ids(i) for i in range(tokenizer.vocab_size)]
        size = base.vocab_size
        self.kind = np.zeros(size, np.int8)
        self.value = np.zeros(size, np.int64)
        on, off, velocity = (np.asarray(x) for x in (base.note_on_ids, base.note_off_ids, base.velocity_ids))
        pitches = np.arange(len(on)) + int(base.decode([int(on[0])])["pitch"].iloc[0])
        self.kind[on], self.value[on] = _ON, pitches
        self.kind[off], self.value[off] = _OFF, pitches
        self.kind[velocity], self.value[velocity] = _VELOCITY, np.arange(len(velocity))
        self.kind, self.value = self.kind.tolist(), self.value.tolist()  # Python ints: fast lookups
        self.units = np.asarray(base.token_time_units(), np.int64).tolist()
        self.velocities = base.bin_velocity(np.arange(len(velocity))).tolist()
        self.default_velocity_bin = int(base.velocity_bin(64))
        self.time_unit = float(base.time_unit)

    def base_ids(self, token: int) -> list[int]:
        return [token] if self.pieces is None else self.pieces[token]


class NoteStream:
    """One sample's notes, final as soon as possible (see the module docstring).

    ``prompt_ids``: the ids the generated ones follow (their notes are never given out; they set the
    clock, the latest velocity and any key still held); ``offset``: seconds added to every time;
    ``max_note_seconds``: the longest note (None: no limit).
    """

    def __init__(
        self,
        tables: NoteTables,
        prompt_ids=(),
        offset: float = 0.0,
        max_note_seconds: float | None = None,
    ):
        self.tables = tables
        self.offset = float(offset)
        self.max_note_seconds = max_note_seconds
        self.clock = 0
        self.velocity_bin = tables.default_velocity_bin
        self.sounding: dict[int, _Note] = {}
        self.at_clock: list[_Note] = []  # generated notes started at the current clock
        self.waiting: list[_Note] = []  # ended at the current clock's start time: wait for the clock
        self.done: list[tuple] = []  # final notes, in the order they became final
        self.ids: list[int] = []  # generated ids fed so far
        self._generated = False
        for token in np.asarray(prompt_ids, np.int64).reshape(-1).tolist():
            self._feed_base(tables.base_ids(token))
        self._generated = True

    # --- times as the batch path computes them: units * time_unit, then + offset -----------------------

    def _seconds(self, units: int) -> float:
        seconds = units * self.tables.time_unit
        return seconds + self.offset if self.offset != 0 else seconds

    def _finish(self, note: _Note, end_units: int | None) -> None:
        """``note`` is final: record it (end clipped to the longest note)."""
        start = self._seconds(note.start)
        if end_units is None:  # at the longest note
            end = start + self.max_note_seconds
        else:
            end = self._seconds(end_units if end_units > note.start else note.start + 1)
            if self.max_note_seconds is not None:
                end = min(end, start + self.max_note_seconds)
        note.emitted = True
        self.done.append((note.pitch, note.velocity, start, end))

    # --- feeding ----------------------------------------------------------------------------------------

    def feed(self, token: int) -> None:
        """Take one generated id."""
        self.ids.append(int(token))
        self._feed_base(self.tables.base_ids(int(token)))

    def _feed_base(self, base_ids) -> None:
        tables = self.tables
        for base in base_ids:
            kind = tables.kind[base]
            if kind == _OTHER:
                step = tables.units[base]
                if step:
                    self._advance(step)
            elif kind == _VELOCITY:
                self.velocity_bin = tables.value[base]
            else:
                pitch = tables.value[base]
                held = self.sounding.pop(pitch, None)
                if held is not None:  # the next event of a pitch ends its sounding note
                    held.ended = self.clock
                    if held.generated and not held.dropped and not held.emitted:
                        if held.start < self.clock:
                            self._finish(held, self.clock)
                        else:
                            self.waiting.append(held)
                if kind == _ON:
                    note = _Note(pitch, tables.velocities[self.velocity_bin], self.clock, self._generated)
                    self.sounding[pitch] = note
                    if self._generated:
                        self.at_clock.append(note)

    def _advance(self, step: int) -> None:
        self._settle_same_time()
        self.clock += step
        if self.max_note_seconds is not None and self.sounding:
            now = self._seconds(self.clock)
            for note in self.sounding.values():
                if note.generated and not (note.dropped or note.emitted):
                    if now >= self._seconds(note.start) + self.max_note_seconds:
                        self._finish(note, None)

    def _settle_same_time(self) -> None:
        """The clock leaves the notes started at it: strikes of one key at one time are one note (the
        loudest; of equals the last struck, whose key is held longest, as ``clip_same_pitch_overlaps``
        keeps the longest); those already ended are now final."""
        if len(self.at_clock) > 1:
            best: dict[int, _Note] = {}
            for note in self.at_clock:
                kept = best.get(note.pitch)
                if kept is None or note.velocity >= kept.velocity:
                    if kept is not None:
                        kept.dropped = True
                    best[note.pitch] = note
                else:
                    note.dropped = True
        for note in self.waiting:
            if not note.dropped:
                self._finish(note, note.ended)
        self.at_clock, self.waiting = [], []

    def close(self) -> None:
        """The stream ended: notes still held end at the last time (as ``decode`` ends them)."""
        self._settle_same_time()
        for note in list(self.sounding.values()):
            if note.generated and not (note.dropped or note.emitted):
                self._finish(note, self.clock)
        self.sounding = {}


def notes_table(rows: list[tuple]) -> pd.DataFrame:
    """``(pitch, velocity, start, end)`` rows as a note table (sorted by start, then pitch)."""
    if not rows:
        return make_notes([], [], [], [])
    pitch, velocity, start, end = zip(*rows)
    return make_notes(pitch, velocity, start, end)

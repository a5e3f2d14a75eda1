"""Exponential-time tokenizer: note on/off events, velocity bins, and time gaps as powers of two.

Vocabulary, in order: ``<PAD> <CLS>``, ``NOTE_ON_p NOTE_OFF_p`` for p in 21..108, ``VELOCITY_b``,
time tokens ``1T 2T 4T ...`` (multiples of ``time_unit`` below ``max_time_step``) and then
``n_special_ids`` placeholder slots that special tokens overwrite, so the vocabulary size (and so a
model's embedding table) never changes when tasks or composers are added.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from piano_gpt.midi import empty_notes
from piano_gpt.tokenizers.base import (
    CLS_TOKEN,
    EOGENAI_TOKEN,
    GENAI_TOKEN,
    PAD_TOKEN,
    PLACEHOLDER_PREFIX,
    MidiTokenizer,
)

MIN_PITCH, MAX_PITCH = 21, 108


class ExponentialTimeTokenizer(MidiTokenizer):
    name = "exponential"

    def __init__(
        self,
        time_unit: float = 0.01,
        max_time_step: float = 1.0,
        n_velocity_bins: int = 32,
        n_special_ids: int = 1024,
        special_tokens: list[str] | None = None,
    ):
        self._time_unit = float(time_unit)
        self.max_time_step = float(max_time_step)
        self.n_velocity_bins = int(n_velocity_bins)
        self.n_special_ids = int(n_special_ids)

        vocab = [PAD_TOKEN, CLS_TOKEN]
        for pitch in range(MIN_PITCH, MAX_PITCH + 1):
            vocab += [f"NOTE_ON_{pitch}", f"NOTE_OFF_{pitch}"]
        vocab += [f"VELOCITY_{b}" for b in range(self.n_velocity_bins)]
        steps = []
        step = 1
        while step * self._time_unit < self.max_time_step - 1e-9:
            steps.append(step)
            step *= 2
        self.time_steps = steps  # in time units, ascending
        vocab += [f"{s}T" for s in steps]
        self.first_special_id = len(vocab)
        vocab += [f"{PLACEHOLDER_PREFIX}{i}>" for i in range(self.n_special_ids)]
        self.vocab = vocab
        self._index_vocab()
        self.special_tokens: list[str] = []
        self._build_lookup_tables()
        self.add_special_tokens([GENAI_TOKEN, EOGENAI_TOKEN, *(special_tokens or [])])

    # --- vocabulary -------------------------------------------------------------------------------

    def _build_lookup_tables(self) -> None:
        ids = self._token_to_id
        self.note_on_ids = np.array([ids[f"NOTE_ON_{p}"] for p in range(MIN_PITCH, MAX_PITCH + 1)])
        self.note_off_ids = np.array([ids[f"NOTE_OFF_{p}"] for p in range(MIN_PITCH, MAX_PITCH + 1)])
        self.velocity_ids = np.array([ids[f"VELOCITY_{b}"] for b in range(self.n_velocity_bins)])
        self.time_ids = np.array([ids[f"{s}T"] for s in self.time_steps])
        size = len(self.vocab)
        # kind: 0 other, 1 note on, 2 note off, 3 velocity, 4 time
        self._kind = np.zeros(size, np.int8)
        self._kind[self.note_on_ids] = 1
        self._kind[self.note_off_ids] = 2
        self._kind[self.velocity_ids] = 3
        self._kind[self.time_ids] = 4
        self._value = np.zeros(size, np.int64)
        self._value[self.note_on_ids] = np.arange(MIN_PITCH, MAX_PITCH + 1)
        self._value[self.note_off_ids] = np.arange(MIN_PITCH, MAX_PITCH + 1)
        self._value[self.velocity_ids] = np.arange(self.n_velocity_bins)
        self._value[self.time_ids] = self.time_steps
        self._time_units = np.where(self._kind == 4, self._value, 0)
        self._default_velocity_bin = int(self.velocity_bin(64))
        self._bin_velocities = self.bin_velocity(np.arange(self.n_velocity_bins))  # bin -> MIDI velocity

    def add_special_tokens(self, tokens: list[str]) -> list[int]:
        for token in tokens:
            if token in self._token_to_id:
                continue
            slot = self.first_special_id + len(self.special_tokens)
            if slot >= len(self.vocab):
                raise ValueError(
                    f"no placeholder slot left for {token!r} (n_special_ids={self.n_special_ids})"
                )
            del self._token_to_id[self.vocab[slot]]
            self.vocab[slot] = token
            self._token_to_id[token] = slot
            self.special_tokens.append(token)
        return [self._token_to_id[t] for t in tokens]

    @property
    def time_unit(self) -> float:
        return self._time_unit

    def token_time_units(self) -> np.ndarray:
        return self._time_units

    def special_token_ids(self) -> np.ndarray:
        return np.arange(self.first_special_id, len(self.vocab))

    def velocity_bin(self, velocity) -> np.ndarray:
        width = 128 / self.n_velocity_bins
        return np.clip((np.asarray(velocity) // width).astype(np.int64), 0, self.n_velocity_bins - 1)

    def bin_velocity(self, bins) -> np.ndarray:
        width = 128 / self.n_velocity_bins
        return np.clip(np.round(np.asarray(bins) * width + width / 2), 1, 127).astype(np.int64)

    # --- encode -------------------------------------------------------------------------------------

    def encode(self, notes: pd.DataFrame) -> list[int]:
        return self.encode_array(notes).tolist()

    def encode_array(self, notes: pd.DataFrame) -> np.ndarray:
        """Encode a note table; pitches outside 21..108 are dropped."""
        pitch = notes["pitch"].to_numpy(np.int64)
        keep = (pitch >= MIN_PITCH) & (pitch <= MAX_PITCH)
        pitch = pitch[keep]
        if len(pitch) == 0:
            return np.zeros(0, np.int64)
        start = np.round(notes["start"].to_numpy(np.float64)[keep] / self._time_unit).astype(np.int64)
        end = np.round(notes["end"].to_numpy(np.float64)[keep] / self._time_unit).astype(np.int64)
        start = np.maximum(start, 0)
        end = np.maximum(end, start + 1)  # a zero-length note gets one unit
        velocity_bin = self.velocity_bin(notes["velocity"].to_numpy()[keep])

        n = len(pitch)
        times = np.concatenate([end, start])  # events: the n note offs, then the n note ons
        event_pitch = np.concatenate([pitch, pitch])
        # NOTE_OFF before NOTE_ON at equal times; then by pitch, for a canonical order (stable): one
        # sort of the key (time, on, pitch) packed in an int64 (times are >= 0 here, pitches < 128).
        if int(times.max()) < 2**54:
            key = times << 8
            key[n:] |= 128
            key |= event_pitch
            order = np.argsort(key, kind="stable")
        else:
            is_on = np.concatenate([np.zeros(n, bool), np.ones(n, bool)])
            order = np.lexsort((event_pitch, is_on, times))
        is_on = order >= n
        note_index = np.where(is_on, order - n, order)
        times, event_pitch = times[order], event_pitch[order]

        gaps = np.diff(times, prepend=0)
        largest = self.time_steps[-1]
        n_largest = gaps // largest
        remainder = gaps % largest
        # Binary digits of the remainder, largest step first: one token per set bit.
        small_steps = np.array(self.time_steps[::-1][1:], dtype=np.int64)
        bits = (remainder[:, None] & small_steps[None, :]) > 0
        small_ids = np.broadcast_to(self.time_ids[::-1][1:], bits.shape)

        n_events = len(times)
        # Per event a fixed row: [time bits..., VELOCITY (ons only), NOTE]; -1 marks absent cells.
        width = len(small_steps) + 2
        rows = np.full((n_events, width), -1, np.int64)
        rows[:, : len(small_steps)] = np.where(bits, small_ids, -1)
        rows[:, -2] = np.where(is_on, self.velocity_ids[velocity_bin[note_index]], -1)
        rows[:, -1] = np.where(
            is_on, self.note_on_ids[event_pitch - MIN_PITCH], self.note_off_ids[event_pitch - MIN_PITCH]
        )
        present = rows >= 0
        output = rows[present]  # row by row, each row's cells in column order
        if n_largest.any():
            # Runs of the largest time token go before each row.
            row_lengths = present.sum(axis=1)
            row_starts = np.cumsum(row_lengths) - row_lengths
            output = np.insert(output, np.repeat(row_starts, n_largest), self.time_ids[-1])
        return output

    # --- decode -------------------------------------------------------------------------------------

    def decode(self, ids) -> pd.DataFrame:
        """Token ids -> note table. Special tokens are skipped; orphan NOTE_OFFs are dropped; a note
        still sounding at the end is closed there; a re-struck pitch closes the sounding note."""
        ids = np.asarray(ids, dtype=np.int64)
        ids = ids[(ids >= 0) & (ids < len(self.vocab))]
        if len(ids) == 0:
            return empty_notes()
        kind = self._kind[ids]
        time = np.cumsum(self._time_units[ids])
        total_time = time[-1]

        events = np.flatnonzero((kind == 1) | (kind == 2))  # positions of NOTE_ON / NOTE_OFF tokens
        if len(events) == 0:
            return empty_notes()
        ev_pitch = self._value[ids[events]]
        ev_on = kind[events] == 1
        ev_time = time[events]
        # A note on ends at the next event of its pitch (or at the end): group events by pitch, keeping
        # sequence order (a stable sort of pitches 21..108, as uint8: a radix sort).
        order = np.argsort(ev_pitch.astype(np.uint8), kind="stable")
        p, t = ev_pitch[order], ev_time[order]
        next_time = np.empty_like(t)
        next_time[:-1] = np.where(p[1:] == p[:-1], t[1:], total_time)
        next_time[-1] = total_time
        ev_end = np.empty_like(t)
        ev_end[order] = next_time
        pitch, start, end = ev_pitch[ev_on], ev_time[ev_on], ev_end[ev_on]
        end = np.where(end <= start, start + 1, end)  # dangling at the very end: one unit

        # Velocity of a note on: the latest VELOCITY token before it (default: the bin of 64).
        velocity_positions = np.flatnonzero(kind == 3)
        latest = np.searchsorted(velocity_positions, events[ev_on], side="right") - 1
        if len(velocity_positions):
            bins = self._value[ids[velocity_positions[np.maximum(latest, 0)]]]
            bins = np.where(latest >= 0, bins, self._default_velocity_bin)
        else:
            bins = np.full(len(pitch), self._default_velocity_bin)

        # The canonical note table (``make_notes``: sorted by start then pitch, stable), built directly:
        # the notes are in sequence order, so their starts are already sorted.
        final = np.lexsort((pitch, start))
        return pd.DataFrame(
            {
                "pitch": pitch[final],
                "velocity": self._bin_velocities[bins[final]],
                "start": start[final] * self._time_unit,
                "end": end[final] * self._time_unit,
            },
            copy=False,
        )

    # --- save / load --------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "time_unit": self._time_unit,
            "max_time_step": self.max_time_step,
            "n_velocity_bins": self.n_velocity_bins,
            "n_special_ids": self.n_special_ids,
            "special_tokens": list(self.special_tokens),
        }

    @classmethod
    def from_dict(cls, data: dict) -> ExponentialTimeTokenizer:
        tokenizer = cls(
            time_unit=data["time_unit"],
            max_time_step=data["max_time_step"],
            n_velocity_bins=data["n_velocity_bins"],
            n_special_ids=data["n_special_ids"],
        )
        tokenizer.add_special_tokens(data.get("special_tokens", []))
        return tokenizer

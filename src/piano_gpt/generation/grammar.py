"""The note grammar a generation keeps, one state per sample: which ids may come next.

An exponential-time token stream is a sequence of events: ``VELOCITY_b NOTE_ON_p`` starts pitch ``p``,
``NOTE_OFF_p`` ends it, time tokens move the clock. A model samples any music id at every step, so
without help it can end a pitch that is not sounding, start one twice, leave a velocity without its
note, or forget to end notes altogether (a continuation that turns into a wash). The grammar allows:

- right after a velocity token: only ``NOTE_ON`` of a pitch that is not sounding;
- otherwise: velocity tokens, ``NOTE_OFF`` of a sounding pitch, time tokens (and ``<EOGENAI>`` where a
  task completion may end), but never a bare ``NOTE_ON``;
- with ``max_note_seconds``: no time step that would carry a sounding note past the limit; a note at
  the limit must be ended before anything else happens.

It is exact for :class:`~piano_gpt.tokenizers.ExponentialTimeTokenizer`, whose encoder writes every
note this way. A BPE token holds several base tokens, so no per-id mask is exact there: the grammar is
off for BPE tokenizers (:func:`grammar_support` says why), and only the decoded notes are clipped to
the longest note.
"""

from __future__ import annotations

import numpy as np
import torch

from piano_gpt.tokenizers import GENAI_TOKEN, MidiTokenizer

# The longest note the grammar lets a generation hold, in seconds (``max_note_seconds``). MAESTRO's own
# notes (sustain folded into note ends): 99.9% last under ~10 s (bench/RESULTS.md, "Note durations").
DEFAULT_MAX_NOTE_SECONDS = 10.0


def grammar_support(tokenizer: MidiTokenizer) -> str | None:
    """None when the grammar is exact for ``tokenizer``, else why it is off."""
    if all(hasattr(tokenizer, name) for name in ("note_on_ids", "note_off_ids", "velocity_ids", "time_ids")):
        return None
    return f"the note grammar is exact only for the exponential tokenizer, not for {tokenizer.name}"


class NoteGrammar:
    """Per-sample grammar state over a batch of ``batch_size`` rows, as masks of allowed ids."""

    def __init__(
        self,
        tokenizer: MidiTokenizer,
        batch_size: int,
        allowed: torch.Tensor,
        max_note_seconds: float | None = DEFAULT_MAX_NOTE_SECONDS,
    ):
        problem = grammar_support(tokenizer)
        if problem:
            raise ValueError(problem)
        size = tokenizer.vocab_size
        self.on_ids = np.asarray(tokenizer.note_on_ids)
        self.off_ids = np.asarray(tokenizer.note_off_ids)
        self.time_ids = np.asarray(tokenizer.time_ids)
        self.units = np.asarray(tokenizer.token_time_units(), np.int64)
        self.time_sizes = self.units[self.time_ids]
        n_pitches = len(self.on_ids)
        # id -> pitch index for note on / off (-1 elsewhere), id -> is velocity
        self.on_pitch = np.full(size, -1, np.int64)
        self.on_pitch[self.on_ids] = np.arange(n_pitches)
        self.off_pitch = np.full(size, -1, np.int64)
        self.off_pitch[self.off_ids] = np.arange(n_pitches)
        self.is_velocity = np.zeros(size, bool)
        self.is_velocity[np.asarray(tokenizer.velocity_ids)] = True
        self.genai_id = tokenizer.token_to_id.get(GENAI_TOKEN)
        allowed = allowed.cpu().numpy().astype(bool)
        # The two masks the state picks from: after a velocity token, and anywhere else.
        self.after_velocity = np.zeros(size, bool)
        self.after_velocity[self.on_ids] = True
        self.anywhere = allowed.copy()
        self.anywhere[self.on_ids] = False
        self.anywhere[self.off_ids] = False  # added back per sounding pitch
        self.limit = (
            None if max_note_seconds is None else max(1, int(round(max_note_seconds / tokenizer.time_unit)))
        )
        self.sounding = np.zeros((batch_size, n_pitches), bool)
        self.onset = np.zeros((batch_size, n_pitches), np.int64)  # clock at each sounding pitch's start
        self.clock = np.zeros(batch_size, np.int64)
        self.pending_velocity = np.zeros(batch_size, bool)
        self.mask = np.zeros((batch_size, size), bool)

    def start(self, prompt_ids) -> None:
        """Set every row's state from the prompt (the part after its last ``<GENAI>``, if any)."""
        ids = np.asarray(prompt_ids, np.int64).reshape(-1)
        if self.genai_id is not None and (ids == self.genai_id).any():
            ids = ids[np.flatnonzero(ids == self.genai_id)[-1] + 1 :]
        for token in ids.tolist():
            self.advance(np.full(len(self.clock), token))

    def advance(self, tokens) -> None:
        """Move every row's state past its token (``tokens``: one id per row)."""
        tokens = np.asarray(tokens, np.int64)
        rows = np.arange(len(tokens))
        self.clock += self.units[tokens]
        on = self.on_pitch[tokens]
        started = on >= 0
        self.sounding[rows[started], on[started]] = True
        self.onset[rows[started], on[started]] = self.clock[started]
        off = self.off_pitch[tokens]
        ended = off >= 0
        self.sounding[rows[ended], off[ended]] = False
        self.pending_velocity = self.is_velocity[tokens]

    def allowed(self) -> np.ndarray:
        """``(B, V)`` bool mask of the ids each row may draw next (on the host, as the sampler wants it)."""
        mask = self.mask
        for row in range(len(self.clock)):
            sounding = self.sounding[row]
            if self.pending_velocity[row]:
                mask[row] = self.after_velocity
                mask[row, self.on_ids[sounding]] = False
                if not mask[row].any():  # every key held: let the velocity stand alone
                    mask[row] = self.anywhere
                continue
            mask[row] = self.anywhere
            mask[row, self.off_ids[sounding]] = True
            if self.limit is not None and sounding.any():
                held = self.clock[row] - self.onset[row, sounding]
                room = self.limit - int(held.max())
                if room <= 0:  # a note at the limit ends now, before anything else
                    mask[row] = False
                    mask[row, self.off_ids[sounding][held >= self.limit]] = True
                    continue
                mask[row, self.time_ids[self.time_sizes > room]] = False
        return mask


def sounding_note_starts(tokenizer: MidiTokenizer, ids: np.ndarray) -> np.ndarray:
    """Positions in ``ids`` of the ``NOTE_ON`` of each note still sounding at its end, oldest first
    (exponential tokenizer ids)."""
    on = np.isin(ids, tokenizer.note_on_ids)
    events = np.flatnonzero(on | np.isin(ids, tokenizer.note_off_ids))
    pitch_of = np.zeros(tokenizer.vocab_size, np.int64)
    pitch_of[tokenizer.note_on_ids] = pitch_of[tokenizer.note_off_ids] = np.arange(len(tokenizer.note_on_ids))
    # The last event of each pitch says whether it still sounds.
    latest = events[::-1]
    _, first = np.unique(pitch_of[ids[latest]], return_index=True)
    last = latest[first]
    return np.sort(last[on[last]])


def held_note_tokens(tokenizer: MidiTokenizer, ids) -> np.ndarray:
    """The ``VELOCITY NOTE_ON`` pairs of the notes still sounding at the end of ``ids``, oldest first.

    A continuation that slides past its context window drops the start of notes that are still held;
    putting these pairs at the start of the new window tells the model those keys are down, so it can
    end them (empty where the grammar is off)."""
    if grammar_support(tokenizer) is not None:
        return np.zeros(0, np.int64)
    ids = np.asarray(ids, np.int64).reshape(-1)
    starts = sounding_note_starts(tokenizer, ids)
    starts = starts[(starts > 0) & np.isin(ids[np.maximum(starts - 1, 0)], tokenizer.velocity_ids)]
    return np.stack([ids[starts - 1], ids[starts]], axis=1).reshape(-1)


def open_notes(tokenizer: MidiTokenizer, ids) -> int | None:
    """How many notes are still sounding at the end of ``ids`` (None where the grammar is off)."""
    if grammar_support(tokenizer) is not None:
        return None
    return len(sounding_note_starts(tokenizer, np.asarray(ids, np.int64).reshape(-1)))

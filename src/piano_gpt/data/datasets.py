"""Training samples drawn from token shards, each one a pure function of (seed, index).

Because sample ``i`` depends only on the seed and ``i``, the data position of a run is one integer:
exact resume restores it, and DDP ranks take disjoint indices of the same global sequence.
"""

from __future__ import annotations

import json

import numpy as np
import torch
from torch.utils.data import Dataset

from piano_gpt.data.shards import SplitShards
from piano_gpt.midi import augment
from piano_gpt.tokenizers import GENAI_TOKEN, MidiTokenizer

UNKNOWN_COMPOSER = "<COMPOSER_UNKNOWN>"


def cleaned_name(name: str) -> str:
    """A name as it appears in a token: upper case, non-alphanumerics as ``_``."""
    return "".join(c if c.isalnum() else "_" for c in name.strip().upper())


def composer_token(name: str | None) -> str:
    if not name:
        return UNKNOWN_COMPOSER
    return f"<COMPOSER_{cleaned_name(name)}>"


def composer_tokens_for(shards: SplitShards, max_composers: int = 128) -> list[str]:
    """Tokens for the most frequent composers of a split (the rest share ``<COMPOSER_UNKNOWN>``)."""
    names = [json.loads(s).get("composer") for s in shards.index["source"]]
    counts: dict[str, int] = {}
    for name in names:
        if name:
            counts[name] = counts.get(name, 0) + 1
    top = sorted(counts, key=lambda n: (-counts[n], n))[:max_composers]
    return [UNKNOWN_COMPOSER] + [composer_token(n) for n in top]


class PretrainingDataset(Dataset):
    """Next-token prediction windows of ``context_size`` tokens.

    Records are drawn with probability proportional to their token count. Without augmentation a
    window is a slice of the token shard; with augmentation the record's notes are shifted in pitch
    and/or speed and tokenized on the fly (speed changes cannot be done in token space).
    """

    def __init__(
        self,
        shards: SplitShards,
        tokenizer: MidiTokenizer,
        context_size: int,
        seed: int = 0,
        length: int = 10**12,
        max_pitch_shift: int = 0,
        speed_change_factors: list[float] | tuple[float, ...] = (),
        with_composer: bool = False,
        max_music_time: int = 10_000,
    ):
        if len(shards) == 0:
            raise ValueError(f"{shards.root}: no records to train on")
        self.shards = shards
        self.tokenizer = tokenizer
        self.context_size = int(context_size)
        self.seed = int(seed)
        self.length = int(length)
        self.max_pitch_shift = int(max_pitch_shift or 0)
        self.speed_change_factors = list(speed_change_factors or [])
        self.with_composer = with_composer
        self.max_music_time = max_music_time
        counts = shards.index["token_count"].to_numpy(np.float64)
        self.cumulative = np.cumsum(counts) / counts.sum()
        self.token_counts = shards.index["token_count"].to_numpy()
        self.note_counts = shards.index["note_count"].to_numpy()
        self.genai_id = tokenizer.token_to_id.get(GENAI_TOKEN)
        if with_composer:
            self.composer_ids = [
                tokenizer.token_to_id.get(composer_token(json.loads(s).get("composer")))
                or tokenizer.token_to_id[UNKNOWN_COMPOSER]
                for s in shards.index["source"]
            ]

    def __len__(self) -> int:
        return self.length

    @property
    def augmenting(self) -> bool:
        return self.max_pitch_shift > 0 or bool(self.speed_change_factors)

    def window_tokens(self, record: int, rng: np.random.Generator, n_tokens: int) -> np.ndarray:
        if not self.augmenting:
            count = int(self.token_counts[record])
            first = int(rng.integers(0, max(1, count - n_tokens + 1)))
            offset = int(self.shards.index.token_offset.iloc[record])
            return np.asarray(self.shards.tokens[offset + first : offset + first + min(n_tokens, count)])
        # Enough notes to fill the window at this record's own tokens-per-note rate, with margin.
        per_note = self.token_counts[record] / max(1, self.note_counts[record])
        n_notes = int(np.ceil(n_tokens / max(per_note, 1.0) * 1.5)) + 8
        count = int(self.note_counts[record])
        first = int(rng.integers(0, max(1, count - n_notes + 1)))
        notes = self.shards.record_notes(record, first, n_notes)
        offset = notes["start"].min()
        notes = notes.assign(start=notes["start"] - offset, end=notes["end"] - offset)
        notes = augment(notes, rng, self.max_pitch_shift, self.speed_change_factors)
        return np.asarray(self.tokenizer.encode(notes), dtype=np.int64)[:n_tokens]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, int(index)])
        record = int(np.searchsorted(self.cumulative, rng.random(), side="right"))
        record = min(record, len(self.cumulative) - 1)
        n_tokens = self.context_size + 1 - int(self.with_composer)
        tokens = self.window_tokens(record, rng, n_tokens).astype(np.int64)
        if self.with_composer:
            tokens = np.concatenate([[self.composer_ids[record]], tokens])
        return make_example(tokens, self.context_size, self.tokenizer, self.max_music_time, self.genai_id)


def train_and_validation(dataset_class, shards: dict, seed: int, augmentation: dict, **common) -> tuple:
    """(train, validation) datasets of one kind: training augmented as configured, validation never,
    and seeded one apart."""
    train = dataset_class(
        shards["train"],
        seed=seed,
        max_pitch_shift=augmentation.get("max_pitch_shift", 0),
        speed_change_factors=list(augmentation.get("speed_change_factors") or []),
        **common,
    )
    return train, dataset_class(shards["validation"], seed=seed + 1, **common)


def make_example(
    tokens: np.ndarray,
    context_size: int,
    tokenizer: MidiTokenizer,
    max_music_time: int,
    reset_token_id: int | None = None,
    loss_mask: np.ndarray | None = None,
) -> dict[str, torch.Tensor]:
    """Inputs, shifted targets (-1 where padded or masked) and music time steps, padded to context."""
    tokens = np.asarray(tokens, dtype=np.int64)[: context_size + 1]
    n = len(tokens)
    padded = np.full(context_size + 1, tokenizer.pad_token_id, dtype=np.int64)
    padded[:n] = tokens
    targets = padded[1:].copy()
    targets[max(n - 1, 0) :] = -1
    if loss_mask is not None:
        mask = np.zeros(context_size + 1, dtype=bool)
        mask[:n] = np.asarray(loss_mask, dtype=bool)[:n]
        targets[~mask[1:]] = -1
    inputs = padded[:-1]
    time_steps = tokenizer.music_time(inputs, max_music_time, reset_token_id)
    return {
        "input_ids": torch.from_numpy(inputs),
        "targets": torch.from_numpy(targets),
        "time_steps": torch.from_numpy(np.asarray(time_steps, dtype=np.int64)),
    }

"""The base class every Piano-GPT tokenizer shares (MidiTok-style: one interface, JSON save/load)."""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
import pandas as pd

PAD_TOKEN = "<PAD>"
CLS_TOKEN = "<CLS>"
GENAI_TOKEN = "<GENAI>"
EOGENAI_TOKEN = "<EOGENAI>"
PLACEHOLDER_PREFIX = "<SPECIAL_"

TOKENIZER_CLASSES: dict[str, type[MidiTokenizer]] = {}


class MidiTokenizer(ABC):
    """Notes <-> token ids. Subclasses register under ``name`` for :func:`load_tokenizer`."""

    name: str = ""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.name:
            TOKENIZER_CLASSES[cls.name] = cls

    vocab: list[str]

    @property
    def token_to_id(self) -> dict[str, int]:
        return self._token_to_id

    def _index_vocab(self) -> None:
        self._token_to_id = {token: i for i, token in enumerate(self.vocab)}

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def pad_token_id(self) -> int:
        return self._token_to_id[PAD_TOKEN]

    @abstractmethod
    def encode(self, notes: pd.DataFrame) -> list[int]: ...

    @abstractmethod
    def decode(self, ids) -> pd.DataFrame: ...

    @abstractmethod
    def to_dict(self) -> dict: ...

    @classmethod
    @abstractmethod
    def from_dict(cls, data: dict) -> MidiTokenizer: ...

    @abstractmethod
    def add_special_tokens(self, tokens: list[str]) -> list[int]:
        """Make ``tokens`` part of the vocabulary (idempotent); returns their ids."""

    @abstractmethod
    def token_time_units(self) -> np.ndarray:
        """For each id, how many time units it advances the clock (for the music time embedding)."""

    @property
    @abstractmethod
    def time_unit(self) -> float: ...

    @abstractmethod
    def special_token_ids(self) -> np.ndarray:
        """Ids of tokens that carry no note information (task, control, placeholder tokens)."""

    def note_on_counts(self) -> np.ndarray:
        """For each id, how many notes it starts (a BPE token may start several). This default decodes
        each id alone; tokenizers that know their NOTE_ON ids say so directly."""
        return np.array([len(self.decode([i])) for i in range(self.vocab_size)], np.int64)

    def decode_tokens(self, ids) -> list[str]:
        return [self.vocab[int(i)] for i in ids]

    def ids_of(self, tokens: list[str]) -> list[int]:
        missing = [t for t in tokens if t not in self._token_to_id]
        if missing:
            raise KeyError(f"tokens not in the vocabulary: {missing[:5]} (add them with add_special_tokens)")
        return [self._token_to_id[t] for t in tokens]

    def music_time(self, ids, max_steps: int | None = None, reset_token_id: int | None = None) -> np.ndarray:
        """Running time (in time units) at each token, restarted after ``reset_token_id``."""
        ids = np.asarray(ids, dtype=np.int64)
        units = self.token_time_units()[ids]
        time = np.cumsum(units, axis=-1)
        if reset_token_id is not None:
            is_reset = ids == reset_token_id
            # Time already elapsed at the last reset (inclusive) is subtracted from what follows.
            base = np.where(is_reset, time, 0)
            base = np.maximum.accumulate(base, axis=-1)
            time = time - base
        if max_steps is not None:
            time = np.minimum(time, max_steps - 1)
        return time

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict()))
        os.replace(tmp, path)
        return path

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> MidiTokenizer:
        return load_tokenizer(path)

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"


def tokenizer_from_dict(data: dict) -> MidiTokenizer:
    name = data.get("name")
    if name not in TOKENIZER_CLASSES:
        raise ValueError(f"unknown tokenizer {name!r}; known: {sorted(TOKENIZER_CLASSES)}")
    return TOKENIZER_CLASSES[name].from_dict(data)


def load_tokenizer(path: str | os.PathLike) -> MidiTokenizer:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a tokenizer JSON file ({error})") from error
    return tokenizer_from_dict(data)

"""BPE ("awesome") tokenizer: byte-pair merges learned over the ids of a base tokenizer.

Each base id ``b`` is written as the character ``chr(CHAR_OFFSET + b)`` (CJK block: printable, and
untouched because the HF tokenizer has no normalizer and no pre-tokenizer, so the BPE model sees the
whole string). A record becomes a text, cut at base special tokens and into chunks of at most
``max_token_length`` characters, and an HF ``tokenizers`` BPE model is trained on those chunks.

Every special base token (``<PAD>``, ``<CLS>`` and all placeholder slots, whether filled or not) is an
HF special token: it is left out of the training text and split out before the BPE model runs, so it
is never merged with anything, and :meth:`AwesomeMidiTokenizer.add_special_tokens` can still fill base
placeholder slots without changing the vocabulary size.

Awesome ids are the HF ids (``0 .. vocab_size-1``). Decoding maps each id back to its base ids, so
``decode(encode(notes)) == base.decode(base.encode(notes))`` exactly.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tokenizers import Tokenizer, models, trainers

from piano_gpt.midi import make_notes
from piano_gpt.tokenizers.base import CLS_TOKEN, PAD_TOKEN, MidiTokenizer, tokenizer_from_dict

CHAR_OFFSET = 0x4E00  # CJK Unified Ideographs
_MAX_CHAR = 0xD7FF  # stay below the surrogate range
TOKEN_SEPARATOR = " "  # a merged token's name: its base token names joined by this


def base_ids_to_text(base_ids) -> str:
    """Base ids -> the text the BPE model works on (one character per id)."""
    codes = np.asarray(base_ids, dtype=np.int64).reshape(-1)
    if len(codes) and (codes.min() < 0 or codes.max() + CHAR_OFFSET > _MAX_CHAR):
        raise ValueError("base ids out of the character range")
    return (codes + CHAR_OFFSET).astype("<u4").tobytes().decode("utf-32-le")


def text_to_base_ids(text: str) -> np.ndarray:
    """Inverse of :func:`base_ids_to_text`."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype="<u4").astype(np.int64)
    return codes - CHAR_OFFSET


def _atomic_base_ids(base: MidiTokenizer) -> np.ndarray:
    """Base ids that must never be merged: PAD, CLS and every special / placeholder slot."""
    ids = set(int(i) for i in base.special_token_ids())
    for token in (PAD_TOKEN, CLS_TOKEN):
        if token in base.token_to_id:
            ids.add(base.token_to_id[token])
    return np.array(sorted(ids), dtype=np.int64)


def _item_base_ids(base: MidiTokenizer, item) -> np.ndarray:
    """A training item (text, base ids, note table or epr-labs record) -> base ids."""
    if isinstance(item, str):
        ids = text_to_base_ids(item)
        if len(ids) and (ids.min() < 0 or ids.max() >= base.vocab_size):
            raise ValueError("text holds characters that are not base tokens")
        return ids
    if isinstance(item, pd.DataFrame):
        return np.asarray(base.encode(item), dtype=np.int64)
    if isinstance(item, Mapping):
        notes = item["notes"]
        if not isinstance(notes, pd.DataFrame):
            notes = make_notes(notes["pitch"], notes["velocity"], notes["start"], notes["end"])
        return np.asarray(base.encode(notes), dtype=np.int64)
    ids = np.asarray(item, dtype=np.int64).reshape(-1)
    if len(ids) and (ids.min() < 0 or ids.max() >= base.vocab_size):
        raise ValueError("base ids out of range")
    return ids


def training_texts(base: MidiTokenizer, items: Iterable, max_token_length: int = 128) -> Iterator[str]:
    """The BPE training text of ``items``: each record as text, cut at special tokens (which are
    dropped) and into chunks of at most ``max_token_length`` characters."""
    atomic = np.zeros(base.vocab_size, bool)
    atomic[_atomic_base_ids(base)] = True
    for item in items:
        ids = _item_base_ids(base, item)
        if len(ids) == 0:
            continue
        text = base_ids_to_text(ids)
        cuts = np.flatnonzero(atomic[ids])
        bounds = np.concatenate([[-1], cuts, [len(ids)]])
        for start, stop in zip(bounds[:-1] + 1, bounds[1:], strict=True):
            for chunk_start in range(int(start), int(stop), max_token_length):
                yield text[chunk_start : min(chunk_start + max_token_length, int(stop))]


def _canonical(value):
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [_canonical(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def tokenizer_config_hash(dataset_cfg: dict, tokenizer_cfg: dict) -> str:
    """First 12 hex digits of the sha256 of the canonical JSON of both configs (key order and
    mapping/sequence types, e.g. OmegaConf containers, do not matter)."""
    payload = json.dumps(
        {"dataset": _canonical(dataset_cfg), "tokenizer": _canonical(tokenizer_cfg)},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


class AwesomeMidiTokenizer(MidiTokenizer):
    """BPE over a base tokenizer's ids. Build one with :meth:`train` or load a saved one."""

    name = "awesome"

    def __init__(self, base: MidiTokenizer, hf_tokenizer: Tokenizer, max_token_length: int = 128):
        if base.vocab_size + CHAR_OFFSET > _MAX_CHAR:
            raise ValueError(f"base vocabulary too large ({base.vocab_size}) for the character mapping")
        self.base = base
        self.hf_tokenizer = hf_tokenizer
        self.max_token_length = int(max_token_length)
        self._build_tables()

    # --- tables -------------------------------------------------------------------------------------

    def _build_tables(self) -> None:
        hf_vocab = self.hf_tokenizer.get_vocab(with_added_tokens=True)
        size = len(hf_vocab)
        strings = [""] * size
        for string, i in hf_vocab.items():
            if not 0 <= i < size or strings[i]:
                raise ValueError("HF tokenizer ids are not contiguous")
            strings[i] = string
        pieces = []
        for string in strings:
            ids = text_to_base_ids(string)
            if len(ids) == 0 or ids.min() < 0 or ids.max() >= self.base.vocab_size:
                raise ValueError(f"HF token {string!r} is not made of base tokens")
            pieces.append(ids)
        self._lengths = np.array([len(p) for p in pieces], dtype=np.int64)
        self._offsets = np.concatenate([[0], np.cumsum(self._lengths)[:-1]]).astype(np.int64)
        self._flat = np.concatenate(pieces).astype(np.int64)

        # Awesome id of each single base token; every base token must have one.
        self._single = np.full(self.base.vocab_size, -1, np.int64)
        singles = np.flatnonzero(self._lengths == 1)
        self._single[self._flat[self._offsets[singles]]] = singles
        if (self._single < 0).any():
            missing = np.flatnonzero(self._single < 0)[:5].tolist()
            raise ValueError(f"base ids {missing} have no token of their own in the BPE vocabulary")
        atomic = _atomic_base_ids(self.base)
        merged_atomic = np.isin(self._flat, atomic) & np.repeat(self._lengths > 1, self._lengths)
        if merged_atomic.any():
            raise ValueError("a special base token is merged with others in the BPE vocabulary")

        base_units = np.asarray(self.base.token_time_units(), dtype=np.int64)
        self._time_units = np.add.reduceat(base_units[self._flat], self._offsets)
        self._special_ids = np.sort(self._single[np.asarray(self.base.special_token_ids(), dtype=np.int64)])
        self._pieces = pieces
        self._refresh_names()

    def _name_of(self, awesome_id: int) -> str:
        base_vocab = self.base.vocab
        return TOKEN_SEPARATOR.join(base_vocab[int(b)] for b in self._pieces[awesome_id])

    def _refresh_names(self) -> None:
        self.vocab = [self._name_of(i) for i in range(len(self._pieces))]
        self._index_vocab()
        if len(self._token_to_id) != len(self.vocab):
            raise ValueError("token names collide in the BPE vocabulary")

    # --- MidiTokenizer interface ----------------------------------------------------------------------

    @property
    def time_unit(self) -> float:
        return self.base.time_unit

    def token_time_units(self) -> np.ndarray:
        return self._time_units

    def special_token_ids(self) -> np.ndarray:
        return self._special_ids

    def token_base_ids(self, awesome_id: int) -> list[int]:
        """The base ids one awesome token stands for."""
        return self._pieces[int(awesome_id)].tolist()

    def note_on_counts(self) -> np.ndarray:
        """The notes each awesome token starts: the sum over the base ids it stands for."""
        base_counts = self.base.note_on_counts()
        return np.array([base_counts[self.token_base_ids(i)].sum() for i in range(self.vocab_size)], np.int64)

    def add_special_tokens(self, tokens: list[str]) -> list[int]:
        """Fill base placeholder slots (idempotent); the vocabulary size never changes."""
        for token in tokens:
            if token in self._token_to_id and token not in self.base.token_to_id:
                raise ValueError(f"{token!r} is already the name of a merged BPE token")
        base_ids = self.base.add_special_tokens(tokens)
        for base_id in base_ids:
            awesome_id = int(self._single[base_id])
            old, new = self.vocab[awesome_id], self._name_of(awesome_id)
            if old != new:
                del self._token_to_id[old]
                self.vocab[awesome_id] = new
                self._token_to_id[new] = awesome_id
        return [int(self._single[b]) for b in base_ids]

    # --- encode / decode ------------------------------------------------------------------------------

    def encode_base_ids(self, base_ids) -> list[int]:
        """Base ids -> awesome ids (special base tokens always become their own token)."""
        text = base_ids_to_text(base_ids)
        if not text:
            return []
        if max(text) >= chr(CHAR_OFFSET + self.base.vocab_size):
            raise ValueError("base ids out of range")
        return self.hf_tokenizer.encode(text, add_special_tokens=False).ids

    def decode_to_base_ids(self, ids) -> np.ndarray:
        """Awesome ids -> base ids; ids outside the vocabulary are skipped."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        ids = ids[(ids >= 0) & (ids < len(self._lengths))]
        lengths = self._lengths[ids]
        total = int(lengths.sum())
        if total == 0:
            return np.zeros(0, np.int64)
        starts = np.repeat(self._offsets[ids] - (np.cumsum(lengths) - lengths), lengths)
        return self._flat[starts + np.arange(total)]

    def encode(self, notes: pd.DataFrame) -> list[int]:
        return self.encode_base_ids(self.base.encode(notes))

    def encode_array(self, notes: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.encode(notes), dtype=np.int64)

    def decode(self, ids) -> pd.DataFrame:
        return self.base.decode(self.decode_to_base_ids(ids))

    # --- training -------------------------------------------------------------------------------------

    @classmethod
    def train(
        cls,
        base: MidiTokenizer,
        records_or_texts_iterable: Iterable,
        vocab_size: int = 10000,
        max_token_length: int = 128,
        show_progress: bool = False,
    ) -> AwesomeMidiTokenizer:
        """Learn BPE merges over ``base`` ids. Items may be epr-labs records (``{"notes": ...}``), note
        tables, base-id sequences or texts from :func:`base_ids_to_text` / :func:`training_texts`.
        Deterministic: the same items, in the same order, and config give the same tokenizer."""
        if vocab_size < base.vocab_size:
            raise ValueError(f"vocab_size {vocab_size} is below the base vocabulary size {base.vocab_size}")
        if base.vocab_size + CHAR_OFFSET > _MAX_CHAR:
            raise ValueError(f"base vocabulary too large ({base.vocab_size}) for the character mapping")
        atomic = _atomic_base_ids(base)
        is_atomic = np.zeros(base.vocab_size, bool)
        is_atomic[atomic] = True
        special = [chr(CHAR_OFFSET + int(i)) for i in atomic]
        alphabet = [chr(CHAR_OFFSET + int(i)) for i in np.flatnonzero(~is_atomic)]
        hf_tokenizer = Tokenizer(models.BPE())  # no normalizer, no pre-tokenizer: the BPE model sees it all
        trainer = trainers.BpeTrainer(
            vocab_size=int(vocab_size),
            min_frequency=2,
            max_token_length=int(max_token_length),
            special_tokens=special,
            initial_alphabet=alphabet,
            show_progress=show_progress,
        )
        hf_tokenizer.train_from_iterator(
            training_texts(base, records_or_texts_iterable, max_token_length), trainer=trainer
        )
        return cls(base, hf_tokenizer, max_token_length=max_token_length)

    # --- save / load ----------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "char_offset": CHAR_OFFSET,
            "max_token_length": self.max_token_length,
            "base": self.base.to_dict(),
            "hf_tokenizer": self.hf_tokenizer.to_str(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> AwesomeMidiTokenizer:
        if data.get("char_offset", CHAR_OFFSET) != CHAR_OFFSET:
            raise ValueError(f"unsupported char_offset {data['char_offset']}")
        base = tokenizer_from_dict(data["base"])
        hf_tokenizer = Tokenizer.from_str(data["hf_tokenizer"])
        return cls(base, hf_tokenizer, max_token_length=data.get("max_token_length", 128))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size}, base={self.base!r})"


# --- trained tokenizers on disk -------------------------------------------------------------------------
#
# ``python -m piano_gpt.train_tokenizer`` writes ``<tokenizers_dir>/awesome-<dataset name>-<hash>.json``,
# the hash being :func:`tokenizer_config_hash` of the dataset config and the tokenizer config (less
# ``tokenizers_dir``, which says where files go, not what the tokenizer is). Training with
# ``tokenizer=awesome`` finds it by the same hash: :func:`piano_gpt.train.config.find_trained_tokenizer`.

DEFAULT_TOKENIZERS_DIR = "tmp/tokenizers"
LOCATION_KEYS = ("tokenizers_dir",)  # tokenizer config keys left out of the hash


def plain_dict(section) -> dict:
    """A config section (DictConfig or mapping) as plain, resolved dicts and lists."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(section, DictConfig):
        section = OmegaConf.to_container(section, resolve=True)
    return _canonical(dict(section or {}))


def trained_tokenizer_hash(dataset_cfg, tokenizer_cfg) -> str:
    """The hash naming the tokenizer trained for these configs."""
    tokenizer = {k: v for k, v in plain_dict(tokenizer_cfg).items() if k not in LOCATION_KEYS}
    return tokenizer_config_hash(plain_dict(dataset_cfg), tokenizer)


def trained_tokenizer_path(dataset_cfg, tokenizer_cfg) -> Path:
    """``<tokenizers_dir>/awesome-<dataset name>-<hash>.json``."""
    dataset, tokenizer = plain_dict(dataset_cfg), plain_dict(tokenizer_cfg)
    directory = Path(str(tokenizer.get("tokenizers_dir") or DEFAULT_TOKENIZERS_DIR)).expanduser()
    label = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(dataset.get("name") or dataset.get("type") or "dataset"))
    return directory / f"awesome-{label}-{trained_tokenizer_hash(dataset, tokenizer)}.json"


def base_tokenizer_from_config(tokenizer_cfg) -> MidiTokenizer:
    """The base tokenizer an awesome tokenizer config names (``base:``; exponential unless named)."""
    base = dict(plain_dict(tokenizer_cfg).get("base") or {})
    base.setdefault("name", "exponential")
    return tokenizer_from_dict(base)

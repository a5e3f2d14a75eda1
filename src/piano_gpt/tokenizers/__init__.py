"""Tokenizers: notes <-> token ids. Every tokenizer shares :class:`MidiTokenizer`."""

from piano_gpt.tokenizers.awesome import AwesomeMidiTokenizer, tokenizer_config_hash
from piano_gpt.tokenizers.base import (
    CLS_TOKEN,
    EOGENAI_TOKEN,
    GENAI_TOKEN,
    PAD_TOKEN,
    MidiTokenizer,
    load_tokenizer,
    tokenizer_from_dict,
)
from piano_gpt.tokenizers.exponential import ExponentialTimeTokenizer

__all__ = [
    "AwesomeMidiTokenizer",
    "tokenizer_config_hash",
    "CLS_TOKEN",
    "EOGENAI_TOKEN",
    "GENAI_TOKEN",
    "PAD_TOKEN",
    "ExponentialTimeTokenizer",
    "MidiTokenizer",
    "load_tokenizer",
    "tokenizer_from_dict",
]

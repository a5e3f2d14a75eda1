"""Conditioning tokens as options: composer, dataset, number of notes, time span.

Only tokens the checkpoint's tokenizer holds can be used (a model knows a conditioning token only if
it was trained with it); asking for another one is an error that lists what the tokenizer knows.

- composer: ``composer="Chopin"`` -> ``<COMPOSER_CHOPIN>`` (``piano_gpt.data.datasets.composer_token``,
  the token next-token-with-composer training puts before every window);
- dataset: ``dataset="maestro"`` -> ``<DATASET_MAESTRO>``, or the reference's ``<MAESTRO>``;
- number of notes and time span (task completion only): ``<N_NOTES_k>``, ``<MUSIC_TIME_s>`` of the
  task layout (``piano_gpt.tasks.sequence``).
"""

from __future__ import annotations

from piano_gpt.data.datasets import cleaned_name, composer_token
from piano_gpt.tokenizers import MidiTokenizer


class GenerationError(ValueError):
    """A generation request that cannot be served; the message says what to change."""


def dataset_tokens(name: str) -> list[str]:
    """Candidate tokens for a dataset name, in order of preference."""
    return [f"<DATASET_{cleaned_name(name)}>", f"<{cleaned_name(name)}>", f"<{name.strip().upper()}>"]


def known_tokens(tokenizer: MidiTokenizer, prefix: str) -> list[str]:
    return sorted(t for t in getattr(tokenizer, "special_tokens", []) if t.startswith(prefix))


def composer_id(tokenizer: MidiTokenizer, composer: str) -> int:
    token = composer if composer.startswith("<") else composer_token(composer)
    if token not in tokenizer.token_to_id:
        known = [t[len("<COMPOSER_") : -1] for t in known_tokens(tokenizer, "<COMPOSER_")]
        raise GenerationError(
            f"composer={composer!r}: this checkpoint's tokenizer has no {token} token (the model was not "
            f"trained with it); known composers: {', '.join(known) if known else 'none'}"
        )
    return tokenizer.token_to_id[token]


def dataset_id(tokenizer: MidiTokenizer, dataset: str) -> int:
    candidates = [dataset] if dataset.startswith("<") else dataset_tokens(dataset)
    for token in candidates:
        if token in tokenizer.token_to_id:
            return tokenizer.token_to_id[token]
    raise GenerationError(
        f"dataset={dataset!r}: this checkpoint's tokenizer has none of {candidates} (the model was not "
        f"trained with dataset tokens for it)"
    )


def prefix_ids(
    tokenizer: MidiTokenizer, composer: str | None = None, dataset: str | None = None
) -> list[int]:
    """The conditioning prefix ``[<DATASET>, <COMPOSER>]`` (each optional), as the training layouts put it."""
    ids = []
    if dataset:
        ids.append(dataset_id(tokenizer, dataset))
    if composer:
        ids.append(composer_id(tokenizer, composer))
    return ids

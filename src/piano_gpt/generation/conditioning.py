"""Conditioning tokens as options: composer, dataset, number of notes, time span.

Only tokens the checkpoint's tokenizer holds can be used (a model knows a conditioning token only if
it was trained with it); asking for another one is an error that lists what the tokenizer knows.

- composer: ``composer="Chopin"`` -> the one composer token of the tokenizer whose name holds it,
  accents and case ignored (``<COMPOSER_FRÉDÉRIC_CHOPIN>`` from MAESTRO's "Frédéric Chopin", or
  ``<COMPOSER_CHOPIN>``); a whole name, a surname or any part that names one composer only;
  ``<COMPOSER_...>`` picks a token as it is (``piano_gpt.data.datasets.composer_token`` makes the
  tokens next-token-with-composer training puts before every window);
- dataset: ``dataset="maestro"`` -> ``<DATASET_MAESTRO>``, or the reference's ``<MAESTRO>``;
- number of notes and time span (task completion only): ``<N_NOTES_k>``, ``<MUSIC_TIME_s>`` of the
  task layout (``piano_gpt.tasks.sequence``).
"""

from __future__ import annotations

import unicodedata

from piano_gpt.data.datasets import UNKNOWN_COMPOSER, cleaned_name, composer_token
from piano_gpt.tokenizers import MidiTokenizer


class GenerationError(ValueError):
    """A generation request that cannot be served; the message says what to change."""


def dataset_tokens(name: str) -> list[str]:
    """Candidate tokens for a dataset name, in order of preference."""
    return [f"<DATASET_{cleaned_name(name)}>", f"<{cleaned_name(name)}>", f"<{name.strip().upper()}>"]


def known_tokens(tokenizer: MidiTokenizer, prefix: str) -> list[str]:
    """The tokenizer's tokens that start with ``prefix`` (from its vocabulary: a BPE tokenizer keeps its
    special tokens in its base tokenizer, under the same names)."""
    return sorted(t for t in tokenizer.token_to_id if t.startswith(prefix) and " " not in t)


def folded_words(name: str) -> list[str]:
    """The words of a name as people type them: accents, case and punctuation ignored."""
    plain = "".join(c for c in unicodedata.normalize("NFKD", name) if not unicodedata.combining(c))
    return "".join(c if c.isalnum() else " " for c in plain.casefold()).split()


def composer_names(tokenizer: MidiTokenizer) -> dict[str, str]:
    """Composer name as in the token (``FRÉDÉRIC_CHOPIN``) -> token, for the tokenizer's composer tokens."""
    prefix = "<COMPOSER_"
    return {t[len(prefix) : -1]: t for t in known_tokens(tokenizer, prefix)}


def match_composer(tokenizer: MidiTokenizer, composer: str) -> str:
    """The composer token ``composer`` names (see the module doc); GenerationError when none or several."""
    if composer.startswith("<"):
        if composer not in tokenizer.token_to_id:
            raise GenerationError(f"composer={composer!r}: this checkpoint's tokenizer has no such token")
        return composer
    names = composer_names(tokenizer)
    wanted = folded_words(composer)
    people = {name: token for name, token in names.items() if token != UNKNOWN_COMPOSER}
    exact = [name for name in names if folded_words(name) == wanted]
    words = [name for name in people if wanted and _holds_words(folded_words(name), wanted)]
    prefixes = [name for name in people if wanted and _holds_words(folded_words(name), wanted, prefix=True)]
    for candidates in (exact, words, prefixes):
        if len(candidates) == 1:
            return names[candidates[0]]
        if len(candidates) > 1:
            raise GenerationError(
                f"composer={composer!r} names {len(candidates)} composers of this checkpoint: "
                f"{', '.join(sorted(candidates))} (give more of the name)"
            )
    known = ", ".join(sorted(people)) or "none (the model was not trained with composer tokens)"
    raise GenerationError(
        f"composer={composer!r}: no composer of this checkpoint's tokenizer matches {composer_token(composer)} "
        f"(the model was not trained with it); known composers: {known}"
    )


def _holds_words(name_words: list[str], wanted: list[str], prefix: bool = False) -> bool:
    """Every wanted word is one of the name's words (or the start of one), in order."""
    position = 0
    for word in wanted:
        while position < len(name_words) and not (
            name_words[position].startswith(word) if prefix else name_words[position] == word
        ):
            position += 1
        if position == len(name_words):
            return False
        position += 1
    return True


def composer_id(tokenizer: MidiTokenizer, composer: str) -> int:
    return tokenizer.token_to_id[match_composer(tokenizer, composer)]


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

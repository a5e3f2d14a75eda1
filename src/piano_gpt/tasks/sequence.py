"""The token layout of a task sample, as the reference trains it:

``[<DATASET>, <COMPOSER>, <N_NOTES_k>] + task tokens + [<MUSIC_TIME_a>, <MUSIC_TIME_b>]
+ source tokens + <GENAI> + target tokens + <EOGENAI>``

- ``<DATASET>`` and ``<COMPOSER>`` are optional; the caller names (and adds) them.
- ``<N_NOTES_k>``: the number of target notes, bucketed: exact below 64, then buckets of 16
  (``<N_NOTES_64>`` = 64..79, ...), ``<N_NOTES_512>`` = 512 or more.
- ``<MUSIC_TIME_a>, <MUSIC_TIME_b>``: where the target lies, in whole seconds: ``a`` = floor of its
  first start, ``b`` = ceil of its last end, both clipped to 0..120 (120 = "120 s or later").
- Target note times are NOT re-based: source and target share one clock (the fragment's, which the
  caller starts at 0). The target is encoded from time 0, so its first tokens advance the clock to
  its first note, and music time restarts after ``<GENAI>`` (``tokenizer.music_time(ids,
  reset_token_id=<GENAI id>)``): the target's music time is then its time on the source's clock.
  This keeps generated notes aligned with the source, so masking tasks can merge them exactly.

``loss_mask`` is True on the target tokens and ``<EOGENAI>`` only (for prompt masking). For
next-token training take ``x = ids[:-1], y = ids[1:], mask = loss_mask[1:]`` (pass ``context_size =
block_size + 1``).

Before building sequences add the tokens: ``tokenizer.add_special_tokens(task_special_tokens())``
(plus the caller's dataset/composer tokens), or :func:`add_task_tokens`.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from piano_gpt.tasks.base import TaskSample
from piano_gpt.tasks.registry import all_task_tokens
from piano_gpt.tokenizers.base import EOGENAI_TOKEN, GENAI_TOKEN, MidiTokenizer

N_NOTES_EXACT = 64
N_NOTES_STEP = 16
N_NOTES_MAX = 512
MAX_MUSIC_TIME_S = 120


def n_notes_bucket(n_notes: int) -> int:
    n_notes = int(n_notes)
    if n_notes < 0:
        raise ValueError(f"negative number of notes: {n_notes}")
    if n_notes < N_NOTES_EXACT:
        return n_notes
    if n_notes >= N_NOTES_MAX:
        return N_NOTES_MAX
    return n_notes - (n_notes - N_NOTES_EXACT) % N_NOTES_STEP


def n_notes_token(n_notes: int) -> str:
    return f"<N_NOTES_{n_notes_bucket(n_notes)}>"


def music_time_token(seconds: float) -> str:
    """``<MUSIC_TIME_s>`` for a whole number of seconds ``s`` (clipped to 0..MAX_MUSIC_TIME_S)."""
    return f"<MUSIC_TIME_{int(min(max(seconds, 0), MAX_MUSIC_TIME_S))}>"


def music_time_tokens(target: pd.DataFrame) -> list[str]:
    """The target's span in whole seconds: floor of the first start, ceil of the last end."""
    if len(target) == 0:
        return [music_time_token(0), music_time_token(0)]
    first = math.floor(float(target["start"].min()) + 1e-9)
    last = math.ceil(float(target["end"].max()) - 1e-9)
    return [music_time_token(first), music_time_token(last)]


def layout_special_tokens() -> list[str]:
    """Every token this layout may use besides task, dataset and composer tokens (fixed order)."""
    n_notes = sorted({n_notes_bucket(n) for n in range(N_NOTES_MAX + 1)})
    tokens = [GENAI_TOKEN, EOGENAI_TOKEN]
    tokens += [f"<N_NOTES_{n}>" for n in n_notes]
    tokens += [music_time_token(s) for s in range(MAX_MUSIC_TIME_S + 1)]
    return tokens


def task_special_tokens() -> list[str]:
    """Task tokens and layout tokens: what a tokenizer needs for task training."""
    return all_task_tokens() + layout_special_tokens()


def add_task_tokens(tokenizer: MidiTokenizer, extra_tokens: list[str] | tuple[str, ...] = ()) -> list[int]:
    """Add the task and layout tokens (then ``extra_tokens``) to ``tokenizer``; returns their ids."""
    return tokenizer.add_special_tokens(task_special_tokens() + list(extra_tokens))


def prompt_prefix_tokens(
    sample: TaskSample, composer_token: str | None = None, dataset_token: str | None = None
) -> list[str]:
    tokens = [token for token in (dataset_token, composer_token) if token]
    tokens.append(n_notes_token(len(sample.target)))
    tokens += list(sample.prefix_tokens)
    tokens += music_time_tokens(sample.target)
    return tokens


def build_task_prompt(
    tokenizer: MidiTokenizer,
    sample: TaskSample,
    composer_token: str | None = None,
    dataset_token: str | None = None,
) -> np.ndarray:
    """The prompt for generation: the layout up to and including ``<GENAI>``."""
    prefix = tokenizer.ids_of(prompt_prefix_tokens(sample, composer_token, dataset_token))
    ids = prefix + list(tokenizer.encode(sample.source)) + tokenizer.ids_of([GENAI_TOKEN])
    return np.asarray(ids, dtype=np.int64)


def build_task_sequence(
    tokenizer: MidiTokenizer,
    sample: TaskSample,
    composer_token: str | None = None,
    dataset_token: str | None = None,
    context_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, loss_mask) of a task sample; see the module docstring for the layout.

    With ``context_size`` the sequence is cut to that length (the end goes first) or right-padded
    with the pad token (loss_mask False on padding).
    """
    prompt = build_task_prompt(tokenizer, sample, composer_token, dataset_token)
    answer = list(tokenizer.encode(sample.target)) + tokenizer.ids_of([EOGENAI_TOKEN])
    ids = np.concatenate([prompt, np.asarray(answer, dtype=np.int64)])
    loss_mask = np.zeros(len(ids), dtype=bool)
    loss_mask[len(prompt) :] = True
    if context_size is not None:
        context_size = int(context_size)
        if context_size <= 0:
            raise ValueError(f"context_size must be positive, got {context_size}")
        ids, loss_mask = ids[:context_size], loss_mask[:context_size]
        pad = context_size - len(ids)
        if pad > 0:
            ids = np.concatenate([ids, np.full(pad, tokenizer.pad_token_id, dtype=np.int64)])
            loss_mask = np.concatenate([loss_mask, np.zeros(pad, dtype=bool)])
    return ids, loss_mask


def split_generated(tokenizer: MidiTokenizer, ids) -> pd.DataFrame:
    """The target notes of a token sequence: the tokens after the first ``<GENAI>`` (or from the
    start, when there is none: a bare generation) up to the first ``<EOGENAI>`` after it (or the end)."""
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    genai_id, eogenai_id = tokenizer.ids_of([GENAI_TOKEN, EOGENAI_TOKEN])
    starts = np.flatnonzero(ids == genai_id)
    ids = ids[starts[0] + 1 :] if len(starts) else ids
    ends = np.flatnonzero(ids == eogenai_id)
    if len(ends):
        ids = ids[: ends[0]]
    return tokenizer.decode(ids)

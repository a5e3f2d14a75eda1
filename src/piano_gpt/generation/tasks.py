"""PIANO task completion from notes: source + task -> generated target (``piano_gpt.tasks``).

The prompt follows the task layout of ``piano_gpt.tasks.sequence`` up to ``<GENAI>``:
``[<DATASET>, <COMPOSER>, <N_NOTES_k>] + task tokens + [<MUSIC_TIME_a>, <MUSIC_TIME_b>] + source +
<GENAI>``. The number of notes and the time span describe the target; by default they are taken
from the task's own target (the "oracle" values, as in training), or set with ``n_notes`` and
``time_span=(start_s, end_s)``.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from piano_gpt.generation.conditioning import GenerationError, prefix_ids
from piano_gpt.generation.engine import (
    Generation,
    GenerationConfig,
    _shift,
    as_notes,
    complete_samples,
    make_config,
)
from piano_gpt.tasks import get_task, sequence
from piano_gpt.tokenizers import GENAI_TOKEN, MidiTokenizer


def task_prompt(
    tokenizer: MidiTokenizer,
    notes,
    task,
    *,
    task_seed: int = 0,
    n_notes: int | None = None,
    time_span: tuple[float, float] | None = None,
    composer: str | None = None,
    dataset: str | None = None,
):
    """(prompt ids ending with ``<GENAI>``, the TaskSample, the Task) for ``notes`` (times from 0)."""
    try:
        task = get_task(task) if isinstance(task, str) else task
    except (KeyError, ValueError) as error:
        raise GenerationError(f"task={task!r}: {error}") from error
    sample = task.prepare(as_notes(notes), task_seed)
    n_notes = len(sample.target) if n_notes is None else int(n_notes)
    if time_span is None:
        span = sequence.music_time_tokens(sample.target)
    else:
        first, last = (float(t) for t in time_span)
        span = [sequence.music_time_token(math.floor(first)), sequence.music_time_token(math.ceil(last))]
    tokens = [sequence.n_notes_token(n_notes), *sample.prefix_tokens, *span]
    missing = [t for t in tokens if t not in tokenizer.token_to_id]
    if missing:
        raise GenerationError(
            f"this checkpoint's tokenizer lacks {missing[:4]}: the model was not trained on task {task.name!r}"
        )
    ids = prefix_ids(tokenizer, composer=composer, dataset=dataset) + tokenizer.ids_of(tokens)
    ids += list(tokenizer.encode(sample.source)) + tokenizer.ids_of([GENAI_TOKEN])
    return np.asarray(ids, dtype=np.int64), sample, task


def task_samples(
    model,
    tokenizer: MidiTokenizer,
    notes,
    task,
    config: GenerationConfig | None = None,
    *,
    task_seed: int = 0,
    n_notes: int | None = None,
    time_span: tuple[float, float] | None = None,
    composer: str | None = None,
    dataset: str | None = None,
    **options,
) -> list[Generation]:
    """Split ``notes`` with ``task`` (deterministic for ``task_seed``) and generate the target.

    Each Generation holds the generated target (``notes``), the source (``context``), the true target
    (``reference``) and ``combine`` (whether the generation is merged with the source, see
    ``piano_gpt.tasks.Task.combine``); times are those of the input notes.
    """
    config = make_config(config, **options)
    notes = as_notes(notes)
    offset = float(notes["start"].min()) if len(notes) else 0.0
    prompt, sample, task = task_prompt(
        tokenizer,
        _shift(notes, -offset),
        task,
        task_seed=task_seed,
        n_notes=n_notes,
        time_span=time_span,
        composer=composer,
        dataset=dataset,
    )
    generations = complete_samples(model, tokenizer, prompt, config, context=sample.source)
    settings = {
        "mode": "task",
        "task": task.name,
        "task_seed": task_seed,
        "n_notes": n_notes,
        "time_span": None if time_span is None else list(time_span),
        "composer": composer,
        "dataset": dataset,
    }
    return [
        replace(
            g,
            notes=_shift(g.notes, offset),
            context=_shift(sample.source, offset),
            reference=_shift(sample.target, offset),
            combine=bool(getattr(task, "combine", True)),
            settings={**g.settings, **settings},
        )
        for g in generations
    ]

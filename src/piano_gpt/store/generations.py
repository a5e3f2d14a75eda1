"""Saved generations: what ``generate store=true`` and the prompt-practice dashboard keep in the store,
and how a saved one is played back (the piece) or written out (MIDI, WAV).

A saved generation holds the notes the model produced (``notes``), what it was shown (the prompt: the
continued notes, or a task's source) on the same clock, the settings (``mode, task, temperature,
top_k, top_p, seed, ...``; ``combine: false`` for tasks whose output replaces the source, such as
denoising) and the checkpoint as its model (registered by directory name, see
``piano_gpt.registry.register_checkpoint_in_store``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from piano_gpt.audio import write_wav
from piano_gpt.midi import make_notes, write_notes
from piano_gpt.registry import checkpoint_info, register_checkpoint_in_store
from piano_gpt.store.api import GenerationStore, StoredGeneration

AUDIO_SUFFIXES = (".wav",)


def save_generations(
    store: GenerationStore,
    checkpoint_dir: str | os.PathLike,
    generations: Iterable[Mapping[str, Any]],
    prompt_title: str | None = None,
    prompt_source: Mapping[str, Any] | None = None,
) -> list[int]:
    """Save generations of one checkpoint; returns their ids.

    Each item: ``notes`` (generated), ``prompt`` (the notes the model was shown, or None),
    ``settings`` (mapping) and optionally ``metrics``. The checkpoint is registered as the model
    (its folder name), the prompt keeps ``prompt_title`` and ``prompt_source``."""
    name = checkpoint_info(checkpoint_dir).name
    register_checkpoint_in_store(store, checkpoint_dir, verify=False)
    rows = []
    for item in generations:
        prompt_notes = item.get("prompt")
        prompt = None
        if prompt_notes is not None or prompt_title is not None:
            prompt = {"title": prompt_title, "source": dict(prompt_source or {}), "notes": prompt_notes}
        settings = {k: v for k, v in dict(item["settings"]).items() if v is not None and k != "n_samples"}
        rows.append(
            {
                "model": name,
                "settings": settings,
                "notes": item["notes"],
                "prompt": prompt,
                "metrics": item.get("metrics"),
            }
        )
    return store.save_many(rows)


def generation_piece(saved: StoredGeneration, with_prompt: bool = True) -> pd.DataFrame:
    """What to play: the prompt and the generation as one table (only the generation when the task's
    output replaces its source, or ``with_prompt=False``)."""
    notes = saved.notes
    if with_prompt and saved.prompt is not None and saved.prompt.notes is not None:
        if saved.settings.get("combine", True):
            notes = pd.concat([saved.prompt.notes, notes], ignore_index=True)
    return make_notes(notes["pitch"], notes["velocity"], notes["start"], notes["end"])


def export_generation(saved: StoredGeneration, path: str | os.PathLike, with_prompt: bool = True) -> str:
    """Write a saved generation to ``path``: MIDI (settings in its metadata), or audio for ``*.wav``.
    Returns a one-line description of what was written."""
    path = Path(path)
    piece = generation_piece(saved, with_prompt)
    seconds = float(piece["end"].max()) if len(piece) else 0.0
    if path.suffix.lower() in AUDIO_SUFFIXES:
        renderer = write_wav(piece, path)
        return f"wrote {path}: {len(piece)} notes, {seconds:.1f} s of audio ({renderer})"
    metadata = {"generation_id": saved.id, "model": saved.model.name, **saved.settings}
    write_notes(piece, path, metadata={k: _text(v) for k, v in metadata.items() if v is not None})
    return f"wrote {path}: {len(piece)} notes, {seconds:.1f} s (generation {saved.id}, {saved.model.name})"


def _text(value) -> str:
    return ",".join(str(v) for v in value) if isinstance(value, list | tuple) else str(value)


def generation_items(generations) -> list[dict[str, Any]]:
    """:func:`save_generations` items of ``piano_gpt.generation.Generation`` objects."""
    items = []
    for generation in generations:
        settings = {**generation.settings, "seed": generation.seed}
        if not generation.combine:
            settings["combine"] = False
        items.append(
            {
                "notes": generation.notes,
                "prompt": generation.context,
                "settings": settings,
                "metrics": {"stop_reason": generation.stop_reason, "generated_tokens": generation.n_tokens},
            }
        )
    return items

"""What the Streamlit dashboards do, without Streamlit: testable functions the pages call.

- ``dashboards/prompt_practice.py``: :func:`list_checkpoints`, :func:`read_uploaded_midi`,
  :func:`edit_prompt`, :func:`run_generation` (``piano_gpt.generation``: a ``ContinuationStream``,
  followed as it grows, and ``task_samples``);
- ``dashboards/piano_dataset_review.py``: :func:`load_dataset_items`, :func:`items_table`,
  :func:`note_stats`, :func:`velocity_histogram`, :func:`token_table`, :func:`roundtrip_check`,
  :func:`task_split`;
- saved generations (``piano_gpt.store``): :func:`save_results` (prompt practice saves what it
  generates), :func:`open_store`, :func:`saved_table`, :func:`saved_parts`
  (``dashboards/saved_generations.py``).

Errors meant for the user are :class:`DashboardError` (a ``ValueError``) with a readable message.
"""

from __future__ import annotations

import functools
import json
import os
import re
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from piano_gpt.data.demo import DEMO_CORPUS_PATH
from piano_gpt.data.task_datasets import rebase
from piano_gpt.generation import ContinuationStream, task_samples
from piano_gpt.generation.conditioning import known_tokens
from piano_gpt.generation.streaming import notes_table
from piano_gpt.midi import (
    PIANO_PITCH_RANGE,
    MidiReadError,
    allowed_pitch_shifts,
    change_speed,
    make_notes,
    pitch_shift,
    score_to_notes,
)
from piano_gpt.registry import DEFAULT_ROOT as REGISTRY_ROOT
from piano_gpt.registry import CheckpointInfo, list_checkpoints  # noqa: F401 (the dashboard's API)
from piano_gpt.tasks import get_task, list_tasks

REPO_ROOT = Path(__file__).resolve().parents[2]
RUNS_ENV = "PIANO_GPT_RUNS"
DEFAULT_RUNS_ROOT = REGISTRY_ROOT  # what ``piano-gpt models`` lists: tmp/runs, tmp/demo, the hub downloads
MAESTRO_ENV = "PIANO_GPT_MAESTRO"
MAX_UPLOAD_BYTES = 5 * 1024 * 1024
MIDI_SUFFIXES = (".mid", ".midi")
DATASET_KINDS = ("demo", "maestro", "hf")
GENERATION_MODES = ("continuation", "task")

Progress = Callable[[float, str], None]
LIVE_REDRAW_SECONDS = 0.3  # how often the growing pianoroll is redrawn while a continuation streams


class DashboardError(ValueError):
    """A problem to show to the dashboard user as a message (bad upload, missing checkpoint...)."""


# --- uploads -------------------------------------------------------------------------------------


def display_name(name: str | None, limit: int = 80) -> str:
    """A file name safe to show (never used as a path): base name, printable characters only."""
    base = (name or "upload").replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = "".join(c for c in base if unicodedata.category(c)[0] not in ("C", "Z") or c == " ").strip()
    return (cleaned or "upload")[:limit]


def read_uploaded_midi(
    data: bytes, name: str | None = "upload.mid", max_bytes: int = MAX_UPLOAD_BYTES
) -> pd.DataFrame:
    """The note table of an uploaded MIDI file, parsed in memory (nothing is written to disk).

    Refuses (with :class:`DashboardError`) names not ending in .mid/.midi, empty or oversized data,
    data that is not a Standard MIDI File, malformed files and files without notes.
    """
    label = display_name(name)
    if not label.lower().endswith(MIDI_SUFFIXES):
        raise DashboardError(f"{label}: only MIDI files (.mid, .midi) can be uploaded")
    size = len(data or b"")
    if size == 0:
        raise DashboardError(f"{label}: the file is empty")
    if size > max_bytes:
        raise DashboardError(
            f"{label}: {size / 1e6:.1f} MB is over the {max_bytes / 1e6:.0f} MB upload limit"
        )
    if data[:4] != b"MThd" and data[:4] != b"RIFF":
        raise DashboardError(f"{label}: not a MIDI file (it does not start with a MIDI header)")
    import symusic

    try:
        score = symusic.Score.from_midi(bytes(data), ttype="second")
    except Exception as error:  # symusic raises RuntimeError/ValueError on malformed files
        raise DashboardError(f"{label}: malformed MIDI file ({error})") from error
    try:
        return score_to_notes(score, label)
    except MidiReadError as error:
        raise DashboardError(f"{label}: {error.problem}") from error


# --- checkpoints ---------------------------------------------------------------------------------


def default_runs_root() -> str:
    return os.environ.get(RUNS_ENV) or DEFAULT_RUNS_ROOT


def load_model(path: str | os.PathLike, device: str | None = None):
    """(model, tokenizer, config) of a checkpoint; :class:`DashboardError` when it cannot be loaded."""
    from piano_gpt.common import pick_device
    from piano_gpt.train.checkpoint import CheckpointError, find_checkpoint, load_checkpoint

    device = pick_device(device)
    try:
        return load_checkpoint(find_checkpoint(path), device=device)
    except (CheckpointError, OSError, ValueError, KeyError) as error:
        raise DashboardError(f"cannot load checkpoint {path}: {error}") from error


def composer_tokens(tokenizer) -> list[str]:
    """The composer tokens a tokenizer knows (``<COMPOSER_...>``), for the composer selector."""
    return known_tokens(tokenizer, "<COMPOSER_")


# --- datasets ------------------------------------------------------------------------------------


def default_maestro_path() -> str:
    return os.environ.get(MAESTRO_ENV) or str(REPO_ROOT.parent / "shared" / "data" / "maestro")


def demo_available() -> bool:
    return Path(DEMO_CORPUS_PATH).exists()


def default_dataset() -> tuple[str, str]:
    """(kind, path) the pages open with: the embedded demo corpus, else MAESTRO in shared/data."""
    if demo_available():
        return "demo", ""
    return "maestro", default_maestro_path()


def dataset_config(kind: str, path: str = "") -> dict:
    if kind not in DATASET_KINDS:
        raise DashboardError(f"unknown dataset type {kind!r}: use one of {', '.join(DATASET_KINDS)}")
    if kind == "demo":
        return {"type": "demo"}
    if not path.strip():
        raise DashboardError(f"give the {kind} dataset a path")
    if kind == "maestro":
        return {"type": "maestro", "path": path.strip()}
    return {"type": "hf", "base_datasets": [path.strip()]}


def load_dataset_items(kind: str, split: str, path: str = "") -> list:
    """Items of a dataset split (``piano_gpt.data.sources``); :class:`DashboardError` on failure.

    An ``hf`` path must exist locally: the dashboards never download datasets.
    """
    from piano_gpt.data.sources import dataset_items

    config = dataset_config(kind, path)
    if kind == "hf" and not Path(path.strip()).expanduser().exists():
        raise DashboardError(f"{path}: no such local dataset (dashboards read local copies only)")
    try:
        items = dataset_items(config, split)
    except (FileNotFoundError, ValueError, ImportError, OSError, KeyError) as error:
        raise DashboardError(f"cannot read the {kind} dataset: {error}") from error
    if not items:
        raise DashboardError(f"the {kind} dataset has no records in split {split!r}")
    return items


def item_metadata(item) -> dict:
    from piano_gpt.data.sources import item_source

    try:
        source = json.loads(item_source(item) or "{}")
    except ValueError:
        source = {}
    return source if isinstance(source, dict) else {}


def items_table(items: list) -> pd.DataFrame:
    """One row per item: index, composer, title, label (what the record selectors show)."""
    rows = []
    for index, item in enumerate(items):
        source = item_metadata(item)
        composer = str(source.get("composer") or "unknown")
        title = str(
            source.get("title") or source.get("midi_filename") or getattr(item, "label", f"record {index}")
        )
        rows.append(
            {"index": index, "composer": composer, "title": title, "label": f"{index}: {composer} - {title}"}
        )
    return pd.DataFrame(rows, columns=["index", "composer", "title", "label"])


def filter_items(table: pd.DataFrame, composer: str | None = None, query: str = "") -> pd.DataFrame:
    """Rows of :func:`items_table` by composer (None or "all": any) and a case-free title search."""
    if composer and composer != "all":
        table = table[table["composer"] == composer]
    if query.strip():
        table = table[table["title"].str.contains(query.strip(), case=False, regex=False)]
    return table


def load_item_notes(item) -> pd.DataFrame:
    from piano_gpt.data.sources import item_notes

    try:
        return item_notes(item)
    except (MidiReadError, OSError, KeyError, ValueError) as error:
        raise DashboardError(f"cannot read this record: {error}") from error


# --- prompt editing ------------------------------------------------------------------------------


def edit_prompt(
    notes: pd.DataFrame,
    first_note: int = 0,
    last_note: int | None = None,
    start_s: float | None = None,
    end_s: float | None = None,
    shift: int = 0,
    speed: float = 1.0,
) -> tuple[pd.DataFrame, list[str]]:
    """Cut, transpose and re-time a prompt; returns (notes starting at 0 s, messages for the user).

    The cut is by note index (``first_note`` to ``last_note``, exclusive) or, when ``start_s`` or
    ``end_s`` is given, by onset time in seconds. ``shift`` semitones are limited to what keeps
    every note on the piano; ``speed`` > 1 plays faster (``piano_gpt.midi.change_speed``).
    """
    messages = []
    if start_s is not None or end_s is not None:
        low = -np.inf if start_s is None else float(start_s)
        high = np.inf if end_s is None else float(end_s)
        notes = notes[(notes["start"] >= low) & (notes["start"] < high)]
    else:
        notes = notes.iloc[int(first_note) : None if last_note is None else int(last_note)]
    if len(notes) == 0:
        raise DashboardError("the prompt is empty: widen the note or time range")
    notes = rebase(notes)
    if shift:
        allowed = allowed_pitch_shifts(notes, abs(int(shift)))
        applied = int(np.clip(shift, allowed.min(), allowed.max()))
        if applied != shift:
            messages.append(f"pitch shift {shift:+d} would leave the piano range: shifted by {applied:+d}")
        notes = pitch_shift(notes, applied)
    notes = notes[(notes["pitch"] >= PIANO_PITCH_RANGE[0]) & (notes["pitch"] <= PIANO_PITCH_RANGE[1])]
    if speed <= 0:
        raise DashboardError(f"speed must be positive, got {speed}")
    if speed != 1.0:
        notes = change_speed(notes, float(speed))
    return make_notes(notes["pitch"], notes["velocity"], notes["start"], notes["end"]), messages


# --- generation ----------------------------------------------------------------------------------


@dataclass
class GenerationSettings:
    mode: str = "continuation"  # or "task"
    task: str | None = None
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seeds: tuple[int, ...] = (0,)
    max_new_tokens: int = 256
    composer: str | None = None  # a composer token, e.g. "<COMPOSER_JOHANN_SEBASTIAN_BACH>"
    task_seed: int = 0  # the task's source/target split: the same for every sampling seed


@dataclass
class GenerationResult:
    seed: int
    notes: pd.DataFrame  # the generated notes, on the prompt's clock
    prompt: pd.DataFrame  # what the model was shown (the prompt, or the task's source)
    target: pd.DataFrame | None = None  # the task's target (ground truth), in task mode
    n_tokens: int = 0
    stop_reason: str = ""

    def parts(self) -> dict[str, pd.DataFrame]:
        parts = {"prompt" if self.target is None else "source": self.prompt}
        if self.target is not None:
            parts["target"] = self.target
        parts["generation"] = self.notes
        return parts

    def combined(self) -> pd.DataFrame:
        """Prompt (or source) and generation as one table: what the audio player plays."""
        both = pd.concat([self.prompt, self.notes], ignore_index=True)
        return make_notes(both["pitch"], both["velocity"], both["start"], both["end"])


def available_tasks() -> tuple[list[str], str | None]:
    """(task names, None): the tuple of :func:`tasks_for`, for pages without a checkpoint."""
    return list(list_tasks()), None


def tasks_for(tokenizer) -> tuple[list[str], str | None]:
    """(tasks a checkpoint can do, None) or ([], why none): a model knows a task only if its
    tokenizer holds the task's tokens (it was trained on it)."""
    known = tokenizer.token_to_id
    usable = [name for name in list_tasks() if all(token in known for token in get_task(name).prefix_tokens)]
    if not usable:
        return [], "this checkpoint was not trained on PIANO tasks (its tokenizer has no task tokens)"
    return usable, None


def task_split(name: str, notes: pd.DataFrame, seed: int = 0):
    """``piano_gpt.tasks.get_task(name).prepare(notes, seed)`` (a TaskSample)."""
    try:
        return get_task(name).prepare(notes, seed=seed)
    except (KeyError, ValueError) as error:
        raise DashboardError(f"task {name}: {error}") from error


def _options(settings: GenerationSettings, seed: int) -> dict:
    """The ``piano_gpt.generation`` options of one seed (top-k 0 or None and top-p None: off)."""
    return {
        "n_samples": 1,
        "seed": seed,
        "temperature": settings.temperature,
        "top_k": settings.top_k or None,
        "top_p": 1.0 if settings.top_p is None else settings.top_p,
        "max_new_tokens": int(settings.max_new_tokens),
        "composer": settings.composer,
    }


def generate_one(
    model,
    tokenizer,
    prompt,
    settings: GenerationSettings,
    seed: int,
    on_notes: Callable[[pd.DataFrame], None] | None = None,
    redraw_seconds: float = LIVE_REDRAW_SECONDS,
) -> GenerationResult:
    """One seed's :class:`GenerationResult` (a continuation stream or ``task_samples``). A
    continuation calls ``on_notes`` with the notes so far as they come (at most every
    ``redraw_seconds``, and once at the end)."""
    options = _options(settings, seed)
    try:
        if settings.mode == "continuation":
            continuation = ContinuationStream(model, tokenizer, prompt, **options)
            so_far, shown = [], time.monotonic()
            for streamed in continuation:
                so_far += streamed.rows
                if on_notes is not None and time.monotonic() - shown >= redraw_seconds:
                    on_notes(notes_table(so_far))
                    shown = time.monotonic()
            (generation,) = continuation.generations()
            if on_notes is not None:
                on_notes(generation.notes)
            return GenerationResult(
                seed, generation.notes, prompt, None, len(generation.ids), generation.stop_reason
            )
        usable, why_not = tasks_for(tokenizer)
        if settings.task not in usable:
            raise DashboardError(
                f"this checkpoint cannot do task {settings.task}: {why_not or 'its tokenizer lacks the task tokens'}"
            )
        (generation,) = task_samples(
            model, tokenizer, prompt, settings.task, task_seed=settings.task_seed, **options
        )
        return GenerationResult(
            seed,
            generation.notes,
            generation.context,
            generation.reference,
            len(generation.ids),
            generation.stop_reason,
        )
    except DashboardError:
        raise
    except (ValueError, KeyError) as error:  # GenerationError is a ValueError: what to change, in words
        raise DashboardError(f"generation failed: {error}") from error


def run_generation(
    model,
    tokenizer,
    prompt: pd.DataFrame,
    settings: GenerationSettings,
    progress: Progress | None = None,
    on_notes: Callable[[int, pd.DataFrame], None] | None = None,
    redraw_seconds: float = LIVE_REDRAW_SECONDS,
) -> list[GenerationResult]:
    """One :class:`GenerationResult` per seed of ``settings`` (continuation or PIANO task mode);
    ``on_notes(seed, notes so far)`` follows a continuation as it grows (see :func:`generate_one`)."""
    if settings.mode not in GENERATION_MODES:
        raise DashboardError(f"unknown mode {settings.mode!r}: use {' or '.join(GENERATION_MODES)}")
    if settings.mode == "task" and not settings.task:
        raise DashboardError("task mode needs a task")
    if len(prompt) == 0:
        raise DashboardError("the prompt has no notes")
    if not settings.seeds:
        raise DashboardError("give at least one seed")
    results = []
    n = len(settings.seeds)
    for index, seed in enumerate(settings.seeds):

        def report(fraction: float, text: str, index=index, seed=seed) -> None:
            if progress is not None:
                progress((index + min(max(fraction, 0.0), 1.0)) / n, f"seed {seed}: {text}")

        report(0.0, "generating")
        live = None if on_notes is None else functools.partial(on_notes, int(seed))
        result = generate_one(model, tokenizer, prompt, settings, int(seed), live, redraw_seconds)
        results.append(result)
        report(1.0, f"{len(result.notes)} notes")
    return results


def parse_seeds(text: str, limit: int = 8) -> tuple[int, ...]:
    """Seeds from "0, 1, 2" or "0-3"; at most ``limit``; :class:`DashboardError` on bad input."""
    seeds: list[int] = []
    for chunk in text.replace(";", ",").split(","):
        chunk = chunk.strip()
        if not chunk:
            continue
        span = re.fullmatch(r"(\d+)\s*-\s*(\d+)", chunk)
        if span:
            low, high = int(span.group(1)), int(span.group(2))
            if high - low >= limit:
                raise DashboardError(f"at most {limit} seeds at once (got the range {chunk})")
            seeds.extend(range(low, high + 1))
        elif re.fullmatch(r"-?\d+", chunk):
            seeds.append(int(chunk))
        else:
            raise DashboardError(f"seeds: {chunk!r} is not a number or a range like 0-3")
    if not seeds:
        raise DashboardError("give at least one seed, e.g. 0, 1, 2")
    unique = list(dict.fromkeys(seeds))
    if len(unique) > limit:
        raise DashboardError(f"at most {limit} seeds at once (got {len(unique)})")
    return tuple(unique)


# --- saved generations ---------------------------------------------------------------------------


def open_store(database_url: str | None = None):
    """The generation store (``piano_gpt.store.open_store``; default URL: ``$PIANO_GPT_DATABASE_URL``,
    else the SQLite file tmp/piano_gpt.sqlite); :class:`DashboardError` when it cannot be opened."""
    from piano_gpt import store

    try:
        return store.open_store(database_url or None)
    except store.StoreOpenError as error:
        raise DashboardError(str(error)) from error


def result_items(results: list[GenerationResult], settings: GenerationSettings) -> list[dict]:
    """``piano_gpt.store.generations.save_generations`` items of the prompt-practice results."""
    common = {
        "mode": settings.mode,
        "temperature": settings.temperature,
        "top_k": settings.top_k or None,
        "top_p": settings.top_p,
        "max_new_tokens": settings.max_new_tokens,
        "composer": settings.composer,
    }
    if settings.mode == "task":
        common.update(task=settings.task, task_seed=settings.task_seed)
    return [
        {
            "notes": result.notes,
            "prompt": result.prompt,
            "settings": {**common, "seed": result.seed},
            "metrics": {"stop_reason": result.stop_reason, "generated_tokens": result.n_tokens},
        }
        for result in results
    ]


def save_results(
    checkpoint_dir: str | os.PathLike,
    settings: GenerationSettings,
    results: list[GenerationResult],
    prompt_title: str | None = None,
    database_url: str | None = None,
) -> str:
    """Save the results of one click in the generation store; returns a caption saying where."""
    from sqlalchemy.exc import SQLAlchemyError

    from piano_gpt.store.generations import save_generations

    source = {"dashboard": "prompt_practice"}
    with open_store(database_url) as store:
        try:
            ids = save_generations(
                store, checkpoint_dir, result_items(results, settings), prompt_title, source
            )
        except (SQLAlchemyError, ValueError) as error:
            raise DashboardError(f"could not save the generations: {error}") from error
        where = store.url.render_as_string(hide_password=True)
    return f"saved as generation {', '.join(map(str, ids))} in {where} (browse: piano-gpt dashboard saved_generations)"


def saved_table(rows) -> pd.DataFrame:
    """The browse table of ``GenerationStore.browse`` rows, with a label per row for the selector."""
    table = pd.DataFrame(
        {
            "id": [row.id for row in rows],
            "saved (UTC)": [row.created_at.strftime("%Y-%m-%d %H:%M") for row in rows],
            "model": [row.model_name for row in rows],
            "mode": [row.mode or "" for row in rows],
            "task": [row.task or "" for row in rows],
            "prompt": [row.title or "" for row in rows],
            "notes": [row.note_count for row in rows],
            "seconds": [round(float(row.duration), 1) for row in rows],
        }
    )
    table["label"] = [
        f"{row.id}: {row.model_name}, {row.title or 'no prompt'}, {row.note_count} notes" for row in rows
    ]
    return table


def saved_parts(saved) -> dict[str, pd.DataFrame]:
    """The parts of a saved generation for a pianoroll: prompt (or a task's source) and generation."""
    parts = {}
    if saved.prompt is not None and saved.prompt.notes is not None and len(saved.prompt.notes):
        parts["source" if saved.settings.get("task") else "prompt"] = saved.prompt.notes
    parts["generation"] = saved.notes
    return parts


# --- dataset review ------------------------------------------------------------------------------


def note_stats(notes: pd.DataFrame) -> dict:
    """Counts and ranges of a note table (for the review page's metrics)."""
    if len(notes) == 0:
        return {"notes": 0, "duration_s": 0.0, "pitch_min": None, "pitch_max": None, "velocity_mean": None}
    duration = float(notes["end"].max() - notes["start"].min())
    return {
        "notes": int(len(notes)),
        "duration_s": round(duration, 3),
        "notes_per_s": round(len(notes) / duration, 2) if duration > 0 else None,
        "pitch_min": int(notes["pitch"].min()),
        "pitch_max": int(notes["pitch"].max()),
        "velocity_mean": round(float(notes["velocity"].mean()), 1),
        "velocity_std": round(float(notes["velocity"].std(ddof=0)), 1),
        "mean_note_s": round(float((notes["end"] - notes["start"]).mean()), 3),
    }


def velocity_histogram(notes: pd.DataFrame, bins: int = 16) -> pd.DataFrame:
    """Notes per velocity bin over 0..127: columns ``low, high, label, count``."""
    edges = np.linspace(0, 128, bins + 1)
    counts, _ = np.histogram(notes["velocity"].to_numpy(), bins=edges)
    low, high = edges[:-1].astype(int), edges[1:].astype(int) - 1
    return pd.DataFrame(
        {"low": low, "high": high, "label": [f"{a:03d}-{b:03d}" for a, b in zip(low, high)], "count": counts}
    )


def token_table(tokenizer, notes: pd.DataFrame, limit: int | None = 2000) -> tuple[pd.DataFrame, int]:
    """(first ``limit`` tokens as rows ``position, id, token, time_s``, total number of tokens)."""
    ids = np.asarray(tokenizer.encode(notes), dtype=np.int64)
    shown = ids if limit is None else ids[:limit]
    times = np.cumsum(tokenizer.token_time_units()[shown]) * tokenizer.time_unit
    table = pd.DataFrame(
        {
            "position": np.arange(len(shown)),
            "id": shown,
            "token": tokenizer.decode_tokens(shown),
            "time_s": times.round(4),
        }
    )
    return table, len(ids)


@dataclass
class RoundTrip:
    n_notes: int
    n_decoded: int
    n_tokens: int
    pitches_equal: bool  # the multiset of pitches survives encode -> decode
    max_onset_error_s: float | None  # over notes matched by (pitch, order); None when counts differ
    max_offset_error_s: float | None
    max_velocity_error: int | None
    time_unit_s: float

    @property
    def ok(self) -> bool:
        """Pitches kept and every onset within half a time unit (the tokenizer's rounding)."""
        return (
            self.pitches_equal
            and self.max_onset_error_s is not None
            and self.max_onset_error_s <= self.time_unit_s / 2 + 1e-6
        )


def roundtrip_check(tokenizer, notes: pd.DataFrame) -> RoundTrip:
    """Encode then decode ``notes`` and measure what changed (the detokenization check).

    Notes outside the tokenizer's pitch range are not expected back; notes are matched by pitch and
    then by order of onset within a pitch.
    """
    ids = tokenizer.encode(notes)
    decoded = tokenizer.decode(ids)
    inside = notes[(notes["pitch"] >= PIANO_PITCH_RANGE[0]) & (notes["pitch"] <= PIANO_PITCH_RANGE[1])]
    original = inside.sort_values(["pitch", "start"], kind="stable").reset_index(drop=True)
    back = decoded.sort_values(["pitch", "start"], kind="stable").reset_index(drop=True)
    pitches_equal = len(original) == len(back) and bool(
        (original["pitch"].to_numpy() == back["pitch"].to_numpy()).all()
    )
    onset = offset = velocity = None
    if pitches_equal and len(original):
        onset = float(np.abs(original["start"].to_numpy() - back["start"].to_numpy()).max())
        offset = float(np.abs(original["end"].to_numpy() - back["end"].to_numpy()).max())
        velocity = int(np.abs(original["velocity"].to_numpy() - back["velocity"].to_numpy()).max())
    elif pitches_equal:
        onset = offset = 0.0
        velocity = 0
    return RoundTrip(
        len(inside), len(decoded), len(ids), pitches_equal, onset, offset, velocity, tokenizer.time_unit
    )


__all__ = [
    "DATASET_KINDS",
    "MAX_UPLOAD_BYTES",
    "CheckpointInfo",
    "DashboardError",
    "GenerationResult",
    "GenerationSettings",
    "RoundTrip",
    "available_tasks",
    "default_dataset",
    "edit_prompt",
    "filter_items",
    "items_table",
    "list_checkpoints",
    "load_dataset_items",
    "load_model",
    "note_stats",
    "open_store",
    "parse_seeds",
    "read_uploaded_midi",
    "roundtrip_check",
    "run_generation",
    "save_results",
    "saved_parts",
    "saved_table",
    "task_split",
    "token_table",
    "velocity_histogram",
]

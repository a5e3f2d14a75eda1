"""Plausibility of generated continuations, measured against the real continuation of the same piece.

Only note tables go in (pandas DataFrames with columns ``pitch, velocity, start, end``, seconds); plain
dicts of floats come out. Nothing here knows about models, tokenizers or configs.

* :func:`continuation_stats` -- descriptive statistics of one continuation (note count, onset rate,
  note durations, polyphony, velocity, pitch).
* :func:`compare_continuations` -- the same statistics pooled over K generated and K real
  continuations, plus distances between the two pools.
* :func:`format_markdown` -- the comparison as a human-readable Markdown table.
* :func:`plausibility_checks` -- pass / fail of the targets (no excess of long notes, no excess of
  polyphony, no note longer than a limit).

Definitions (shared by the single-table and the pooled statistics)
------------------------------------------------------------------
* Note duration = ``end - start``, negatives counted as 0. ``long_2s`` / ``long_4s`` = fraction of notes
  lasting strictly more than 2 s / 4 s (durations are rounded to 1e-9 s first, so that float noise does
  not turn a 2 s note into a long one).
* Span of a table = ``max(end) - min(start)`` over its notes. The onset rate ``notes_per_second`` is
  ``n_notes / seconds`` where ``seconds`` is the ``duration`` passed by the caller, else the span.
* Polyphony = number of notes sounding at time t, a note sounding on ``[start, end)`` (zero-length
  notes never sound; a note ending when another starts does not overlap it). It is a step function,
  computed exactly from the start / end events, and its distribution is time-weighted over the span of
  the sounding notes (silent gaps inside the span count as polyphony 0). ``polyphony_median`` and
  ``polyphony_p95`` are the lower time-weighted quantiles: the smallest count c such that the
  polyphony is <= c during at least 50 % / 95 % of the time. ``polyphony_max`` is the largest count held
  for a positive time.
* Velocity and pitch: mean and population standard deviation (ddof=0) over notes.

Empty / degenerate conventions (no value is ever NaN or infinite)
-----------------------------------------------------------------
* A table without notes: every statistic is 0 (``n_notes`` 0, rates 0, durations 0, polyphony 0,
  velocity and pitch mean / std 0).
* A span or total duration of 0 seconds: ``notes_per_second`` is 0.
* No sounding note (all zero-length): polyphony statistics are 0.
* Distances when exactly one pool is empty: see :func:`compare_continuations`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import wasserstein_distance

from piano_gpt.evaluation.metrics import histogram_bin_centres, histogram_distances, note_histogram
from piano_gpt.generation import generate_samples, make_config
from piano_gpt.generation.grammar import open_notes
from piano_gpt.midi import make_notes

__all__ = [
    "LONG_NOTE_SECONDS",
    "STAT_KEYS",
    "compare_continuations",
    "continuation_stats",
    "format_markdown",
    "plausibility_checks",
]

# Thresholds of the long-note fractions: key -> seconds (a note counts when strictly longer).
LONG_NOTE_SECONDS: dict[str, float] = {"long_2s": 2.0, "long_4s": 4.0}

# Keys of every statistics dict, in display order (``open_notes`` is added only when the caller gives it).
STAT_KEYS: tuple[str, ...] = (
    "n_notes",
    "seconds",
    "notes_per_second",
    "duration_mean",
    "duration_median",
    "long_2s",
    "long_4s",
    "longest",
    "polyphony_median",
    "polyphony_p95",
    "polyphony_max",
    "velocity_mean",
    "velocity_std",
    "pitch_mean",
    "pitch_std",
)

# Plausibility targets (see plausibility_checks).
LONG_2S_FACTOR = 1.5
POLYPHONY_P95_MARGIN = 2.0
_TOLERANCE = 1e-9


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def _arrays(notes: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    missing = {"pitch", "velocity", "start", "end"} - set(notes.columns)
    if missing:
        raise KeyError(f"note table lacks columns {sorted(missing)}")
    return (
        notes["pitch"].to_numpy(dtype=np.float64),
        notes["velocity"].to_numpy(dtype=np.float64),
        notes["start"].to_numpy(dtype=np.float64),
        notes["end"].to_numpy(dtype=np.float64),
    )


def _durations(notes: pd.DataFrame) -> np.ndarray:
    _, _, start, end = _arrays(notes)
    return np.round(np.clip(end - start, 0.0, None), 9)


def _span(notes: pd.DataFrame) -> float:
    if len(notes) == 0:
        return 0.0
    _, _, start, end = _arrays(notes)
    return float(max(np.max(np.maximum(end, start)) - np.min(start), 0.0))


def _polyphony_steps(notes: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(counts, seconds): the polyphony step function of a table over the span of its sounding notes.

    Segment i lies between two consecutive distinct event times and holds ``counts[i]`` notes for
    ``seconds[i]`` seconds. Events at the same time are applied together, so touching notes do not
    overlap. Empty when no note has a positive duration.
    """
    _, _, start, end = _arrays(notes)
    sounding = end > start
    start, end = start[sounding], end[sounding]
    if len(start) == 0:
        return np.zeros(0, np.int64), np.zeros(0)
    times, index = np.unique(np.concatenate([start, end]), return_inverse=True)
    deltas = np.concatenate([np.ones(len(start)), -np.ones(len(end))])
    change = np.bincount(index, weights=deltas, minlength=len(times))
    counts = np.rint(np.cumsum(change)[:-1]).astype(np.int64)
    return counts, np.diff(times)


def _weighted_lower_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """Smallest value v with (weight of values <= v) >= q * total weight; 0 when the total weight is 0."""
    total = float(weights.sum())
    if len(values) == 0 or total <= 0:
        return 0.0
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(weights[order]) / total
    position = int(np.searchsorted(cumulative, q - 1e-12, side="left"))
    return float(values[order][min(position, len(values) - 1)])


def _mean_std(values: np.ndarray) -> tuple[float, float]:
    if len(values) == 0:
        return 0.0, 0.0
    return float(np.mean(values)), float(np.std(values))


def _check_finite(values: Mapping[str, float], what: str) -> None:
    bad = [name for name, value in values.items() if not math.isfinite(float(value))]
    if bad:
        raise RuntimeError(f"non-finite {what} values (a bug): {bad}")


def _pooled_stats(
    tables: Sequence[pd.DataFrame],
    durations: Sequence[float | None] | None,
    open_notes: Sequence[int] | None,
) -> dict[str, float]:
    """Statistics of several continuations pooled together (one table: the table's own statistics)."""
    if durations is not None and len(durations) != len(tables):
        raise ValueError(f"{len(durations)} durations for {len(tables)} note tables")
    if open_notes is not None and len(open_notes) != len(tables):
        raise ValueError(f"{len(open_notes)} open_notes values for {len(tables)} note tables")
    n_notes = sum(len(table) for table in tables)
    seconds = 0.0
    for i, table in enumerate(tables):
        given = None if durations is None else durations[i]
        if given is not None and (not math.isfinite(float(given)) or float(given) < 0):
            raise ValueError(f"duration must be a finite non-negative number, got {given!r}")
        seconds += _span(table) if given is None else float(given)

    note_durations = np.concatenate([_durations(table) for table in tables]) if tables else np.zeros(0)
    steps = [_polyphony_steps(table) for table in tables]
    counts = np.concatenate([c for c, _ in steps]) if steps else np.zeros(0, np.int64)
    weights = np.concatenate([w for _, w in steps]) if steps else np.zeros(0)
    held = counts[weights > 0]
    pitch = np.concatenate([_arrays(t)[0] for t in tables]) if tables else np.zeros(0)
    velocity = np.concatenate([_arrays(t)[1] for t in tables]) if tables else np.zeros(0)

    stats: dict[str, float] = {"n_notes": int(n_notes), "seconds": float(seconds)}
    stats["notes_per_second"] = float(n_notes / seconds) if seconds > 0 else 0.0
    if len(note_durations):
        stats["duration_mean"] = float(np.mean(note_durations))
        stats["duration_median"] = float(np.median(note_durations))
        for key, threshold in LONG_NOTE_SECONDS.items():
            stats[key] = float(np.mean(note_durations > threshold))
        stats["longest"] = float(np.max(note_durations))
    else:
        stats.update(dict.fromkeys(["duration_mean", "duration_median", *LONG_NOTE_SECONDS, "longest"], 0.0))
    stats["polyphony_median"] = _weighted_lower_quantile(counts, weights, 0.5)
    stats["polyphony_p95"] = _weighted_lower_quantile(counts, weights, 0.95)
    stats["polyphony_max"] = float(held.max()) if len(held) else 0.0
    stats["velocity_mean"], stats["velocity_std"] = _mean_std(velocity)
    stats["pitch_mean"], stats["pitch_std"] = _mean_std(pitch)
    if open_notes is not None:
        stats["open_notes"] = int(sum(int(n) for n in open_notes))
    _check_finite(stats, "statistic")
    return stats


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------


def continuation_stats(
    notes: pd.DataFrame, duration: float | None = None, open_notes: int | None = None
) -> dict[str, float]:
    """Descriptive statistics of one continuation (a note table).

    ``duration``: the length in seconds of the continuation window (the onset rate is computed over it);
    ``None`` uses the span of the notes (first start to last end). ``open_notes``: how many notes were
    still sounding when generation stopped (known only to the caller); passed through when given.

    Keys (see the module docstring for the exact definitions and the empty conventions):

    * ``n_notes`` (int), ``seconds`` (the duration used for the rate), ``notes_per_second``;
    * ``duration_mean``, ``duration_median``, ``longest`` (seconds); ``long_2s``, ``long_4s`` (fractions
      of notes longer than 2 s / 4 s, in [0, 1]);
    * ``polyphony_median``, ``polyphony_p95``, ``polyphony_max`` (notes sounding at once, time-weighted);
    * ``velocity_mean``, ``velocity_std``, ``pitch_mean``, ``pitch_std``;
    * ``open_notes`` (int), only when given.
    """
    return _pooled_stats([notes], [duration], None if open_notes is None else [int(open_notes)])


def _long_2s_ratio(generated: Mapping[str, float], real: Mapping[str, float]) -> float:
    """long_2s(generated) / long_2s(real); when the real fraction is 0 it is replaced by the fraction
    one long note would make (1 / n_real_notes, or 1 without real notes), so the ratio stays finite:
    0 when neither pool has long notes."""
    denominator = real["long_2s"]
    if denominator <= 0:
        denominator = 1.0 / max(int(real["n_notes"]), 1)
    return float(generated["long_2s"] / denominator)


def _raw_wasserstein(a: np.ndarray, b: np.ndarray) -> float:
    """scipy's 1-D Wasserstein distance of two samples; both empty -> 0; exactly one empty -> the mean
    absolute value of the other (its distance to a point mass at 0)."""
    if len(a) == 0 or len(b) == 0:
        other = a if len(a) else b
        return float(np.mean(np.abs(other))) if len(other) else 0.0
    return float(wasserstein_distance(a, b))


def compare_continuations(
    generated: Sequence[pd.DataFrame],
    real: Sequence[pd.DataFrame],
    generated_durations: Sequence[float | None] | None = None,
    real_durations: Sequence[float | None] | None = None,
    generated_open_notes: Sequence[int] | None = None,
    real_open_notes: Sequence[int] | None = None,
) -> dict:
    """Compare K generated continuations with the K real continuations of the same pieces.

    ``generated[k]`` and ``real[k]`` continue the same prompt. ``*_durations``: per-piece window lengths
    in seconds for the onset rate (``None``, or a ``None`` entry: the span of that table).
    ``*_open_notes``: per-piece counts of notes still sounding when the continuation stopped.

    Returns a JSON-serialisable dict::

        {"generated": stats, "real": stats, "distance": {...}, "n_pairs": K}

    ``generated`` / ``real``: the keys of :func:`continuation_stats`, pooled over the K tables: counts
    and ``seconds`` are totals, ``notes_per_second`` = total notes / total seconds, duration / velocity /
    pitch statistics are over all notes of all pieces together, polyphony quantiles are time-weighted
    over the concatenated time of all pieces (a long piece weighs more), ``polyphony_max`` is the max
    over pieces, ``open_notes`` (when given) is the total.

    ``distance`` (lower is closer, except the ratio which is best at 1):

    * ``duration_wasserstein``: Wasserstein distance (seconds) between the RAW pooled note durations
      (``scipy.stats.wasserstein_distance``). This is the primary duration distance: it is not clipped,
      so a generated 30 s note counts as 30 s. Exactly one pool empty: the mean duration of the other.
    * ``duration_hist_wasserstein``: the same over the PIANO metrics' duration histogram
      (``metrics.note_histogram(..., "duration")``, 50 ms bins, durations >= 5 s clipped into the last
      bin), comparable with ``duration_hist/wasserstein`` of the PIANO metrics but blind beyond 5 s.
    * ``velocity_wasserstein``, ``pitch_wasserstein``: Wasserstein distance over the metrics'
      velocity / pitch histograms (one bin per MIDI value, so equal to the raw distance for in-range
      values) via ``metrics.histogram_distances``. Exactly one pool empty: the bin range (127 / 87).
    * ``polyphony_p95_difference``: polyphony_p95(generated) - polyphony_p95(real).
    * ``long_2s_ratio``: long_2s(generated) / long_2s(real) (finite when the real fraction is 0, see
      ``_long_2s_ratio``: the real fraction is then taken as 1 / n_real_notes).

    Both pools empty: every distance 0 and the ratio 0.
    """
    generated, real = list(generated), list(real)
    if len(generated) != len(real):
        raise ValueError(f"{len(generated)} generated continuations for {len(real)} real ones")
    gen_stats = _pooled_stats(generated, generated_durations, generated_open_notes)
    real_stats = _pooled_stats(real, real_durations, real_open_notes)

    def pooled_durations(tables: list[pd.DataFrame]) -> np.ndarray:
        return np.concatenate([_durations(t) for t in tables]) if tables else np.zeros(0)

    def pooled_histogram(tables: list[pd.DataFrame], feature: str) -> np.ndarray:
        total = np.zeros(len(histogram_bin_centres(feature)))
        for table in tables:
            total += note_histogram(table, feature)
        return total

    distance: dict[str, float] = {
        "duration_wasserstein": _raw_wasserstein(pooled_durations(generated), pooled_durations(real))
    }
    for feature, key in (
        ("duration", "duration_hist_wasserstein"),
        ("velocity", "velocity_wasserstein"),
        ("pitch", "pitch_wasserstein"),
    ):
        distance[key] = histogram_distances(
            pooled_histogram(generated, feature),
            pooled_histogram(real, feature),
            histogram_bin_centres(feature),
        )["wasserstein"]
    distance["polyphony_p95_difference"] = float(gen_stats["polyphony_p95"] - real_stats["polyphony_p95"])
    distance["long_2s_ratio"] = _long_2s_ratio(gen_stats, real_stats)
    _check_finite(distance, "distance")
    return {"generated": gen_stats, "real": real_stats, "distance": distance, "n_pairs": len(generated)}


def plausibility_checks(result: Mapping, max_note_seconds: float | None = None) -> dict[str, bool]:
    """Pass / fail of the plausibility targets on a :func:`compare_continuations` result.

    * ``long_2s``: long_2s(generated) <= 1.5 * long_2s(real) (so with no long real note, no long
      generated note is allowed);
    * ``polyphony_p95``: polyphony_p95(generated) <= polyphony_p95(real) + 2;
    * ``longest_note``: longest generated note <= ``max_note_seconds`` (key present only when
      ``max_note_seconds`` is given);
    * ``all``: every check above passes.

    Comparisons allow 1e-9 of float noise. The checks look for excess (washes of long, overlapping
    notes); an empty generation passes them all.
    """
    gen, real = result["generated"], result["real"]
    checks = {
        "long_2s": bool(gen["long_2s"] <= LONG_2S_FACTOR * real["long_2s"] + _TOLERANCE),
        "polyphony_p95": bool(
            gen["polyphony_p95"] <= real["polyphony_p95"] + POLYPHONY_P95_MARGIN + _TOLERANCE
        ),
    }
    if max_note_seconds is not None:
        checks["longest_note"] = bool(gen["longest"] <= float(max_note_seconds) + _TOLERANCE)
    checks["all"] = all(checks.values())
    return checks


# --------------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------------

# stat key -> (label, kind of value, comparison): kind "int" | "pct" | "sec" | "num";
# comparison "ratio" (generated / real) or "diff" (generated - real).
_ROWS: dict[str, tuple[str, str, str]] = {
    "n_notes": ("notes", "int", "ratio"),
    "seconds": ("seconds", "sec", "ratio"),
    "notes_per_second": ("notes per second", "num", "ratio"),
    "duration_mean": ("note duration, mean", "sec", "ratio"),
    "duration_median": ("note duration, median", "sec", "ratio"),
    "long_2s": ("notes longer than 2 s", "pct", "ratio"),
    "long_4s": ("notes longer than 4 s", "pct", "ratio"),
    "longest": ("longest note", "sec", "ratio"),
    "polyphony_median": ("polyphony, median", "num", "diff"),
    "polyphony_p95": ("polyphony, 95th percentile", "num", "diff"),
    "polyphony_max": ("polyphony, max", "num", "diff"),
    "velocity_mean": ("velocity, mean", "num", "diff"),
    "velocity_std": ("velocity, std", "num", "diff"),
    "pitch_mean": ("pitch, mean", "num", "diff"),
    "pitch_std": ("pitch, std", "num", "diff"),
    "open_notes": ("notes open at the end", "int", "diff"),
}

_DISTANCE_LABELS: dict[str, str] = {
    "duration_wasserstein": "Wasserstein, note durations (raw, s)",
    "duration_hist_wasserstein": "Wasserstein, note durations (histogram, clipped at 5 s)",
    "velocity_wasserstein": "Wasserstein, velocity",
    "pitch_wasserstein": "Wasserstein, pitch (semitones)",
    "polyphony_p95_difference": "polyphony p95, generated - real",
    "long_2s_ratio": "notes longer than 2 s, generated / real",
}


def _format_value(value: float | None, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "int":
        return f"{int(value)}"
    if kind == "pct":
        return f"{100 * value:.1f} %"
    if kind == "sec":
        return f"{value:.3f} s"
    return f"{value:.2f}"


def _format_comparison(gen: float | None, real: float | None, comparison: str, kind: str) -> str:
    if gen is None or real is None:
        return "-"
    if comparison == "diff":
        scale = 100 if kind == "pct" else 1
        return f"{scale * (gen - real):+.2f}"
    if real == 0:
        return "x1.00" if gen == 0 else "-"
    return f"x{gen / real:.2f}"


def format_markdown(result: Mapping) -> str:
    """A :func:`compare_continuations` result as Markdown: a table of the statistics (rows) with
    columns generated | real | comparison (``xR`` = generated / real, ``+D`` = generated - real; ``-``
    where undefined, e.g. a ratio against 0), then a table of the distances."""
    gen, real = result["generated"], result["real"]
    lines = [
        f"Continuations compared: {int(result['n_pairs'])} pairs",
        "",
        "| measure | generated | real | generated vs real |",
        "|---|---:|---:|---:|",
    ]
    for key, (label, kind, comparison) in _ROWS.items():
        g, r = gen.get(key), real.get(key)
        if g is None and r is None:
            continue
        lines.append(
            f"| {label} | {_format_value(g, kind)} | {_format_value(r, kind)} | "
            f"{_format_comparison(g, r, comparison, kind)} |"
        )
    lines += ["", "| distance | value |", "|---|---:|"]
    for key, value in result["distance"].items():
        lines.append(f"| {_DISTANCE_LABELS.get(key, key)} | {value:.3f} |")
    return "\n".join(lines) + "\n"


# --- continuations of real prompts ------------------------------------------------------------------


@dataclass
class ContinuationPrompt:
    """The first notes of a piece and what the performer played next (cut at ``seconds``)."""

    label: str
    prompt: pd.DataFrame
    real: pd.DataFrame
    real_open_notes: int


def continuation_prompts(
    pieces: Sequence[tuple[str, pd.DataFrame]], n_prompts: int, prompt_notes: int, seconds: float
) -> list[ContinuationPrompt]:
    """``n_prompts`` pieces spread evenly over ``pieces`` (those with more than ``prompt_notes`` notes):
    their first ``prompt_notes`` notes, and the real notes starting in the ``seconds`` after them
    (ends cut there, as a generation of that length is)."""
    usable = [(label, notes) for label, notes in pieces if len(notes) > prompt_notes]
    if not usable:
        return []
    picks = np.unique(np.linspace(0, len(usable) - 1, min(n_prompts, len(usable))).round().astype(int))
    prompts = []
    for index in picks.tolist():
        label, notes = usable[index]
        prompt = notes.iloc[:prompt_notes].reset_index(drop=True)
        begin = float(prompt["end"].max())  # where a generation starts: after the prompt's last event
        rest = notes.iloc[prompt_notes:]
        rest = rest[(rest["start"] >= begin) & (rest["start"] < begin + seconds)]
        stop = begin + seconds
        real = make_notes(rest["pitch"], rest["velocity"], rest["start"], np.minimum(rest["end"], stop))
        prompts.append(ContinuationPrompt(label, prompt, real, int((rest["end"] > stop).sum())))
    return prompts


def evaluate_continuations(
    model, tokenizer, prompts: Sequence[ContinuationPrompt], seconds: float, config=None, **options
) -> dict:
    """Generate ``seconds`` of music after each prompt (one sample each; ``config``/``options`` as
    :class:`piano_gpt.generation.GenerationConfig`) and compare them with the real continuations."""
    config = make_config(config, max_duration=seconds, **options)
    generated, open_counts, pieces = [], [], []
    for index, item in enumerate(prompts):
        (generation,) = generate_samples(model, tokenizer, item.prompt, config, seed=config.seed + index)
        prompt_ids = tokenizer.encode(item.prompt)
        still_open = open_notes(tokenizer, np.concatenate([np.asarray(prompt_ids, np.int64), generation.ids]))
        generated.append(generation.notes)
        open_counts.append(still_open or 0)
        pieces.append(
            {"label": item.label, "generated_notes": len(generation.notes), "stop": generation.stop_reason}
        )
    result = compare_continuations(
        generated,
        [p.real for p in prompts],
        generated_durations=[seconds] * len(prompts),
        real_durations=[seconds] * len(prompts),
        generated_open_notes=open_counts,
        real_open_notes=[p.real_open_notes for p in prompts],
    )
    result["settings"] = {"seconds": seconds, **config.to_dict()}
    result["pieces"] = pieces
    result["checks"] = plausibility_checks(result, config.max_note_seconds)
    return result

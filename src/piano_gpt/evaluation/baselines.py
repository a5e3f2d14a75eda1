"""Baselines of the PIANO benchmark: what a task's target can be guessed as without a model.

Each baseline is ``f(source, n_notes, rng) -> notes``: the task's source notes, the number of target
notes (which the model's prompt names too, as ``<N_NOTES_k>``) and a seeded generator.

- ``copy_source``: the source itself. On a selection task (masking, pitch / velocity splits) source
  and target are disjoint sets of notes of one piece, so scored against the target its note F1 is 0
  unless a source note repeats a target pitch within the onset tolerance; scored against the whole
  piece (source + target) it has precision 1 and recall ``|source| / |piece|``. On denoising and
  performance tasks it is the noisy (or "score") version of the target: a strong baseline.
- ``random_histogram``: ``n_notes`` notes whose pitch, velocity and duration are drawn independently
  (with replacement) from the source's own values, onsets uniform over the source's onset span.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from piano_gpt.midi import empty_notes, make_notes

COPY_SOURCE = "copy_source"
RANDOM_HISTOGRAM = "random_histogram"


def copy_source_baseline(source: pd.DataFrame, n_notes: int, rng: np.random.Generator) -> pd.DataFrame:
    """The generation is the source itself."""
    return make_notes(source["pitch"], source["velocity"], source["start"], source["end"])


def random_histogram_baseline(source: pd.DataFrame, n_notes: int, rng: np.random.Generator) -> pd.DataFrame:
    """``n_notes`` notes drawn from the source's empirical pitch / velocity / duration distributions,
    onsets uniform over ``[first source onset, last source onset]``; empty when the source is."""
    if len(source) == 0 or n_notes <= 0:
        return empty_notes()
    pitch = rng.choice(source["pitch"].to_numpy(), n_notes)
    velocity = rng.choice(source["velocity"].to_numpy(), n_notes)
    duration = rng.choice((source["end"] - source["start"]).to_numpy(np.float64), n_notes)
    start = rng.uniform(float(source["start"].min()), float(source["start"].max()), n_notes)
    return make_notes(pitch, velocity, start, start + np.maximum(duration, 0.0))


BASELINES = {COPY_SOURCE: copy_source_baseline, RANDOM_HISTOGRAM: random_histogram_baseline}

__all__ = [
    "BASELINES",
    "COPY_SOURCE",
    "RANDOM_HISTOGRAM",
    "copy_source_baseline",
    "random_histogram_baseline",
]

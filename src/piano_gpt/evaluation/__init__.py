"""Evaluation of generated performances: the PIANO metrics (see ``piano_gpt.evaluation.metrics``), the
benchmark's baselines, and (imported on first use: they need torch and the data pipeline) the
benchmark of a checkpoint (``evaluate_checkpoint``) and the loss evaluation (``evaluate_loss``)."""

from piano_gpt.evaluation.baselines import BASELINES, copy_source_baseline, random_histogram_baseline
from piano_gpt.evaluation.metrics import (
    DISTRIBUTIONS,
    HISTOGRAM_BINS,
    KEY_NAMES,
    average_metrics,
    compute_all_metrics,
    distribution_metrics,
    estimate_key,
    f1_over_time,
    histogram_bin_centres,
    histogram_bin_edges,
    histogram_distances,
    key_correlation,
    key_distribution,
    key_scores,
    note_f1,
    note_histogram,
    spiral_key_points,
)

_LAZY = {"evaluate_checkpoint": "piano_eval", "evaluate_loss": "loss"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"piano_gpt.evaluation.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'piano_gpt.evaluation' has no attribute {name!r}")


__all__ = [
    "BASELINES",
    "DISTRIBUTIONS",
    "HISTOGRAM_BINS",
    "KEY_NAMES",
    "average_metrics",
    "compute_all_metrics",
    "copy_source_baseline",
    "distribution_metrics",
    "estimate_key",
    "evaluate_checkpoint",
    "evaluate_loss",
    "f1_over_time",
    "histogram_bin_centres",
    "histogram_bin_edges",
    "histogram_distances",
    "key_correlation",
    "key_distribution",
    "key_scores",
    "note_f1",
    "note_histogram",
    "random_histogram_baseline",
    "spiral_key_points",
]

"""The PIANO scorer: each method's predicted notes against the targets of a list of task samples, with
the baselines computed on the same samples beside them.

One home for ``piano_eval`` (a checkpoint on samples drawn on the fly) and ``piano-gpt benchmark
score`` (any system's predictions for a frozen set): a number for our model and a number for another
system come from this code on the same samples.

A sample is any object with ``sample_id``, ``task_name``, ``index``, ``seed`` (the set's seed),
``source`` and ``target`` (note tables) and ``info`` (a dict of descriptive fields copied into the
per-sample rows: record, first note, task seed, title, composer).
"""

from __future__ import annotations

import time
import zlib

import numpy as np
import pandas as pd

from piano_gpt.evaluation.baselines import BASELINES
from piano_gpt.evaluation.metrics import average_metrics, compute_all_metrics
from piano_gpt.midi import empty_notes

MAIN_METRICS = (
    "note_f1/onset/f1",
    "f1_over_time/pitch/f1",
    "f1_over_time/pitch_class/f1",
    "key_correlation",
)


def task_rng(seed: int, task_name: str, index: int, stream: int = 0) -> np.random.Generator:
    """The rng of sample ``index`` of a task (stream 0: the sample; 1: the random baseline)."""
    return np.random.default_rng([int(seed), zlib.crc32(task_name.encode()), int(index), int(stream)])


def sample_id(task_name: str, index: int) -> str:
    """A sample's id in a set and in prediction file names: ``<task>-<index, 4 digits>``."""
    return f"{task_name}-{int(index):04d}"


def baseline_predictions(samples) -> dict[str, dict[str, pd.DataFrame]]:
    """``{baseline: {sample id: notes}}``: each baseline of ``BASELINES`` on each sample (seeded by the
    sample's seed, task and index, so a set's files give the same notes as piano_eval)."""
    return {
        method: {
            s.sample_id: baseline(s.source, len(s.target), task_rng(s.seed, s.task_name, s.index, 1))
            for s in samples
        }
        for method, baseline in BASELINES.items()
    }


def _main(metrics: dict) -> dict:
    return {name: round(float(metrics[name]), 6) for name in MAIN_METRICS}


def score_predictions(
    samples, predictions: dict[str, dict[str, pd.DataFrame]], extra_rows: dict | None = None
) -> dict:
    """Per task (in the samples' order): ``{"n_samples", "methods": {method: metric means}, "seconds",
    "samples": per-sample rows}``. ``predictions[method][sample_id]`` are the method's notes; a sample
    a method has no notes for is scored as an empty prediction (the caller reports which).
    ``extra_rows[sample_id]`` is merged into that sample's row (the model's stop reason, loss, ...)."""
    by_task: dict[str, list] = {}
    for s in samples:
        by_task.setdefault(s.task_name, []).append(s)
    per_task = {}
    for task_name, items in by_task.items():
        started = time.time()
        scores = {method: [] for method in predictions}
        rows = []
        for s in items:
            row = {
                "index": s.index,
                "sample_id": s.sample_id,
                **s.info,
                "n_source": len(s.source),
                "n_target": len(s.target),
            }
            row.update((extra_rows or {}).get(s.sample_id, {}))
            for method, made in predictions.items():
                notes = made.get(s.sample_id)
                notes = empty_notes() if notes is None else notes
                metrics = compute_all_metrics(s.target, notes)
                scores[method].append(metrics)
                row[method] = {"n_notes": len(notes), **_main(metrics)}
            rows.append(row)
        per_task[task_name] = {
            "n_samples": len(items),
            "methods": {method: average_metrics(values) for method, values in scores.items()},
            "seconds": round(time.time() - started, 3),
            "samples": rows,
        }
    return per_task


def overall(per_task: dict) -> dict:
    """Per method: the mean over tasks of the task means (each task counts once)."""
    methods = list(next(iter(per_task.values()))["methods"])
    result = {m: average_metrics([t["methods"][m] for t in per_task.values()]) for m in methods}
    losses = [t["loss"] for t in per_task.values() if "loss" in t and t["loss"]["n_tokens"]]
    if losses:
        total = sum(entry["target_token_loss"] * entry["n_tokens"] for entry in losses)
        n_tokens = sum(entry["n_tokens"] for entry in losses)
        result["loss"] = {"target_token_loss": total / n_tokens, "n_tokens": n_tokens}
    return result


__all__ = [
    "MAIN_METRICS",
    "baseline_predictions",
    "overall",
    "sample_id",
    "score_predictions",
    "task_rng",
]

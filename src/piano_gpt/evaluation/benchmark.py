"""PIANO as a frozen benchmark set: export the task samples, score any system's predictions.

>>> export_set("tmp/bench/maestro-test", {"type": "maestro", "path": "../shared/data/maestro"}, "test")
>>> predict_set("tmp/bench/maestro-test", "tmp/preds/copy.parquet", baseline="copy_source")
>>> score_set("tmp/bench/maestro-test", "tmp/preds/copy.parquet")["overall"]

A set is a folder:

- ``samples.parquet``: one row per sample, what a system sees: ``sample_id``, ``task``, ``index``,
  ``seed``, ``task_seed``, ``notes_per_sample``, the window (``record``, ``first_note``,
  ``window_notes``, ``window_end``), what the task prompt states about the target
  (``n_target_notes``, ``target_start``, ``target_end``), ``notes`` (the task's source notes, in the
  epr-labs schema: lists ``pitch, velocity, start, end, duration``, seconds from the window's start)
  and ``source`` (the piece's provenance, a JSON string as in the epr-labs datasets);
- ``targets.parquet``: ``sample_id``, ``task``, ``notes`` (the hidden truth), kept apart so a system
  can run without seeing it;
- ``set.json``: the arguments, the counts, the content hash and each file's sha256;
- ``README.md``: the dataset card (tasks, drawing, licence, content hash).

The samples are ``piano_eval``'s (``eval_samples``: same seed, split, tasks and window give the same
samples), so a model's piano_eval numbers and a set's scores are comparable. The content hash is a
sha256 over the rows' values (floats exactly), independent of the parquet writer; the files are
written without timestamps or varying metadata, so the same arguments give byte-identical files.

Predictions (the exchange format): a folder of MIDI files ``<sample_id>.mid`` (or ``.midi``), or one
parquet file with a ``sample_id`` column and either a ``notes`` struct of lists (as in the set) or one
row per note (``pitch, velocity, start, end``). Times are seconds on the sample's clock (the window
starts at 0); for masking tasks predict only the masked notes (the target), not the whole window.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from piano_gpt.data.records import NOTES_ARROW_TYPE
from piano_gpt.data.shards import map_midi_files
from piano_gpt.evaluation.baselines import BASELINES
from piano_gpt.evaluation.piano_eval import (
    DEFAULT_NOTES_PER_SAMPLE,
    EvaluationError,
    as_task_list,
    eval_samples,
)
from piano_gpt.evaluation.report import write_results
from piano_gpt.evaluation.scoring import MAIN_METRICS, baseline_predictions, overall, score_predictions
from piano_gpt.midi import MidiReadError, empty_notes, make_notes, read_notes, write_notes
from piano_gpt.tasks import TaskSample, get_task

SET_FORMAT = 1
SAMPLES_FILE = "samples.parquet"
TARGETS_FILE = "targets.parquet"
MANIFEST_FILE = "set.json"
CARD_FILE = "README.md"
MIDI_SUFFIXES = (".mid", ".midi")
# The note F1 matcher holds |target| x |prediction| pairs: a runaway prediction is refused, not scored.
MAX_PREDICTED_NOTES = 20_000
NO_NOTES = "contains no notes"  # read_notes' problem for a MIDI file without notes

SAMPLES_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("task", pa.string()),
        ("index", pa.int64()),
        ("seed", pa.int64()),
        ("task_seed", pa.int64()),
        ("notes_per_sample", pa.int64()),
        ("record", pa.int64()),
        ("first_note", pa.int64()),
        ("window_notes", pa.int64()),
        ("window_end", pa.float64()),
        ("n_target_notes", pa.int64()),
        ("target_start", pa.float64()),
        ("target_end", pa.float64()),
        ("notes", NOTES_ARROW_TYPE),
        ("source", pa.string()),
    ]
)
TARGETS_SCHEMA = pa.schema([("sample_id", pa.string()), ("task", pa.string()), ("notes", NOTES_ARROW_TYPE)])

LICENCES = {
    "maestro": (
        "cc-by-nc-sa-4.0",
        "MAESTRO v3.0.0 (Hawthorne et al., Google Magenta), Creative Commons Attribution-NonCommercial-"
        "ShareAlike 4.0 (CC BY-NC-SA 4.0): this set is a derivative and carries the same licence.",
    ),
    "demo": (
        "other",
        "The embedded demo corpus (Bach chorales from the music21 corpus, public-domain compositions, "
        "synthetic performances); see piano_gpt/data/demo.py (PROVENANCE).",
    ),
    "hf": ("other", "The licence of the source Hugging Face dataset applies; see its card."),
}


# --- the notes columns ------------------------------------------------------------------------------


def notes_column(notes: pd.DataFrame) -> dict:
    """A note table as an epr-labs ``notes`` struct of lists."""
    return {
        "pitch": notes["pitch"].astype(np.int64).tolist(),
        "velocity": notes["velocity"].astype(np.int64).tolist(),
        "start": notes["start"].astype(np.float64).tolist(),
        "end": notes["end"].astype(np.float64).tolist(),
        "duration": (notes["end"] - notes["start"]).astype(np.float64).tolist(),
    }


def column_notes(value: dict | None) -> pd.DataFrame:
    """An epr-labs ``notes`` struct of lists as a checked note table (ValueError when it is not one)."""
    if value is None:
        return empty_notes()
    lengths = {len(value.get(name) or []) for name in ("pitch", "velocity", "start", "end")}
    if len(lengths) != 1:
        raise ValueError("pitch, velocity, start and end lists differ in length")
    return checked_notes(
        make_notes(
            value.get("pitch") or [], value.get("velocity") or [], value["start"] or [], value["end"] or []
        )
    )


def checked_notes(notes: pd.DataFrame) -> pd.DataFrame:
    """``notes`` if every metric can take them: MIDI pitches and velocities, finite times (else ValueError)."""
    for name in ("pitch", "velocity"):
        values = notes[name].to_numpy()
        if len(values) and (values.min() < 0 or values.max() > 127):
            raise ValueError(f"{name} outside 0..127")
    times = notes[["start", "end"]].to_numpy(np.float64)
    if not np.isfinite(times).all():
        raise ValueError("note times are not finite")
    return notes


def write_table(rows: list[dict], schema: pa.Schema, path: Path) -> None:
    """Parquet without varying metadata: no pandas schema, fixed writer options (byte-identical output
    for the same rows and pyarrow version)."""
    table = pa.Table.from_pylist(rows, schema=schema)
    pq.write_table(table, path, compression="zstd", compression_level=3, write_statistics=False)


def content_hash(sample_rows: list[dict], target_rows: list[dict]) -> str:
    """sha256 over the set's values (floats by their exact repr), independent of the file encoding."""
    digest = hashlib.sha256()
    digest.update(f"piano-benchmark-set/{SET_FORMAT}\n".encode())
    for rows in (sample_rows, target_rows):
        for row in rows:
            digest.update(json.dumps(row, sort_keys=True, allow_nan=False).encode())
            digest.update(b"\n")
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# --- export -----------------------------------------------------------------------------------------


def source_name(dataset_cfg: dict) -> str:
    kind = dataset_cfg.get("type", "demo")
    if kind == "maestro":
        return "maestro"
    if kind == "hf":
        return "hf:" + ",".join(str(Path(str(name)).name) for name in dataset_cfg.get("base_datasets") or [])
    return kind


def open_notes_split(dataset_cfg: dict, split: str, shards_dir: str | Path | None):
    """The records of a split (piano_eval's: same reading, cutting and filtering), built afresh in a
    temporary folder unless ``shards_dir`` names a cache (so a changed source file is always seen)."""
    from piano_gpt.data.shards import build_shards
    from piano_gpt.tokenizers import ExponentialTimeTokenizer

    if split not in ("train", "validation", "test"):
        raise EvaluationError(f"split={split}: use validation, test or train")
    # Records do not depend on the tokenizer (only their tokens do): the default one is enough.
    if shards_dir is not None:
        return build_shards(dataset_cfg, ExponentialTimeTokenizer(), shards_dir, splits=(split,))[split], None
    tmp = tempfile.mkdtemp(prefix="piano-benchmark-")
    return build_shards(dataset_cfg, ExponentialTimeTokenizer(), tmp, splits=(split,))[split], tmp


def export_set(
    out_dir: str | Path,
    dataset_cfg: dict,
    split: str = "test",
    tasks="piano_default",
    n_samples: int = 10,
    seed: int = 0,
    notes_per_sample: int = DEFAULT_NOTES_PER_SAMPLE,
    shards_dir: str | Path | None = None,
) -> dict:
    """Write the benchmark set of (source, split, tasks, n_samples, seed, notes_per_sample) into
    ``out_dir``; returns the manifest (``set.json``)."""
    task_list = as_task_list(tasks)
    out_dir = Path(out_dir)
    shards, tmp = open_notes_split(dataset_cfg, split, shards_dir)
    try:
        samples = eval_samples(shards, task_list, int(n_samples), int(seed), int(notes_per_sample))
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    sample_rows, target_rows = [], []
    for task in task_list:
        for item in samples[task.name]:
            target = item.target
            sample_rows.append(
                {
                    "sample_id": item.sample_id,
                    "task": task.name,
                    "index": item.index,
                    "seed": item.seed,
                    "task_seed": item.task_seed,
                    "notes_per_sample": int(notes_per_sample),
                    "record": item.record,
                    "first_note": item.first,
                    "window_notes": len(item.notes),
                    "window_end": item.window_end,
                    "n_target_notes": len(target),
                    "target_start": float(target["start"].min()) if len(target) else 0.0,
                    "target_end": float(target["end"].max()) if len(target) else 0.0,
                    "notes": notes_column(item.source),
                    "source": json.dumps(item.source_info, sort_keys=True),
                }
            )
            target_rows.append(
                {"sample_id": item.sample_id, "task": task.name, "notes": notes_column(target)}
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    write_table(sample_rows, SAMPLES_SCHEMA, out_dir / SAMPLES_FILE)
    write_table(target_rows, TARGETS_SCHEMA, out_dir / TARGETS_FILE)
    manifest = {
        "format": SET_FORMAT,
        "content_hash": content_hash(sample_rows, target_rows),
        "source": source_name(dataset_cfg),
        "split": split,
        "tasks": [task.name for task in task_list],
        "n_samples_per_task": int(n_samples),
        "n_samples": len(sample_rows),
        "seed": int(seed),
        "notes_per_sample": int(notes_per_sample),
        "records_in_split": len(shards),
        "notes_in_split": shards.n_notes,
        "files": {name: file_sha256(out_dir / name) for name in (SAMPLES_FILE, TARGETS_FILE)},
    }
    (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n")
    (out_dir / CARD_FILE).write_text(dataset_card(manifest, dataset_cfg))
    return manifest


def dataset_card(manifest: dict, dataset_cfg: dict) -> str:
    licence_id, licence = LICENCES.get(dataset_cfg.get("type", "demo"), LICENCES["hf"])
    tasks = manifest["tasks"]
    families: dict[str, list] = {}
    for name in tasks:
        task = get_task(name)
        families.setdefault(task.family, []).append(name)
    task_lines = [f"- `{family}`: {', '.join(f'`{n}`' for n in names)}" for family, names in families.items()]
    return "\n".join(
        [
            "---",
            f"license: {licence_id}",
            "configs:",
            "- config_name: samples",
            f"  data_files: {SAMPLES_FILE}",
            "- config_name: targets",
            f"  data_files: {TARGETS_FILE}",
            "tags: [music, midi, piano, benchmark]",
            "---",
            "",
            f"# PIANO benchmark set: {manifest['source']} / {manifest['split']}",
            "",
            f"Content hash (sha256 of the rows' values): `{manifest['content_hash']}`. Format "
            f"{manifest['format']}; {manifest['n_samples']} samples: {manifest['n_samples_per_task']} for "
            f"each of {len(tasks)} tasks; seed {manifest['seed']}; windows of {manifest['notes_per_sample']} "
            "notes. Cite the hash with any number computed on this set.",
            "",
            "## What each task asks",
            "",
            "Each sample is a window of consecutive notes of one performance (times in seconds from the "
            "window's start), split by a task into *source* notes (what a system is given) and *target* "
            "notes (what it must produce). Masking tasks `{family}-x{param}` hide a subset of the window's "
            "notes: the target is that subset, the source the rest, and a system predicts only the hidden "
            "notes. Families: `top_line`/`bottom_line_masking` (the highest/lowest sounding line, peeled "
            "`param` times), `high`/`low`/`short`/`long_notes_masking` (the `param` highest / lowest / "
            "shortest / longest notes), `stride_notes_masking` (alternate runs of `param` notes), "
            "`chord_masking`, `random_masking` (percentages). Split tasks (`above_median_prediction`, "
            "denoising, `performance_task`, ...) are defined in `piano_gpt/tasks/split.py`. Besides the "
            "source, a system may use what the task prompt states: the task, `n_target_notes` and the "
            "target's time span (`target_start`, `target_end`).",
            "",
            *task_lines,
            "",
            "## How it was drawn",
            "",
            "As `piano_gpt.evaluation.piano_eval.eval_samples`: the split's performances are cut at "
            "silences over 4 s into records (notes outside the piano range dropped, records under 8 notes "
            "dropped); sample `j` of a task uses `rng = numpy.random.default_rng([seed, crc32(task), j])` to "
            "draw a record (weighted by its notes) and a window of `notes_per_sample` consecutive notes, "
            "then the task's own seed (`task_seed`). The `record`, `first_note` and `source` (provenance "
            "JSON) columns locate each window in its piece.",
            "",
            "## Files",
            "",
            f"- `{SAMPLES_FILE}`: one row per sample: `sample_id`, `task`, `index`, `seed`, `task_seed`, "
            "`notes_per_sample`, `record`, `first_note`, `window_notes`, `window_end`, `n_target_notes`, "
            "`target_start`, `target_end`, `notes` (the source notes: lists `pitch, velocity, start, end, "
            "duration`, the epr-labs schema), `source` (provenance JSON).",
            f"- `{TARGETS_FILE}`: `sample_id`, `task`, `notes` (the hidden target notes).",
            f"- `{MANIFEST_FILE}`: arguments, counts, content hash, file sha256s.",
            "",
            'Load: `datasets.load_dataset("parquet", data_files="samples.parquet")` or '
            "`piano_gpt.evaluation.benchmark.load_set(DIR)`. Score predictions (a folder of "
            "`<sample_id>.mid` files, or a parquet of `sample_id` + `notes`): `piano-gpt benchmark score "
            "--set DIR --predictions P`.",
            "",
            "## Licence",
            "",
            licence,
            "",
        ]
    )


# --- loading ----------------------------------------------------------------------------------------


@dataclass
class SetSample:
    """One sample of a loaded set (the scorer's sample interface; ``target`` None unless loaded)."""

    sample_id: str
    task_name: str
    index: int
    seed: int
    task_seed: int
    source: pd.DataFrame
    n_target_notes: int
    target_start: float
    target_end: float
    window_end: float
    info: dict
    source_info: dict
    target: pd.DataFrame | None = None  # the hidden truth, when loaded

    @property
    def record(self) -> int:
        return self.info["record"]

    @property
    def sample(self) -> TaskSample:
        """The TaskSample a model's prompt is built from: the source, and the target when loaded, else
        a stand-in with the true number of notes and time span (all the prompt states about it)."""
        target = self.target if self.target is not None else self.target_outline()
        task = get_task(self.task_name)
        return TaskSample(prefix_tokens=task.prefix_tokens, source=self.source, target=target, task=task.name)

    def target_outline(self) -> pd.DataFrame:
        n = self.n_target_notes
        return make_notes(
            np.zeros(n), np.zeros(n), np.full(n, self.target_start), np.full(n, self.target_end)
        )


def read_manifest(set_dir: str | Path) -> dict:
    path = Path(set_dir) / MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{set_dir}: not a benchmark set (no {MANIFEST_FILE}); make one with piano-gpt benchmark export"
        )
    manifest = json.loads(path.read_text())
    if manifest.get("format") != SET_FORMAT:
        raise EvaluationError(f"{path}: set format {manifest.get('format')}, this version reads {SET_FORMAT}")
    return manifest


def load_set(
    set_dir: str | Path, with_targets: bool = False, verify: bool = True
) -> tuple[dict, list[SetSample]]:
    """(manifest, samples) of a set; ``with_targets`` loads the hidden targets too; ``verify`` checks
    the content hash (a modified set is refused)."""
    set_dir = Path(set_dir)
    manifest = read_manifest(set_dir)
    sample_rows = pq.read_table(set_dir / SAMPLES_FILE).to_pylist()
    target_rows = pq.read_table(set_dir / TARGETS_FILE).to_pylist() if with_targets or verify else []
    if verify and content_hash(sample_rows, target_rows) != manifest["content_hash"]:
        raise EvaluationError(
            f"{set_dir}: its files do not match the content hash in {MANIFEST_FILE} (modified?)"
        )
    targets = {row["sample_id"]: column_notes(row["notes"]) for row in target_rows} if with_targets else {}
    samples = []
    for row in sample_rows:
        source_info = json.loads(row["source"])
        samples.append(
            SetSample(
                sample_id=row["sample_id"],
                task_name=row["task"],
                index=row["index"],
                seed=row["seed"],
                task_seed=row["task_seed"],
                source=column_notes(row["notes"]),
                n_target_notes=row["n_target_notes"],
                target_start=row["target_start"],
                target_end=row["target_end"],
                window_end=row["window_end"],
                info={
                    "record": row["record"],
                    "first_note": row["first_note"],
                    "task_seed": row["task_seed"],
                    "title": source_info.get("title"),
                    "composer": source_info.get("composer"),
                },
                source_info=source_info,
                target=targets.get(row["sample_id"]),
            )
        )
    return manifest, samples


def set_samples_by_task(set_dir: str | Path) -> tuple[dict, dict[str, list[SetSample]]]:
    """(manifest, {task: samples}) of a set with its targets: what ``piano_eval`` evaluates."""
    manifest, samples = load_set(set_dir, with_targets=True)
    by_task: dict[str, list[SetSample]] = {}
    for sample in samples:
        by_task.setdefault(sample.task_name, []).append(sample)
    return manifest, by_task


# --- predictions ------------------------------------------------------------------------------------


def read_predictions(path: str | Path, sample_ids: list[str]) -> tuple[dict[str, pd.DataFrame], dict]:
    """(notes per sample id, problems) of a predictions folder of MIDI files or a parquet file.

    problems: ``missing`` (ids without a prediction), ``unreadable`` ({id: why}), ``empty`` (ids
    predicted with no notes), ``unknown`` (files or ids not in the set). Missing and unreadable
    predictions are left out of the notes (the scorer scores them as empty); nothing here raises for a
    bad prediction, only for a path that is neither a folder nor a parquet file."""
    path = Path(path)
    wanted = set(sample_ids)
    found: dict[str, pd.DataFrame] = {}
    unreadable: dict[str, str] = {}
    unknown: list[str] = []
    if path.is_dir():
        files = {}
        for file in sorted(path.iterdir()):
            if file.suffix.lower() in MIDI_SUFFIXES and file.stem in wanted and file.stem not in files:
                files[file.stem] = file
            elif file.is_file():
                unknown.append(file.name)
        by_path = {str(file): sid for sid, file in files.items()}
        for file, result in map_midi_files(list(files.values()), read_prediction, "reading predictions"):
            if isinstance(result, str):
                unreadable[by_path[file]] = result
            else:
                found[by_path[file]] = result
    elif path.is_file() and path.suffix == ".parquet":
        found, unreadable, unknown = _parquet_predictions(path, wanted)
    else:
        raise FileNotFoundError(
            f"{path}: predictions must be a folder of <sample_id>.mid files or a .parquet file"
        )
    for sid in [sid for sid, notes in found.items() if len(notes) > MAX_PREDICTED_NOTES]:
        unreadable[sid] = f"{len(found.pop(sid))} notes, more than the {MAX_PREDICTED_NOTES} scored"
    problems = {
        "missing": [sid for sid in sample_ids if sid not in found and sid not in unreadable],
        "unreadable": {sid: unreadable[sid] for sid in sample_ids if sid in unreadable},
        "empty": [sid for sid in sample_ids if sid in found and len(found[sid]) == 0],
        "unknown": sorted(unknown),
    }
    return found, problems


def read_prediction(item, tokenizer=None):
    """The notes of one predicted MIDI file (run in a worker process), or why they cannot be scored."""
    try:
        return checked_notes(read_notes(item.path))
    except MidiReadError as error:
        # A valid file that predicts nothing is an empty prediction, not an unreadable one.
        return empty_notes() if error.problem == NO_NOTES else error.problem
    except (ValueError, OSError) as error:
        return str(error)


def _parquet_predictions(path: Path, wanted: set[str]):
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as error:
        raise EvaluationError(f"{path}: not a readable parquet file ({error})") from error
    columns = set(table.column_names)
    if "sample_id" not in columns:
        raise EvaluationError(f"{path}: no sample_id column (has {sorted(columns)})")
    found, unreadable, unknown = {}, {}, set()
    if "notes" in columns:
        for row in table.select(["sample_id", "notes"]).to_pylist():
            sid = str(row["sample_id"])
            if sid not in wanted:
                unknown.add(sid)
            elif sid in found or sid in unreadable:
                unreadable[sid] = "more than one row for this sample"
                found.pop(sid, None)
            else:
                try:
                    found[sid] = column_notes(row["notes"])
                except (ValueError, TypeError, KeyError) as error:
                    unreadable[sid] = str(error)
    elif {"pitch", "velocity", "start", "end"} <= columns:
        frame = table.select(["sample_id", "pitch", "velocity", "start", "end"]).to_pandas()
        for sid, notes in frame.groupby(frame["sample_id"].astype(str), sort=False):
            if sid not in wanted:
                unknown.add(sid)
                continue
            try:
                found[sid] = checked_notes(
                    make_notes(notes["pitch"], notes["velocity"], notes["start"], notes["end"])
                )
            except (ValueError, TypeError) as error:
                unreadable[sid] = str(error)
    else:
        raise EvaluationError(
            f"{path}: predictions need a notes column (struct of lists) or pitch, velocity, start, end columns"
        )
    return found, unreadable, sorted(unknown)


def write_predictions(predictions: dict[str, pd.DataFrame], out: str | Path) -> Path:
    """Predictions in the exchange format: ``out`` ending in .parquet -> one parquet file (``sample_id``,
    ``notes``), else a folder of ``<sample_id>.mid`` files."""
    out = Path(out)
    if out.suffix == ".parquet":
        out.parent.mkdir(parents=True, exist_ok=True)
        rows = [{"sample_id": sid, "notes": notes_column(notes)} for sid, notes in predictions.items()]
        write_table(rows, pa.schema([("sample_id", pa.string()), ("notes", NOTES_ARROW_TYPE)]), out)
        return out
    out.mkdir(parents=True, exist_ok=True)
    for sid, notes in predictions.items():
        write_notes(notes, out / f"{sid}.mid")
    return out


def predict_set(
    set_dir: str | Path,
    out: str | Path,
    *,
    checkpoint: str | Path | None = None,
    baseline: str | None = None,
    device: str = "auto",
    budget_factor: float = 2.0,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float = 1.0,
    progress: bool = False,
) -> dict:
    """Predictions of a checkpoint (``piano_eval``'s generation) or of a baseline for every sample of a
    set, written in the exchange format; returns ``{"out", "n_predictions", "stop_reasons"}``."""
    from collections import Counter

    if (checkpoint is None) == (baseline is None):
        raise EvaluationError("give either a checkpoint or a baseline")
    manifest, samples = load_set(set_dir, with_targets=False, verify=False)
    stops: Counter = Counter()
    if baseline is not None:
        if baseline not in BASELINES:
            raise EvaluationError(f"baseline {baseline!r}: use one of {', '.join(BASELINES)}")
        for s in samples:  # a baseline sees what a system sees: the source and the target's outline
            s.target = s.target_outline()
        made = baseline_predictions(samples)[baseline]
    else:
        import torch

        from piano_gpt.common import pick_device
        from piano_gpt.evaluation.piano_eval import (
            check_prompts_fit,
            check_task_tokens,
            model_generation,
            warn_prompts_too_long,
        )
        from piano_gpt.train.checkpoint import load_checkpoint

        model, tokenizer, _ = load_checkpoint(checkpoint, device=pick_device(device))
        check_task_tokens(tokenizer, as_task_list(manifest["tasks"]), str(checkpoint))
        check_prompts_fit(tokenizer, samples, model.config.block_size)
        torch.manual_seed(int(manifest["seed"]))
        made = {}
        for k, s in enumerate(samples):
            notes, stop, _ = model_generation(model, tokenizer, s, budget_factor, temperature, top_k, top_p)
            made[s.sample_id] = notes
            stops[stop] += 1
            if progress and (k + 1) % 50 == 0:
                print(f"{k + 1}/{len(samples)} samples", flush=True)
        warn_prompts_too_long(stops, len(samples), model.config.block_size)
    written = write_predictions(made, out)
    return {"out": str(written), "n_predictions": len(made), "stop_reasons": dict(stops)}


# --- scoring ----------------------------------------------------------------------------------------


def score_set(
    set_dir: str | Path,
    predictions_path: str | Path,
    name: str | None = None,
    out_dir: str | Path | None = None,
) -> dict:
    """Score a system's predictions for a set with piano_eval's metrics, per task and overall, the
    baselines on the same samples beside them; writes ``results.json`` and ``results.md`` into
    ``out_dir`` (default: ``<predictions>-scores`` next to the predictions)."""
    manifest, samples = load_set(set_dir, with_targets=True)
    predictions_path = Path(predictions_path)
    found, problems = read_predictions(predictions_path, [s.sample_id for s in samples])
    name = name or predictions_path.stem
    if name in BASELINES:
        name = f"{name} (predictions)"
    predicted = {name: found}
    predicted.update(baseline_predictions(samples))
    per_task = score_predictions(samples, predicted)
    counts = {kind: len(ids) for kind, ids in problems.items()}
    results = {
        "title": f"PIANO benchmark: {name}",
        "description": (
            f"Set {manifest['source']} / {manifest['split']} (content hash `{manifest['content_hash'][:16]}`), "
            f"{manifest['n_samples_per_task']} samples per task, seed {manifest['seed']}, windows of "
            f"{manifest['notes_per_sample']} notes; predictions {predictions_path}. Metrics compare each "
            "method's notes with the target notes (higher is better); `overall` is the mean over tasks. "
            "Missing or unreadable predictions score as empty."
        ),
        "set": {
            key: manifest[key] for key in ("content_hash", "source", "split", "seed", "notes_per_sample")
        },
        "predictions": str(predictions_path),
        "method": name,
        "n_samples": manifest["n_samples_per_task"],
        "problem_counts": counts,
        "problems": problems,
        "main_metrics": list(MAIN_METRICS),
        "tasks": per_task,
        "overall": overall(per_task),
    }
    out_dir = (
        Path(out_dir)
        if out_dir is not None
        else predictions_path.with_name(predictions_path.stem + "-scores")
    )
    write_results(results, out_dir, n_plots=0)
    results["out_dir"] = str(out_dir)
    return results


__all__ = [
    "SetSample",
    "column_notes",
    "content_hash",
    "export_set",
    "load_set",
    "notes_column",
    "predict_set",
    "read_predictions",
    "score_set",
    "set_samples_by_task",
    "write_predictions",
]

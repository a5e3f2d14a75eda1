"""The frozen PIANO benchmark set: export, the exchange format, and scoring any system's predictions."""

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from piano_gpt.commands.cli import main as cli_main
from piano_gpt.data.shards import build_shards
from piano_gpt.evaluation.benchmark import (
    CARD_FILE,
    MANIFEST_FILE,
    SAMPLES_FILE,
    TARGETS_FILE,
    export_set,
    load_set,
    predict_set,
    read_predictions,
    score_set,
    write_predictions,
)
from piano_gpt.evaluation.piano_eval import EvaluationError, evaluate_checkpoint
from piano_gpt.midi import empty_notes, make_notes, write_notes
from piano_gpt.model import GPT, GPTConfig
from piano_gpt.tasks import add_task_tokens
from piano_gpt.tokenizers import ExponentialTimeTokenizer
from piano_gpt.train.checkpoint import save_checkpoint

DEMO = {"name": "demo", "type": "demo", "extra_datasets": []}
TASKS = ["above_median_prediction", "top_line_masking-x1"]
SET_FILES = (SAMPLES_FILE, TARGETS_FILE, MANIFEST_FILE, CARD_FILE)


@pytest.fixture(scope="module")
def shards_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    build_shards(DEMO, ExponentialTimeTokenizer(), root, splits=("validation",))
    return root


@pytest.fixture(scope="module")
def demo_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("sets") / "demo-validation"
    export_set(out, DEMO, "validation", TASKS, n_samples=2, seed=0, notes_per_sample=16)
    return out


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    tokenizer = ExponentialTimeTokenizer()
    add_task_tokens(tokenizer)
    torch.manual_seed(0)
    config = GPTConfig(block_size=192, vocab_size=tokenizer.vocab_size, n_layer=1, n_head=2, n_embd=32)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", GPT(config), tokenizer, run_config={})


def test_scoring_baseline_and_model_files_gives_piano_evals_numbers(
    demo_set, checkpoint, shards_dir, tmp_path
):
    """export -> predict (baselines, and the checkpoint) -> score from the files: the same numbers,
    per task and per sample, as piano_eval on the same samples."""
    reference = evaluate_checkpoint(
        checkpoint, TASKS, 2, "validation", "demo", seed=0, out_dir=tmp_path / "eval", notes_per_sample=16,
        n_plots=0, shards_dir=shards_dir,
    )  # fmt: skip
    for method in ("copy_source", "random_histogram"):
        path = predict_set(demo_set, tmp_path / f"{method}.parquet", baseline=method)["out"]
        scores = score_set(demo_set, path, name="system", out_dir=tmp_path / f"{method}-scores")
        assert scores["problem_counts"] == {"missing": 0, "unreadable": 0, "empty": 0, "unknown": 0}
        for task in TASKS:
            expected = reference["tasks"][task]["methods"][method]
            assert scores["tasks"][task]["methods"]["system"] == expected
            assert scores["tasks"][task]["methods"][method] == expected  # the baseline beside it
            for row, reference_row in zip(
                scores["tasks"][task]["samples"], reference["tasks"][task]["samples"]
            ):
                assert row["system"] == reference_row[method]
                assert row["record"] == reference_row["record"]
                assert row["first_note"] == reference_row["first_note"]
        assert scores["overall"]["system"] == reference["overall"][method]
        saved = json.loads((tmp_path / f"{method}-scores" / "results.json").read_text())
        assert saved["overall"]["system"] == reference["overall"][method]
        assert "| **overall** |" in (tmp_path / f"{method}-scores" / "results.md").read_text()
    path = predict_set(demo_set, tmp_path / "model.parquet", checkpoint=checkpoint)["out"]
    scores = score_set(demo_set, path, name="system", out_dir=tmp_path / "model-scores")
    for task in TASKS:
        assert scores["tasks"][task]["methods"]["system"] == reference["tasks"][task]["methods"]["model"]
    # piano_eval on the exported set: the same numbers as on the samples it drew itself
    on_set = evaluate_checkpoint(checkpoint, out_dir=tmp_path / "on-set", n_plots=1, set_dir=demo_set)
    assert on_set["set"]["content_hash"] == load_set(demo_set)[0]["content_hash"]
    for task in TASKS:
        for key in ("methods", "loss", "stop_reasons"):
            assert on_set["tasks"][task][key] == reference["tasks"][task][key]


def maestro_folder(root, pitch_shift=0):
    """A MAESTRO-layout folder with two test pieces (csv + YEAR/*.midi)."""
    rows = []
    for k in range(2):
        n = 40 + 10 * k
        start = np.arange(n) * 0.25
        pitch = 48 + (np.arange(n) * (5 + k)) % 30 + (pitch_shift if k == 1 else 0)
        notes = make_notes(pitch, 40 + (np.arange(n) * 7) % 60, start, start + 0.4)
        name = f"2018/piece-{k}.midi"
        (root / "2018").mkdir(parents=True, exist_ok=True)
        write_notes(notes, root / name)
        rows.append(
            dict(canonical_composer=f"Composer {k}", canonical_title=f"Piece {k}", split="test", year=2018,
                 midi_filename=name, audio_filename="", duration=float(start[-1]))
        )  # fmt: skip
    pd.DataFrame(rows).to_csv(root / "maestro-v3.0.0.csv", index=False)
    return {"name": "maestro", "type": "maestro", "path": str(root), "extra_datasets": []}


def test_export_is_byte_identical_and_a_changed_source_changes_the_hash(tmp_path, monkeypatch):
    dataset = maestro_folder(tmp_path / "maestro")
    first = export_set(tmp_path / "a", dataset, "test", TASKS, n_samples=3, seed=1, notes_per_sample=16)
    second = export_set(tmp_path / "b", dataset, "test", TASKS, n_samples=3, seed=1, notes_per_sample=16)
    for name in SET_FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert first["content_hash"] == second["content_hash"]
    assert first["content_hash"] in (tmp_path / "a" / CARD_FILE).read_text()
    assert "CC BY-NC-SA 4.0" in (tmp_path / "a" / CARD_FILE).read_text()

    maestro_folder(tmp_path / "maestro", pitch_shift=2)  # one source file changes
    changed = export_set(tmp_path / "c", dataset, "test", TASKS, n_samples=3, seed=1, notes_per_sample=16)
    assert changed["content_hash"] != first["content_hash"]

    # Loadable by HF datasets (local parquet, no network) and by our loader, with the same content.
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    loaded = datasets.load_dataset(
        "parquet",
        data_files=str(tmp_path / "a" / SAMPLES_FILE),
        split="train",
        cache_dir=str(tmp_path / "hf"),
    )
    manifest, samples = load_set(tmp_path / "a", with_targets=True)
    assert manifest["content_hash"] == first["content_hash"] and len(samples) == len(loaded) == 6
    for row, sample in zip(loaded, samples):
        assert row["sample_id"] == sample.sample_id
        assert row["notes"]["pitch"] == sample.source["pitch"].tolist()
        assert row["notes"]["start"] == sample.source["start"].tolist()
        assert json.loads(row["source"])["title"] in ("Piece 0", "Piece 1")
        assert row["n_target_notes"] == len(sample.target) > 0
    targets = pq.read_table(tmp_path / "a" / TARGETS_FILE).to_pylist()
    assert [t["sample_id"] for t in targets] == [s.sample_id for s in samples]

    # A set whose files were changed is refused.
    table = pq.read_table(tmp_path / "a" / TARGETS_FILE).slice(1)
    pq.write_table(table, tmp_path / "a" / TARGETS_FILE)
    with pytest.raises(EvaluationError, match="content hash"):
        load_set(tmp_path / "a")


def test_missing_corrupt_and_empty_midi_predictions_are_reported_by_id_and_the_rest_scored(
    demo_set, tmp_path
):
    _, samples = load_set(demo_set)
    ids = [s.sample_id for s in samples]
    folder = tmp_path / "midi"
    write_predictions({s.sample_id: s.source for s in samples}, folder)  # copy the source, as MIDI
    (folder / f"{ids[0]}.mid").unlink()
    (folder / f"{ids[1]}.mid").write_bytes(b"MThd this is not a MIDI file")
    write_notes(empty_notes(), folder / f"{ids[2]}.mid")
    (folder / "not-a-sample.mid").write_bytes(b"")
    results = score_set(demo_set, folder, out_dir=tmp_path / "scores")
    problems = results["problems"]
    assert problems["missing"] == [ids[0]]
    assert list(problems["unreadable"]) == [ids[1]]
    assert problems["empty"] == [ids[2]]
    assert problems["unknown"] == ["not-a-sample.mid"]
    rows = {row["sample_id"]: row for entry in results["tasks"].values() for row in entry["samples"]}
    assert [rows[i]["midi"]["n_notes"] for i in ids[:3]] == [0, 0, 0]
    assert rows[ids[3]]["midi"]["n_notes"] == len(samples[3].source) > 0
    markdown = (tmp_path / "scores" / "results.md").read_text()
    assert f"missing: 1: {ids[0]}" in markdown and ids[1] in markdown


def test_parquet_predictions_one_row_per_note_and_bad_rows(demo_set, tmp_path):
    _, samples = load_set(demo_set)
    ids = [s.sample_id for s in samples]
    notes = samples[0].source
    rows = pd.DataFrame({"sample_id": ids[0], **{c: notes[c] for c in ("pitch", "velocity", "start", "end")}})
    bad = pd.DataFrame(
        {"sample_id": [ids[1]], "pitch": [300], "velocity": [60], "start": [0.0], "end": [1.0]}
    )
    n = 20_001  # a runaway prediction
    huge = pd.DataFrame(
        {"sample_id": ids[2], "pitch": [60] * n, "velocity": [60] * n, "start": 0.0, "end": 1.0}
    )
    path = tmp_path / "long.parquet"
    pd.concat([rows, bad, huge]).to_parquet(path)
    found, problems = read_predictions(path, ids)
    assert found[ids[0]].equals(notes)
    assert problems["unreadable"] == {
        ids[1]: "pitch outside 0..127",
        ids[2]: "20001 notes, more than the 20000 scored",
    }
    assert problems["missing"] == ids[3:]


def test_benchmark_command_lines(demo_set, tmp_path, capsys):
    out = tmp_path / "copy"
    assert (
        cli_main(
            ["benchmark", "predict", "--set", str(demo_set), "--baseline", "copy_source", "--out", str(out)]
        )
        == 0
    )
    assert len(list(out.glob("*.mid"))) == 4
    assert cli_main(["benchmark", "score", "--set", str(demo_set), "--predictions", str(out)]) == 0
    assert (tmp_path / "copy-scores" / "results.json").exists()
    capsys.readouterr()
    assert (
        cli_main(["benchmark", "score", "--set", str(demo_set), "--predictions", str(tmp_path / "nope")]) == 1
    )
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "nope" in error and "predictions must be" in error
    assert cli_main(["benchmark", "export", "--source", "maestro", "--out", str(tmp_path / "x")]) == 1
    assert "--path" in capsys.readouterr().err


def test_a_set_whose_prompts_do_not_fit_the_model_is_refused_with_what_to_set(checkpoint, tmp_path):
    """Issue 15.3 for frozen sets: 128-note windows in a 192-token model would all score F1 0."""
    wide = tmp_path / "wide"
    export_set(wide, DEMO, "validation", TASKS, n_samples=2, seed=0, notes_per_sample=128)
    message = r"4 of 4 prompts are longer than the model's context \(192 tokens\).*--notes-per-sample \d+"
    with pytest.raises(EvaluationError, match=message):
        predict_set(wide, tmp_path / "p.parquet", checkpoint=checkpoint)
    with pytest.raises(EvaluationError, match=message):
        evaluate_checkpoint(checkpoint, out_dir=tmp_path / "e", n_plots=0, set_dir=wide)


def crash_on_crash_files(item, tokenizer=None):
    """A prediction reader whose parser kills its process on files named crash*: a native crash."""
    import os

    from piano_gpt.evaluation.benchmark import read_prediction

    if "crash" in item.path:
        os._exit(1)
    return read_prediction(item)


def test_a_prediction_file_that_crashes_the_parser_costs_only_itself(tmp_path):
    from piano_gpt.data.shards import map_midi_files

    notes = make_notes([60, 64], [70, 80], [0.0, 0.5], [0.4, 1.0])
    paths = [tmp_path / name for name in ("a.mid", "crash.mid", "c.mid")]
    for path in paths:
        write_notes(notes, path)
    results = dict(map_midi_files(paths, crash_on_crash_files))
    assert results[str(paths[1])] == f"{paths[1]}: the MIDI parser crashed the worker process"
    for path in (paths[0], paths[2]):  # times as MIDI ticks hold them
        read = results[str(path)]
        assert read["pitch"].tolist() == [60, 64] and read["velocity"].tolist() == [70, 80]
        assert np.allclose(read[["start", "end"]].to_numpy(), notes[["start", "end"]].to_numpy(), atol=1e-3)

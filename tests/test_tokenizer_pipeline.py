"""The README's awesome tokenizer pipeline: prepare_tokenizer_dataset -> train_tokenizer -> train."""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from piano_gpt.commands.prepare_tokenizer_dataset import prepare, tokenizer_dataset_path
from piano_gpt.commands.train_tokenizer import train_tokenizer
from piano_gpt.data.shards import build_shards, shards_key, tokenize_item
from piano_gpt.data.sources import MidiFileItem, dataset_items, item_notes
from piano_gpt.data.tokenizer_dump import write_tokenizer_dataset
from piano_gpt.midi import write_notes
from piano_gpt.tokenizers import ExponentialTimeTokenizer, load_tokenizer
from piano_gpt.tokenizers.awesome import (
    AwesomeMidiTokenizer,
    text_to_base_ids,
    tokenizer_config_hash,
    trained_tokenizer_hash,
    trained_tokenizer_path,
)
from piano_gpt.train.config import CONFIG_DIR, ConfigError, find_trained_tokenizer

REPO = Path(__file__).resolve().parents[1]
BASE = ExponentialTimeTokenizer()
TRAIN_ARGS = [
    "tokenizer=awesome",
    "tokenizer.vocab_size=1500",
    "model=gpt2_demo",
    "data.batch_size=4",
    "data.context_size=64",
    "optimizer.max_iters=3",
    "eval_interval=3",
    "eval_iters=1",
    "logging.progress_bar=false",
]


def configured(config_name: str, overrides: list[str]):
    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        return compose(config_name, overrides=overrides)


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "HYDRA_FULL_ERROR": "1"}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def advised_commands(message: str) -> list[list[str]]:
    lines = [line.strip() for line in message.splitlines() if line.strip().startswith("python -m ")]
    return [shlex.split(line) for line in lines]


def test_readme_pipeline_on_demo_dataset(tmp_path):
    """From a bare directory: training asks for the tokenizer with the two exact commands; running them
    makes the same training command work end to end, and the checkpoint carries the tokenizer."""
    train = ["-m", "piano_gpt.train", *TRAIN_ARGS, f"out_dir={tmp_path / 'runs'}", "run_name=x"]
    first = run(train, tmp_path)
    assert first.returncode == 2, first.stderr[-3000:]
    commands = advised_commands(first.stderr)
    assert [c[:3] for c in commands] == [
        ["python", "-m", "piano_gpt.prepare_tokenizer_dataset"],
        ["python", "-m", "piano_gpt.train_tokenizer"],
    ], first.stderr[-3000:]
    assert commands[0][3:] == commands[1][3:] == ["tokenizer.vocab_size=1500"]

    prepared = run(commands[0][1:], tmp_path)
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    assert "tokenizing train" in prepared.stderr  # the progress bar
    cfg = configured("tokenizer_training", ["tokenizer.vocab_size=1500"])
    dump = tmp_path / tokenizer_dataset_path(cfg)
    assert prepared.stdout.strip() == str(tokenizer_dataset_path(cfg))
    lines = dump.read_text(encoding="utf-8").splitlines()
    info = json.loads(dump.with_suffix(".json").read_text())
    assert len(lines) == info["records"] > 300 and info["skipped"] == 0
    ids = np.concatenate([text_to_base_ids(line) for line in lines])
    assert len(ids) == info["tokens"] and 0 <= ids.min() and ids.max() < BASE.vocab_size
    # The dump is the demo train split exactly as the shards tokenize it (no augmentation in demo).
    [(tokens, _, _)] = tokenize_item(dataset_items({"type": "demo"}, "train")[0], BASE)
    assert text_to_base_ids(lines[0]).tolist() == tokens.tolist()

    trained = run(commands[1][1:], tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    path = tmp_path / trained_tokenizer_path(cfg.dataset, cfg.tokenizer)
    assert trained.stdout.strip() == str(trained_tokenizer_path(cfg.dataset, cfg.tokenizer))
    assert (
        path.name
        == f"awesome-demo-{tokenizer_config_hash(dict(cfg.dataset), without_dir(cfg.tokenizer))}.json"
    )
    tokenizer = load_tokenizer(path)
    assert isinstance(tokenizer, AwesomeMidiTokenizer) and tokenizer.vocab_size == 1500

    second = run(train, tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    checkpoint = tmp_path / "runs" / "x" / "x-last"
    saved = load_tokenizer(checkpoint / "tokenizer.json")
    assert saved.to_dict() == tokenizer.to_dict()
    # Shards are keyed by the tokenizer: the awesome shards are their own, and hold awesome ids.
    dataset_cfg = OmegaConf.to_container(configured("gpt2_pretraining", []).dataset)
    shard_dir = tmp_path / "tmp" / "shards" / f"demo-{shards_key(dataset_cfg, tokenizer)}"
    assert (shard_dir / "train" / "manifest.json").exists()
    assert shards_key(dataset_cfg, tokenizer) != shards_key(dataset_cfg, BASE)
    shards = build_shards(
        dataset_cfg, tokenizer, cache_dir=tmp_path / "tmp" / "shards", splits=("validation",)
    )
    val = shards["validation"]
    base_val = build_shards(dataset_cfg, BASE, cache_dir=tmp_path / "tmp" / "shards", splits=("validation",))
    assert val.n_notes == base_val["validation"].n_notes
    assert val.n_tokens < 0.8 * base_val["validation"].n_tokens  # BPE: fewer tokens for the same notes
    assert tokenizer.decode(val.record_tokens(0)).equals(BASE.decode(BASE.encode(val.record_notes(0))))

    # Generation loads the checkpoint's tokenizer and continues a prompt with it.
    from piano_gpt.generation import generate
    from piano_gpt.train.checkpoint import load_checkpoint

    model, loaded, _ = load_checkpoint(checkpoint)
    assert isinstance(loaded, AwesomeMidiTokenizer) and model.config.vocab_size == loaded.vocab_size
    prompt = val.record_notes(0, 0, 16)
    [notes] = generate(model, loaded, prompt, n_samples=1, seed=0, max_new_tokens=12)
    assert list(notes.columns[:4]) == ["pitch", "velocity", "start", "end"]


def without_dir(tokenizer_cfg) -> dict:
    return {k: v for k, v in dict(tokenizer_cfg).items() if k != "tokenizers_dir"}


def tiny_tokenizer(tmp_path, cfg, n_items: int = 20) -> AwesomeMidiTokenizer:
    items = dataset_items({"type": "demo"}, "train")[:n_items]
    dump = tokenizer_dataset_path(cfg)
    write_tokenizer_dataset(dict(cfg.dataset), BASE, dump, progress=False, items=items)
    return load_tokenizer(train_tokenizer(cfg))


def test_missing_tokenizer_names_commands_that_rebuild_the_same_config(tmp_path):
    overrides = [
        "tokenizer=awesome",
        "dataset=maestro",
        "dataset.path=/data/my maestro",
        "dataset.augmentation.max_pitch_shift=3",
        "dataset.augmentation.speed_change_factors=[0.95,1.05]",
        "+dataset.note='a b'",
        "tokenizer.vocab_size=1234",
        "tokenizer.base.n_velocity_bins=16",
        f"tokenizer.tokenizers_dir={tmp_path / 'tokenizers'}",
    ]
    cfg = configured("gpt2_pretraining", overrides)
    with pytest.raises(ConfigError) as caught:
        find_trained_tokenizer(cfg)
    assert isinstance(caught.value, ValueError)
    message = str(caught.value)
    expected = trained_tokenizer_path(cfg.dataset, cfg.tokenizer)
    assert str(expected) in message and "does not exist" in message
    commands = advised_commands(message)
    assert [c[2] for c in commands] == ["piano_gpt.prepare_tokenizer_dataset", "piano_gpt.train_tokenizer"]
    assert commands[0][3:] == commands[1][3:]
    assert "dataset=maestro" in commands[0] and "tokenizer.vocab_size=1234" in commands[0]
    rebuilt = configured("tokenizer_training", commands[0][3:])
    assert trained_tokenizer_path(rebuilt.dataset, rebuilt.tokenizer) == expected
    assert dict(rebuilt.dataset) == dict(cfg.dataset) and dict(rebuilt.tokenizer) == dict(cfg.tokenizer)

    # The default config needs no overrides at all.
    plain = configured("gpt2_pretraining", ["tokenizer=awesome", f"tokenizer.tokenizers_dir={tmp_path}"])
    with pytest.raises(ConfigError) as caught:
        find_trained_tokenizer(plain)
    commands = advised_commands(str(caught.value))
    assert [c[3:] for c in commands] == [[f"tokenizer.tokenizers_dir={tmp_path}"]] * 2


def test_hash_lookup(tmp_path):
    base_overrides = [
        f"tokenizer.tokenizers_dir={tmp_path / 'tok'}",
        f"tokenizer_datasets_dir={tmp_path / 'ds'}",
    ]
    cfg = configured("tokenizer_training", [*base_overrides, "tokenizer.vocab_size=1300"])
    tokenizer = tiny_tokenizer(tmp_path, cfg)
    training_cfg = configured(
        "gpt2_pretraining", ["tokenizer=awesome", "tokenizer.vocab_size=1300", base_overrides[0]]
    )
    assert find_trained_tokenizer(training_cfg).to_dict() == tokenizer.to_dict()
    # The hash is of the configs' content: key order and container types do not matter ...
    dataset, tok = dict(cfg.dataset), without_dir(cfg.tokenizer)
    shuffled = {k: dataset[k] for k in reversed(list(dataset))}
    assert trained_tokenizer_hash(shuffled, dict(reversed(list(tok.items())))) == trained_tokenizer_hash(
        cfg.dataset, cfg.tokenizer
    )
    # ... where the tokenizers live is not part of it; everything else is.
    elsewhere = configured("gpt2_pretraining", ["tokenizer=awesome", "tokenizer.vocab_size=1300"])
    assert trained_tokenizer_hash(elsewhere.dataset, elsewhere.tokenizer) == trained_tokenizer_hash(
        cfg.dataset, cfg.tokenizer
    )
    for change in ("tokenizer.vocab_size=1400", "tokenizer.max_token_length=64", "dataset=maestro"):
        other = configured(
            "gpt2_pretraining", ["tokenizer=awesome", "tokenizer.vocab_size=1300", base_overrides[0], change]
        )
        assert trained_tokenizer_path(other.dataset, other.tokenizer) != trained_tokenizer_path(
            cfg.dataset, cfg.tokenizer
        )
        with pytest.raises(ConfigError, match="python -m piano_gpt.train_tokenizer"):
            find_trained_tokenizer(other)
    # A file at the right name that is not a matching awesome tokenizer is refused, not used.
    path = trained_tokenizer_path(cfg.dataset, cfg.tokenizer)
    ExponentialTimeTokenizer().save(path)
    with pytest.raises(ConfigError, match="not an awesome one"):
        find_trained_tokenizer(training_cfg)
    AwesomeMidiTokenizer.train(ExponentialTimeTokenizer(n_velocity_bins=16), [], vocab_size=1300).save(path)
    with pytest.raises(ConfigError, match="another base tokenizer"):
        find_trained_tokenizer(training_cfg)


def test_dump_streams_augments_deterministically_and_skips_a_bad_file(tmp_path):
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"MThd this is not a MIDI file")
    good = dataset_items({"type": "demo"}, "train")[:4]
    items = [good[0], MidiFileItem(str(bad), "{}"), *good[1:]]
    dataset_cfg = {"type": "demo", "augmentation": {"max_pitch_shift": 5, "speed_change_factors": [0.9, 1.1]}}
    dump = tmp_path / "dump.txt"
    partial = tmp_path / "dump.txt.partial"
    sizes = []

    def watched():
        for item in items:
            sizes.append(partial.stat().st_size if partial.exists() else 0)
            yield item

    stats = write_tokenizer_dataset(dataset_cfg, BASE, dump, progress=False, items=watched())
    assert sizes[0] == 0 and sizes[-1] > sizes[1] > 0  # written as it goes
    assert not partial.exists()
    assert stats["files"] == 5 and stats["skipped"] == 1 and "bad.mid" in stats["errors"][0]
    lines = dump.read_text(encoding="utf-8").splitlines()
    assert len(lines) == stats["records"] == 4
    again = tmp_path / "again.txt"
    write_tokenizer_dataset(dataset_cfg, BASE, again, progress=False, items=items)
    assert again.read_text(encoding="utf-8") == dump.read_text(encoding="utf-8")
    plain = tmp_path / "plain.txt"
    write_tokenizer_dataset({"type": "demo"}, BASE, plain, progress=False, items=items)
    plain_lines = plain.read_text(encoding="utf-8").splitlines()
    assert plain_lines != lines
    for line, original, item in zip(lines, plain_lines, good, strict=True):
        notes, reference = BASE.decode(text_to_base_ids(line)), item_notes(item)
        assert len(notes) == len(reference)
        [(tokens, _, _)] = tokenize_item(item, BASE)  # one record, as the shards cut it
        assert text_to_base_ids(original).tolist() == tokens.tolist()
        shift = np.sort(notes["pitch"].to_numpy()) - np.sort(reference["pitch"].to_numpy())
        assert len(set(shift.tolist())) == 1 and abs(shift[0]) <= 5  # one pitch shift per record


def test_prepare_cli_reports_and_skips_a_bad_file_in_a_maestro_folder(tmp_path):
    folder = tmp_path / "maestro"
    (folder / "2004").mkdir(parents=True)
    rows = []
    for i, item in enumerate(dataset_items({"type": "demo"}, "train")[:3]):
        write_notes(item_notes(item), folder / "2004" / f"piece{i}.midi")
        rows.append(("Bach", f"Chorale {i}", "train", 2004, f"2004/piece{i}.midi"))
    (folder / "2004" / "broken.midi").write_bytes(b"\x00" * 100)
    rows.insert(1, ("Nobody", "Broken", "train", 2004, "2004/broken.midi"))
    columns = ["canonical_composer", "canonical_title", "split", "year", "midi_filename"]
    pd.DataFrame(rows, columns=columns).to_csv(folder / "maestro-v3.0.0.csv", index=False)

    result = run(
        [
            "-m",
            "piano_gpt.prepare_tokenizer_dataset",
            "dataset=maestro",
            f"dataset.path={folder}",
            "tokenizer_datasets_dir=dumps",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "skipped" in result.stderr and "broken.midi" in result.stderr
    dump = tmp_path / result.stdout.strip()
    assert dump.parent == tmp_path / "dumps"
    info = json.loads(dump.with_suffix(".json").read_text())
    assert (info["files"], info["skipped"], info["records"]) == (4, 1, 3)
    # Missing dataset folder: one clear line, no traceback.
    missing = run(
        ["-m", "piano_gpt.prepare_tokenizer_dataset", "dataset=maestro", "dataset.path=nowhere"], tmp_path
    )
    assert (
        missing.returncode == 2 and missing.stderr.startswith("error: ") and "Traceback" not in missing.stderr
    )


def test_train_tokenizer_without_dump_says_to_prepare(tmp_path):
    result = run(["-m", "piano_gpt.train_tokenizer", "tokenizer.vocab_size=1400"], tmp_path)
    assert result.returncode == 2
    assert "python -m piano_gpt.prepare_tokenizer_dataset tokenizer.vocab_size=1400" in result.stderr


def test_prepare_reuses_a_finished_dump(tmp_path):
    cfg = configured("tokenizer_training", [f"tokenizer_datasets_dir={tmp_path}", "progress_bar=false"])
    path = tokenizer_dataset_path(cfg)
    path.write_text("kept")
    assert prepare(cfg) == path and path.read_text() == "kept"


def test_tokenizer_commands_leave_no_log_file_in_the_working_folder(tmp_path):
    for command in ("prepare_tokenizer_dataset", "train_tokenizer"):
        done = run(
            ["-m", f"piano_gpt.{command}", "dataset=maestro", "dataset.path=/no/such/maestro"], tmp_path
        )
        assert done.returncode == 2, done.stderr[-3000:]  # Hydra ran the job (and set up its logging)
    assert list(tmp_path.glob("*.log")) == []  # no prepare_tokenizer_dataset.log, train_tokenizer.log

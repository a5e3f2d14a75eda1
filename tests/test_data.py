import json
import os
import subprocess
import sys

import numpy as np
import pytest

from piano_gpt.data.records import cut_at_pauses, notes_to_record, record_to_notes
from piano_gpt.data.shards import build_shards, build_split
from piano_gpt.data.sources import (
    MidiFileItem,
    dataset_items,
    hf_items,
    maestro_items,
    save_records_as_parquet,
)
from piano_gpt.midi import make_notes, write_notes
from piano_gpt.tokenizers import ExponentialTimeTokenizer


def piece(n=40, offset=0.0, pitch=60):
    start = offset + np.arange(n) * 0.25
    return make_notes(pitch + np.arange(n) % 12, np.full(n, 70), start, start + 0.2)


def test_cut_at_pauses_splits_and_rebases():
    first, second = piece(20), piece(20, offset=20.0)  # 20 s of silence between them
    notes = make_notes(
        *[np.concatenate([first[c], second[c]]) for c in ["pitch", "velocity", "start", "end"]]
    )
    parts = cut_at_pauses(notes, max_pause=4.0)
    assert [len(p) for p in parts] == [20, 20]
    assert parts[1]["start"].iloc[0] == 0.0
    # A long note bridging the gap keeps the piece whole: silence counts from the latest end.
    bridged = make_notes(
        [*notes["pitch"], 40], [*notes["velocity"], 50], [*notes["start"], 4.0], [*notes["end"], 18.0]
    )
    assert len(cut_at_pauses(bridged)) == 1


def test_hf_source_reads_local_parquet_in_epr_labs_schema(tmp_path):
    records = [
        notes_to_record(piece(30), {"composer": "Bach", "title": "A", "split": "train", "dataset": "x"}),
        notes_to_record(
            piece(12, pitch=40), {"composer": "Chopin", "title": "B", "split": "train", "dataset": "x"}
        ),
    ]
    save_records_as_parquet(records, tmp_path / "data" / "train-00000.parquet")
    save_records_as_parquet(records[:1], tmp_path / "data" / "validation-00000.parquet")
    items = hf_items(str(tmp_path / "data"), "train")
    assert len(items) == 2
    back = record_to_notes(items[1].record)
    assert list(back["pitch"]) == list(piece(12, pitch=40)["pitch"])
    assert json.loads(items[1].record["source"])["composer"] == "Chopin"
    assert len(hf_items(str(tmp_path / "data"), "validation")) == 1


def test_hf_source_reads_save_to_disk(tmp_path):
    import datasets

    records = [notes_to_record(piece(30), {"title": "A"})]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(records)}).save_to_disk(str(tmp_path / "ds"))
    items = hf_items(str(tmp_path / "ds"), "train")
    assert len(record_to_notes(items[0].record)) == 30


def test_maestro_items_follow_csv_splits(maestro_dir):
    items = maestro_items(maestro_dir, "validation")
    assert len(items) == 137
    assert all(json.loads(i.source)["split"] == "validation" for i in items)


def test_bad_file_is_reported_and_skipped(tmp_path):
    good = write_notes(piece(30), tmp_path / "good.mid")
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"not a midi file at all")
    items = [
        MidiFileItem(str(good), json.dumps({"title": "good"})),
        MidiFileItem(str(bad), json.dumps({})),
    ] * 3
    shards = build_split(items, ExponentialTimeTokenizer(), tmp_path / "shards" / "train", n_workers=2)
    assert len(shards) == 3
    errors = json.loads((tmp_path / "shards" / "train" / "errors.json").read_text())
    assert len(errors) == 3 and "bad.mid" in errors[0]["error"] and "not a MIDI file" in errors[0]["error"]
    tokenizer = ExponentialTimeTokenizer()
    assert list(shards.record_tokens(0)) == tokenizer.encode(piece(30))
    assert list(shards.record_notes(1)["pitch"]) == list(piece(30)["pitch"])


def test_two_builds_of_one_split_at_once_both_succeed(tmp_path, monkeypatch):
    """Two runs building the same cache at once (one finishes while the other is mid-build): each
    writes its own folder, both get the whole split, and nothing half-built is left beside it."""
    from piano_gpt.data import shards as shards_module

    tokenizer = ExponentialTimeTokenizer()
    items = [
        MidiFileItem(str(write_notes(piece(30, pitch=48 + i), tmp_path / f"{i}.mid")), json.dumps({"i": i}))
        for i in range(3)
    ]
    root = tmp_path / "cache" / "train"
    map_items = shards_module._map_items
    inner = []

    def racing(*args, **kwargs):
        for n, pair in enumerate(map_items(*args, **kwargs)):
            if n == 1 and not inner:  # the other run builds the same split from start to end here
                inner.append(None)
                inner[0] = build_split(items, tokenizer, root, n_workers=1)
            yield pair

    monkeypatch.setattr(shards_module, "_map_items", racing)
    outer = build_split(items, tokenizer, root, n_workers=1)
    expected = [tokenizer.encode(piece(30, pitch=48 + i)) for i in range(3)]
    for built in (inner[0], outer):
        assert [list(built.record_tokens(i)) for i in range(3)] == expected
    assert [list(shards_module.SplitShards.open(root).record_tokens(i)) for i in range(3)] == expected
    assert sorted(p.name for p in root.parent.iterdir()) == ["train"]


def test_a_build_cut_off_by_a_kill_is_cleared_by_the_next(tmp_path):
    root = tmp_path / "cache" / "train"
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead = root.parent / f"train.building-{int(done.stdout)}-abc"  # its process has exited
    (dead / "tokens.u16").parent.mkdir(parents=True)
    (dead / "tokens.u16").write_bytes(b"half")
    live = root.parent / f"train.building-{os.getpid()}-abc"  # a build still running (this process)
    live.mkdir()
    item = MidiFileItem(str(write_notes(piece(30), tmp_path / "a.mid")), json.dumps({}))
    assert len(build_split([item], ExponentialTimeTokenizer(), root, n_workers=1)) == 1
    assert not dead.exists() and live.exists()


def test_demo_shards_build_once(tmp_path):
    tokenizer = ExponentialTimeTokenizer()
    built = build_shards({"name": "demo", "type": "demo"}, tokenizer, tmp_path, splits=("validation",))
    val = built["validation"]
    assert len(val) >= 10 and val.n_tokens > 10 * val.n_notes / 2
    again = build_shards({"name": "demo", "type": "demo"}, tokenizer, tmp_path, splits=("validation",))
    assert again["validation"].root == val.root and again["validation"].n_tokens == val.n_tokens
    assert len(dataset_items({"type": "demo"}, "validation")) == len(
        {val.record_source(i)["title"] for i in range(len(val))}
    )


def test_unknown_dataset_type():
    with pytest.raises(ValueError, match="unknown dataset type"):
        dataset_items({"type": "nope"}, "train")


def test_a_hub_dataset_without_network_is_one_line(tmp_path):
    """`python -m piano_gpt.train dataset=small` with no network (the endpoint a closed local port):
    one line saying the dataset is on the hub and how to use a local copy; no retries, no traceback."""
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_ETAG_TIMEOUT": "2"}
    for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        env.pop(key, None)
    done = subprocess.run(
        [sys.executable, "-m", "piano_gpt.train", "dataset=small", "model=gpt2_demo", "out_dir=runs"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "Retrying" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "error: epr-labs/maestro-sustain-v2 is a dataset on the hub; cannot reach the Hugging Face Hub at "
        "http://127.0.0.1:9"
    ), last
    assert "no network? Use a local copy: dataset.base_datasets=[/path/to/copy]" in last

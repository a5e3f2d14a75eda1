"""The dataset builder over hostile inputs: every bad item costs itself (reported with its name and the
reason in errors.json), never the build, and a worker that crashes or hangs costs one item."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from crash_items import Booby, CrashingFile, good_notes
from midi_fabric import Note, Performance, chunk, header, random_performance, track_bytes

from piano_gpt.data.shards import build_split
from piano_gpt.data.sources import MidiFileItem, RecordItem


def piece(seed: int, low: int = 40, high: int = 90) -> bytes:
    """A small well-formed piece: 30 notes within 8 seconds (960 ticks per second)."""
    rng = random.Random(seed)
    notes = []
    for _ in range(30):
        start = rng.randrange(0, 8 * 960)
        notes.append(Note(rng.randint(low, high), rng.randint(20, 120), start, start + rng.randint(50, 600)))
    return Performance(
        notes, tempos=[(0, 500_000)], fmt=rng.choice([0, 1]), velocity0_offs=bool(seed % 2)
    ).to_bytes()


def hostile_files(folder: Path) -> dict[str, bytes | None]:
    """name -> bytes (None: a directory, or no file at all)."""
    good = piece(0)
    rng = random.Random(1)
    note = [(0, b"\x90\x3c\x40"), (480, b"\x80\x3c\x40")]
    return {
        "empty.mid": b"",
        "random-bytes.mid": bytes(rng.randrange(256) for _ in range(3000)),
        "random-tracks.mid": header(1, 2, 480)
        + chunk(b"MTrk", bytes(rng.randrange(256) for _ in range(500))) * 2,
        "text.mid": b"this is not a MIDI file\n",
        "truncated.mid": good[: len(good) // 2],
        "header-only.mid": good[:14],
        "lying-chunk-length.mid": good[:18] + b"\x7f\xff\xff\xff" + good[22:],
        "zero-division.mid": header(1, 1, 0) + chunk(b"MTrk", track_bytes(note)),
        "smpte-division.mid": header(1, 1, 0xE728) + chunk(b"MTrk", track_bytes(note)),
        "tick-overflow.mid": header(1, 1, 480)
        + chunk(b"MTrk", track_bytes([(0x0FFFFFFF * k, b"\x90\x3c\x40") for k in range(1, 12)])),
        "thirty-hours.mid": header(1, 1, 1)
        + chunk(b"MTrk", track_bytes([(0, b"\x90\x3c\x40"), (216_000, b"\x80\x3c\x40")])),  # 1 tick = 0.5 s
        "pedal-only.mid": header(1, 1, 480)
        + chunk(b"MTrk", track_bytes([(0, b"\xb0\x40\x7f"), (480, b"\xb0\x40\x00")])),
        "drums-only.mid": header(1, 1, 480)
        + chunk(b"MTrk", track_bytes([(0, b"\x99\x24\x40"), (9, b"\x89\x24\x40")])),
        "never-released.mid": header(1, 1, 480) + chunk(b"MTrk", track_bytes([(0, b"\x90\x3c\x40")])),
        "folder.mid": None,
        "missing.mid": None,
    }


def test_hostile_files_are_reported_and_the_rest_is_built(tmp_path, tokenizer):
    folder = tmp_path / "midi"
    folder.mkdir()
    items = []
    for name, data in hostile_files(folder).items():
        path = folder / name
        if name == "folder.mid":
            path.mkdir()
        elif data is not None:
            path.write_bytes(data)
        items.append(MidiFileItem(str(path), json.dumps({"title": name})))
    good = []
    for seed in range(6):
        path = folder / f"good-{seed}.mid"
        path.write_bytes(piece(seed, low=0 if seed == 5 else 40, high=127 if seed == 5 else 90))
        good.append(MidiFileItem(str(path), json.dumps({"title": path.name})))
    items = good[:3] + items + good[3:]

    shards = build_split(items, tokenizer, tmp_path / "shards" / "train", n_workers=2)

    manifest = json.loads((shards.root / "manifest.json").read_text())
    errors = {Path(e["item"]).name: e["error"] for e in json.loads((shards.root / "errors.json").read_text())}
    assert manifest["items"] == len(items)
    assert sorted(errors) == sorted(hostile_files(folder)), errors
    for name, error in errors.items():
        assert str(folder / name) in error  # the message names the file...
        assert len(error) < 300 and "\n" not in error  # ...in one readable line
    assert "0 ticks per quarter" in errors["zero-division.mid"]
    assert "ticks" in errors["tick-overflow.mid"] and "more than" in errors["tick-overflow.mid"]
    assert "s limit" in errors["thirty-hours.mid"]
    assert "no notes" in errors["pedal-only.mid"] and "no notes" in errors["drums-only.mid"]
    # Every good file became records; pitches outside the piano (file good-5) were dropped, not fatal.
    titles = {json.loads(s)["title"] for s in shards.index["source"]}
    assert titles == {f"good-{seed}.mid" for seed in range(6)}
    assert shards.notes["pitch"].min() >= 21 and shards.notes["pitch"].max() <= 108
    assert int(shards.tokens.max()) < tokenizer.vocab_size


def test_random_midi_corpus_builds(tmp_path, tokenizer):
    """Forty random performances (types 0/1/2, tempo changes, any pitch, odd divisions) build."""
    rng = random.Random(7)
    items = []
    for i in range(40):
        path = tmp_path / f"random-{i}.mid"
        path.write_bytes(random_performance(rng, max_notes=80).to_bytes())
        items.append(MidiFileItem(str(path), json.dumps({"title": path.name})))
    shards = build_split(items, tokenizer, tmp_path / "shards" / "train", n_workers=2)
    errors = json.loads((shards.root / "errors.json").read_text())
    for error in errors:  # only our own clear refusals
        reasons = ("no notes", "s limit", "more than", "too few notes", "one instant")
        assert any(reason in error["error"] for reason in reasons), error
    assert json.loads((shards.root / "manifest.json").read_text())["items"] == 40


def record_items(n: int, log: Path | None = None) -> list[RecordItem]:
    return [RecordItem(Booby("none", f"good-{i}", str(log) if log else None, seed=i)) for i in range(n)]


def test_parser_crashes_cost_one_item_each(tmp_path, tokenizer):
    log = tmp_path / "pids.log"
    items = record_items(60, log)
    # Workers that die (SIGSEGV, os._exit) or misbehave (SystemExit, MemoryError) mid-build.
    items[1] = RecordItem(Booby("segfault", "segfaults"))
    items[30] = RecordItem(Booby("exit", "exits"))
    items[40] = RecordItem(Booby("sys.exit", "calls-sys-exit"))
    items[50] = RecordItem(Booby("memory", "runs-out-of-memory"))
    shards = build_split(items, tokenizer, tmp_path / "shards" / "train", n_workers=2)

    errors = {e["item"]: e["error"] for e in json.loads((shards.root / "errors.json").read_text())}
    assert sorted(errors) == ["calls-sys-exit", "exits", "runs-out-of-memory", "segfaults"]
    assert errors["segfaults"] == "segfaults: the MIDI parser crashed the worker process"
    assert errors["exits"] == "exits: the MIDI parser crashed the worker process"
    assert "SystemExit" in errors["calls-sys-exit"] and "MemoryError" in errors["runs-out-of-memory"]
    titles = [json.loads(s)["title"] for s in shards.index["source"]]
    good = [f"good-{i}" for i in range(60) if i not in (1, 30, 40, 50)]
    assert sorted(set(titles)) == sorted(good)  # every other item, in order, once
    assert titles == sorted(titles, key=good.index)
    # After a crash the rest of the build stays in pooled workers: a handful of processes, not one
    # fresh process per remaining item.
    pids = set(log.read_text().split())
    assert len(pids) <= 16, f"{len(pids)} worker processes for 56 items"


def test_hung_parser_is_stopped_and_reported(tmp_path, tokenizer):
    items = record_items(8)
    items[2] = RecordItem(Booby("hang", "hangs"))
    started = time.monotonic()
    shards = build_split(items, tokenizer, tmp_path / "shards" / "train", n_workers=2, item_timeout=5)
    assert time.monotonic() - started < 60
    errors = json.loads((shards.root / "errors.json").read_text())
    assert errors == [{"item": "hangs", "error": "hangs: still parsing after 5 s (a hung parser?); stopped"}]
    assert len(shards) == 7


def test_midi_files_are_parsed_out_of_process_even_with_one_worker(tmp_path, tokenizer):
    paths = []
    for seed in range(3):
        paths.append(tmp_path / f"good-{seed}.mid")
        paths[-1].write_bytes(piece(seed))
    items = [MidiFileItem(str(p), json.dumps({"title": p.name})) for p in paths]
    items.insert(1, CrashingFile(str(tmp_path / "crashes.mid"), "{}"))
    shards = build_split(items, tokenizer, tmp_path / "shards" / "train", n_workers=1)
    errors = json.loads((shards.root / "errors.json").read_text())
    assert [e["item"] for e in errors] == [str(tmp_path / "crashes.mid")]
    assert "crashed the worker process" in errors[0]["error"]
    assert {json.loads(s)["title"] for s in shards.index["source"]} == {p.name for p in paths}


def test_records_beyond_the_limits_are_refused_not_tokenized(tmp_path, tokenizer):
    """Dataset records never went through read_notes: the builder applies its limits to them too
    (a note lasting 30 years would otherwise be ~1.5 billion tokens)."""
    good = good_notes(seed=1)
    items = [RecordItem({"notes": good, "source": json.dumps({"title": "good"})})]
    for title, change in [("years-long", {"end": 1e9}), ("nan", {"start": float("nan")})]:
        notes = {key: list(values) for key, values in good.items()}
        for key, value in change.items():
            notes[key][3] = value
        items.append(RecordItem({"notes": notes, "source": json.dumps({"title": title})}))
    shards = build_split(items, tokenizer, tmp_path / "train", n_workers=1)
    errors = {e["item"]: e["error"] for e in json.loads((shards.root / "errors.json").read_text())}
    assert errors == {
        "years-long": "years-long: notes span beyond the 86400 s limit",
        "nan": "nan: note times are not finite",
    }
    assert len(shards) == 1

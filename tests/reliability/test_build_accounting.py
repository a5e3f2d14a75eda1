"""Every input of a dataset build ends as records or as a reason in errors.json, the summary's counts
add up, and the shard cache is keyed on the files' contents: replacing a bad file rebuilds."""

from __future__ import annotations

import json
import os
from pathlib import Path

from midi_fabric import Note, Performance
from test_build_survives import piece

from piano_gpt.data.shards import build_shards, build_split, build_summary
from piano_gpt.data.sources import MidiFileItem


def one_per_beat(pitches: list[int], tempo: int = 500_000) -> bytes:
    notes = [Note(pitch, 64, i * 480, i * 480 + 240) for i, pitch in enumerate(pitches)]
    return Performance(notes, tempos=[(0, tempo)]).to_bytes()


QUIET = {  # files that read fine but give no record, and the reason each must get
    "zero-tempo.mid": (one_per_beat([60, 62, 64, 65, 67, 69, 71, 72, 74, 76], tempo=0), "zero tempo"),
    "five-notes.mid": (one_per_beat([60, 62, 64, 65, 67]), "too few notes: 5 piano notes"),
    "outside-piano.mid": (one_per_beat([5, 8, 12, 115, 120, 127] * 3), "no notes in the piano range"),
    "pauses.mid": (
        Performance([Note(60 + i, 64, i * 20 * 480, i * 20 * 480 + 240) for i in range(12)]).to_bytes(),
        "between pauses of more than 4 s",
    ),
}


def test_every_item_ends_as_records_or_a_reason(tmp_path, tokenizer):
    files = {f"good-{seed}.mid": piece(seed) for seed in range(3)}
    files |= {name: data for name, (data, _) in QUIET.items()}
    files["empty.mid"] = b""
    items = []
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        items.append(MidiFileItem(str(tmp_path / name), json.dumps({"title": name})))

    shards = build_split(items, tokenizer, tmp_path / "shards" / "train", n_workers=1)

    manifest = json.loads((shards.root / "manifest.json").read_text())
    errors = {Path(e["item"]).name: e["error"] for e in json.loads((shards.root / "errors.json").read_text())}
    with_records = {json.loads(source)["title"] for source in shards.index["source"]}
    assert with_records == {"good-0.mid", "good-1.mid", "good-2.mid"}
    assert set(errors) == set(QUIET) | {"empty.mid"}
    for name, (_, reason) in QUIET.items():
        assert reason in errors[name] and str(tmp_path / name) in errors[name], errors[name]
    assert (manifest["items"], manifest["items_with_records"], manifest["errors"]) == (len(files), 3, 5)
    summary = build_summary("train", manifest, shards.root)
    assert summary.startswith(f"built train: {len(files)} items = 3 with records + 5 skipped")


def maestro_folder(root: Path, files: dict[str, bytes]) -> Path:
    root.mkdir()
    lines = ["canonical_composer,canonical_title,split,year,midi_filename"]
    for name, data in files.items():
        (root / name).write_bytes(data)
        lines.append(f"Bach,{name},train,2004,{name}")
    (root / "maestro-v3.0.0.csv").write_text("\n".join(lines) + "\n")
    return root


def test_replacing_a_bad_file_rebuilds_the_shards(tmp_path, tokenizer):
    folder = maestro_folder(tmp_path / "maestro", {"a.mid": piece(1), "b.mid": one_per_beat([60, 62, 64])})
    config = {"name": "mini", "type": "maestro", "path": str(folder)}
    cache = tmp_path / "shards"

    first = build_shards(config, tokenizer, cache, splits=("train",), n_workers=1)["train"]
    assert len(first.index) == 1 and "too few notes" in (first.root / "errors.json").read_text()
    again = build_shards(config, tokenizer, cache, splits=("train",), n_workers=1)["train"]
    assert again.root == first.root  # nothing changed: the shards are reused

    bad = folder / "b.mid"
    stat = bad.stat()
    bad.write_bytes(piece(2))
    os.utime(bad, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # as `cp -p` or an archive would leave it
    rebuilt = build_shards(config, tokenizer, cache, splits=("train",), n_workers=1)["train"]
    assert rebuilt.root != first.root
    assert {json.loads(s)["title"] for s in rebuilt.index["source"]} == {"a.mid", "b.mid"}
    assert json.loads((rebuilt.root / "errors.json").read_text()) == []

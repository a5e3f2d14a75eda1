"""Where pieces come from: the embedded demo corpus, a MAESTRO-layout folder, or HF datasets.

Every source lists *items* for a split; an item becomes records (notes + source) in a worker process,
so a file that cannot be parsed costs only itself. Items are plain data (picklable for the pool).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from piano_gpt.common import hub_unreachable
from piano_gpt.data.records import notes_to_record, record_to_notes
from piano_gpt.midi import read_notes

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class MidiFileItem:
    path: str
    source: str  # JSON

    @property
    def label(self) -> str:
        return self.path


@dataclass(frozen=True)
class RecordItem:
    record: dict

    @property
    def label(self) -> str:
        source = json.loads(self.record.get("source", "{}") or "{}")
        return source.get("title") or source.get("midi_filename") or "<record>"


def item_notes(item) -> pd.DataFrame:
    """The note table of an item (raises MidiReadError for bad files)."""
    if isinstance(item, MidiFileItem):
        return read_notes(item.path)
    return record_to_notes(item.record)


def item_source(item) -> str:
    return item.source if isinstance(item, MidiFileItem) else item.record.get("source", "{}")


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")


def demo_items(split: str) -> list[RecordItem]:
    from piano_gpt.data.demo import load_demo_records

    check_split(split)
    return [RecordItem(record) for record in load_demo_records(split)]


def maestro_csv(path: Path) -> Path:
    for name in ("maestro-v3.0.0.csv", "maestro-v2.0.0.csv", "maestro-v1.0.0.csv"):
        if (path / name).exists():
            return path / name
    found = sorted(path.glob("*.csv"))
    if not found:
        raise FileNotFoundError(f"{path}: no MAESTRO csv (maestro-v3.0.0.csv) in this folder")
    return found[0]


def maestro_items(path: str | Path, split: str) -> list[MidiFileItem]:
    """A folder in the MAESTRO layout: a csv with split/midi_filename columns and YEAR/*.midi files."""
    check_split(split)
    path = Path(path).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"MAESTRO folder {path} does not exist (set dataset.path=...)")
    table = pd.read_csv(maestro_csv(path))
    table = table[table["split"] == split]
    items = []
    for row in table.itertuples(index=False):
        source = {
            "composer": row.canonical_composer,
            "title": row.canonical_title,
            "split": row.split,
            "year": int(row.year),
            "midi_filename": row.midi_filename,
            "dataset": "maestro",
        }
        items.append(MidiFileItem(str(path / row.midi_filename), json.dumps(source)))
    return items


class DatasetUnavailableError(FileNotFoundError):
    """A hub dataset that cannot be had here (no network, not in the cache)."""


def _load_from_hub(name: str, split: str):
    import datasets
    from huggingface_hub import constants

    advice = (
        "Use a local copy: dataset.base_datasets=[/path/to/copy] (a save_to_disk folder or parquet files), "
        "or dataset=maestro dataset.path=DIR; or HF_HUB_OFFLINE=1 if the datasets cache holds it"
    )
    if not (constants.HF_HUB_OFFLINE or datasets.config.HF_HUB_OFFLINE):
        reason = hub_unreachable()  # before datasets' ~30 s of retries
        if reason:
            raise DatasetUnavailableError(f"{name} is a dataset on the hub; {reason}: no network? {advice}")
    try:
        return datasets.load_dataset(name, split=split)
    except ConnectionError as error:
        raise DatasetUnavailableError(f"{name}: {error}. {advice}") from error


def hf_items(name_or_path: str, split: str) -> list[RecordItem]:
    """An HF dataset in the epr-labs schema: a hub name, a ``save_to_disk`` folder, or parquet files.

    Local paths never touch the network; hub names go through ``datasets.load_dataset``.
    """
    import datasets

    check_split(split)
    path = Path(name_or_path).expanduser()
    if path.exists():
        if (path / "dataset_dict.json").exists() or (path / "dataset_info.json").exists():
            loaded = datasets.load_from_disk(str(path))
            dataset = loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
        else:
            files = [path] if path.is_file() else sorted(path.glob(f"**/{split}*.parquet"))
            if not files:
                files = sorted(path.glob(f"**/*{split}*/*.parquet"))
            if not files:
                raise FileNotFoundError(f"{path}: no parquet files for split {split!r}")
            dataset = datasets.load_dataset("parquet", data_files=[str(f) for f in files], split="train")
    else:
        dataset = _load_from_hub(name_or_path, split)
    missing = {"notes", "source"} - set(dataset.column_names)
    if missing:
        raise ValueError(f"{name_or_path}: not in the epr-labs schema (missing columns {sorted(missing)})")
    return [RecordItem({"notes": row["notes"], "source": row["source"]}) for row in dataset]


def dataset_items(dataset_cfg: dict, split: str) -> list:
    """Items of every source a dataset config names (``type`` + ``extra_datasets``)."""
    kind = dataset_cfg.get("type", "demo")
    if kind == "demo":
        items = demo_items(split)
    elif kind == "maestro":
        items = maestro_items(dataset_cfg["path"], split)
    elif kind == "hf":
        items = []
        for name in dataset_cfg.get("base_datasets") or []:
            items += hf_items(name, split)
    else:
        raise ValueError(f"unknown dataset type {kind!r}: use demo, maestro or hf")
    for name in dataset_cfg.get("extra_datasets") or []:
        items += hf_items(name, split)
    return items


def dataset_files(dataset_cfg: dict) -> list[Path]:
    """The local files a dataset config's items are made from, in a fixed order (hub datasets, known
    by name only, have none here): what the shard cache key hashes."""
    from piano_gpt.data.demo import DEMO_CORPUS_PATH

    kind = dataset_cfg.get("type", "demo")
    names = list(dataset_cfg.get("extra_datasets") or [])
    files: list[Path] = []
    if kind == "demo":
        files.append(DEMO_CORPUS_PATH)
    elif kind == "maestro":
        path = Path(dataset_cfg["path"]).expanduser()
        csv = maestro_csv(path)
        files += [csv, *(path / name for name in pd.read_csv(csv)["midi_filename"])]
    elif kind == "hf":
        names = list(dataset_cfg.get("base_datasets") or []) + names
    for name in names:
        path = Path(name).expanduser()
        if path.is_dir():
            files += sorted(f for f in path.rglob("*") if f.is_file())
        elif path.exists():
            files.append(path)
    return files


def dataset_fingerprint(dataset_cfg: dict) -> str:
    """sha256 over the names and contents of :func:`dataset_files` (a missing file counts as such).

    Contents, not sizes and mtimes: a replaced file keeps its size and, copied with ``cp -p`` or
    ``rsync -t`` or unpacked from an archive, its mtime. Piano MIDI is small, so hashing a whole corpus
    is cheap next to building or training on it (``bench/dataset_fingerprint.py``)."""
    digest = hashlib.sha256()
    for path in dataset_files(dataset_cfg):
        digest.update(str(path).encode("utf-8", "surrogateescape") + b"\0")
        try:
            with open(path, "rb") as handle:
                digest.update(hashlib.file_digest(handle, "sha256").digest())
        except OSError:
            digest.update(b"<missing>")
    return digest.hexdigest()


def save_records_as_parquet(records: list[dict], path: str | Path) -> Path:
    """Write records in the epr-labs schema to a parquet file (what ``hf_items`` reads)."""
    import datasets

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_list(records).to_parquet(str(path))
    return path


__all__ = [
    "MidiFileItem",
    "RecordItem",
    "dataset_files",
    "dataset_fingerprint",
    "dataset_items",
    "demo_items",
    "hf_items",
    "item_notes",
    "item_source",
    "maestro_items",
    "notes_to_record",
    "save_records_as_parquet",
]

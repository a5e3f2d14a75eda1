"""Token shards: every record of a split tokenized once, stored as memory-mapped arrays + an index.

Layout of ``<root>/<split>/``:
- ``tokens.u16``: all records' token ids back to back (uint16 memmap);
- ``notes.npy``: all records' notes back to back (structured array: pitch, velocity, start, end);
- ``index.parquet``: per record token/note offset and count, duration (s) and source JSON;
- ``errors.json``: items that could not be read, with the reason;
- ``manifest.json``: written last; a split without it is rebuilt.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from piano_gpt.data.records import MAX_PAUSE, cut_at_pauses
from piano_gpt.data.sources import dataset_items, item_notes, item_source
from piano_gpt.midi import MidiReadError, make_notes
from piano_gpt.tokenizers import MidiTokenizer, tokenizer_from_dict

NOTE_DTYPE = np.dtype([("pitch", "u1"), ("velocity", "u1"), ("start", "f8"), ("end", "f8")])
SHARD_FORMAT = 1
MIN_RECORD_NOTES = 8

_worker_tokenizer: MidiTokenizer | None = None


def _init_worker(tokenizer_dict: dict) -> None:
    global _worker_tokenizer
    _worker_tokenizer = tokenizer_from_dict(tokenizer_dict)


def tokenize_item(item, tokenizer: MidiTokenizer | None = None, max_pause: float = MAX_PAUSE):
    """One item -> list of (tokens, notes, source_json), or an error string naming the item."""
    tokenizer = tokenizer or _worker_tokenizer
    try:
        notes = item_notes(item)
    except MidiReadError as error:
        return str(error)
    except Exception as error:  # any other failure of one item is reported, never fatal
        return f"{item.label}: {type(error).__name__}: {error}"
    out = []
    for part in cut_at_pauses(notes, max_pause):
        part = part[(part["pitch"] >= 21) & (part["pitch"] <= 108)]
        if len(part) < MIN_RECORD_NOTES:
            continue
        tokens = np.asarray(tokenizer.encode(part), dtype=np.uint16)
        array = np.empty(len(part), NOTE_DTYPE)
        for name in ("pitch", "velocity", "start", "end"):
            array[name] = part[name].to_numpy()
        out.append((tokens, array, item_source(item)))
    return out


def shards_key(dataset_cfg: dict, tokenizer: MidiTokenizer) -> str:
    """Shards depend on what the dataset config names and on the tokenizer."""
    relevant = {k: dataset_cfg.get(k) for k in ("type", "path", "base_datasets", "extra_datasets")}
    payload = json.dumps({"dataset": relevant, "tokenizer": tokenizer.to_dict(), "format": SHARD_FORMAT})
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def _map_items(items, tokenizer: MidiTokenizer, n_workers: int, desc: str):
    """Yield (item, result) in order, parsing in worker processes when n_workers > 1.

    A worker that dies (a native parser crash) breaks the pool: the items still pending are then
    retried one by one in fresh single-worker pools, so the crash costs only the file that caused it.
    """
    if n_workers <= 1 or len(items) < 4:
        for item in tqdm(items, desc=desc, disable=not sys.stderr.isatty()):
            yield item, tokenize_item(item, tokenizer)
        return
    todo = list(items)
    with cf.ProcessPoolExecutor(n_workers, initializer=_init_worker, initargs=(tokenizer.to_dict(),)) as pool:
        futures = [pool.submit(tokenize_item, item) for item in todo]
        for item, future in zip(todo, tqdm(futures, desc=desc, disable=not sys.stderr.isatty())):
            try:
                yield item, future.result()
            except cf.process.BrokenProcessPool:
                yield item, None  # marker: retry in isolation below
    # (the generator above yields None for every item whose worker pool broke)


def _isolated(item, tokenizer: MidiTokenizer):
    with cf.ProcessPoolExecutor(1, initializer=_init_worker, initargs=(tokenizer.to_dict(),)) as pool:
        try:
            return pool.submit(tokenize_item, item).result()
        except cf.process.BrokenProcessPool:
            return f"{item.label}: the MIDI parser crashed the worker process"


@dataclass
class SplitShards:
    """A built split: token and note memmaps plus the per-record index."""

    root: Path
    tokens: np.ndarray
    notes: np.ndarray
    index: pd.DataFrame

    @classmethod
    def open(cls, root: str | Path) -> SplitShards:
        root = Path(root)
        index = pd.read_parquet(root / "index.parquet")
        n_tokens = int((index["token_count"]).sum())
        tokens = (
            np.memmap(root / "tokens.u16", dtype=np.uint16, mode="r", shape=(n_tokens,))
            if n_tokens
            else np.zeros(0, np.uint16)
        )
        notes = np.load(root / "notes.npy", mmap_mode="r")
        return cls(root, tokens, notes, index)

    def __len__(self) -> int:
        return len(self.index)

    def record_tokens(self, i: int) -> np.ndarray:
        row = self.index.iloc[i]
        return self.tokens[row.token_offset : row.token_offset + row.token_count]

    def record_notes(self, i: int, first: int = 0, count: int | None = None) -> pd.DataFrame:
        row = self.index.iloc[i]
        count = row.note_count - first if count is None else min(count, row.note_count - first)
        array = self.notes[row.note_offset + first : row.note_offset + first + count]
        return make_notes(array["pitch"], array["velocity"], array["start"], array["end"])

    def record_source(self, i: int) -> dict:
        return json.loads(self.index.iloc[i].source)

    @property
    def n_tokens(self) -> int:
        return int(self.index["token_count"].sum())

    @property
    def n_notes(self) -> int:
        return int(self.index["note_count"].sum())


def build_split(
    items: list, tokenizer: MidiTokenizer, root: str | Path, n_workers: int | None = None, desc: str = ""
) -> SplitShards:
    root = Path(root)
    tmp = root.with_name(root.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    n_workers = n_workers if n_workers is not None else (os.cpu_count() or 1)

    rows, errors = [], []
    token_offset = note_offset = 0
    with open(tmp / "tokens.u16", "wb") as token_file, open(tmp / "notes.raw", "wb") as note_file:
        for item, result in _map_items(items, tokenizer, n_workers, desc or f"tokenizing {root.name}"):
            if result is None:
                result = _isolated(item, tokenizer)
            if isinstance(result, str):
                errors.append({"item": item.label, "error": result})
                print(f"skipped {result}", file=sys.stderr)
                continue
            for tokens, notes, source in result:
                token_file.write(tokens.tobytes())
                note_file.write(notes.tobytes())
                rows.append(
                    {
                        "token_offset": token_offset,
                        "token_count": len(tokens),
                        "note_offset": note_offset,
                        "note_count": len(notes),
                        "duration": float(notes["end"].max()),
                        "source": source,
                    }
                )
                token_offset += len(tokens)
                note_offset += len(notes)
    raw = np.fromfile(tmp / "notes.raw", dtype=NOTE_DTYPE)
    np.save(tmp / "notes.npy", raw)
    (tmp / "notes.raw").unlink()
    columns = ["token_offset", "token_count", "note_offset", "note_count", "duration", "source"]
    pd.DataFrame(rows, columns=columns).to_parquet(tmp / "index.parquet")
    (tmp / "errors.json").write_text(json.dumps(errors, indent=1))
    manifest = {
        "format": SHARD_FORMAT,
        "records": len(rows),
        "tokens": token_offset,
        "notes": note_offset,
        "items": len(items),
        "errors": len(errors),
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    shutil.rmtree(root, ignore_errors=True)
    os.replace(tmp, root)
    return SplitShards.open(root)


def build_shards(
    dataset_cfg: dict,
    tokenizer: MidiTokenizer,
    cache_dir: str | Path = "tmp/shards",
    splits: tuple[str, ...] = ("train", "validation"),
    n_workers: int | None = None,
) -> dict[str, SplitShards]:
    """Shards for each split, built once per (dataset config, tokenizer) and reused after."""
    root = (
        Path(cache_dir)
        / f"{dataset_cfg.get('name', dataset_cfg.get('type'))}-{shards_key(dataset_cfg, tokenizer)}"
    )
    built = {}
    for split in splits:
        split_root = root / split
        if (split_root / "manifest.json").exists():
            built[split] = SplitShards.open(split_root)
            continue
        items = dataset_items(dataset_cfg, split)
        built[split] = build_split(items, tokenizer, split_root, n_workers, desc=f"tokenizing {split}")
        manifest = json.loads((split_root / "manifest.json").read_text())
        print(
            f"built {split}: {manifest['records']} records, {manifest['notes']} notes, "
            f"{manifest['tokens']} tokens ({manifest['errors']} items skipped) in {split_root}",
            file=sys.stderr,
        )
    return built

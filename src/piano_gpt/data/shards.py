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
import contextlib
import errno
import hashlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from piano_gpt.data.records import MAX_PAUSE, cut_at_pauses
from piano_gpt.data.sources import MidiFileItem, dataset_fingerprint, dataset_items, item_notes, item_source
from piano_gpt.midi import MAX_NOTES, MAX_SECONDS, MidiReadError, make_notes
from piano_gpt.tokenizers import MidiTokenizer, tokenizer_from_dict

NOTE_DTYPE = np.dtype([("pitch", "u1"), ("velocity", "u1"), ("start", "f8"), ("end", "f8")])
SHARD_FORMAT = 1
MIN_RECORD_NOTES = 8
ITEM_TIMEOUT = 600.0  # seconds one item may take in a worker before it counts as hung (docs/reliability.md)

_worker_tokenizer: MidiTokenizer | None = None


def _init_worker(tokenizer_dict: dict) -> None:
    global _worker_tokenizer
    _worker_tokenizer = tokenizer_from_dict(tokenizer_dict)


def tokenize_item(item, tokenizer: MidiTokenizer | None = None, max_pause: float = MAX_PAUSE):
    """One item -> list of (tokens, notes, source_json), or an error string naming the item."""
    tokenizer = tokenizer or _worker_tokenizer
    try:
        notes = item_notes(item)
        problem = notes_problem(notes)
        if problem:
            return f"{_label(item)}: {problem}"
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
        return out or f"{_label(item)}: {no_record_reason(notes)}"
    except MidiReadError as error:
        return str(error)
    except (Exception, SystemExit) as error:  # any other failure of one item is reported, never fatal
        return f"{_label(item)}: {type(error).__name__}: {error}"


def notes_problem(notes) -> str | None:
    """Why a note table (e.g. of a dataset record, which read_notes never saw) is refused, or None:
    the limits read_notes applies to MIDI files (tokens, and so memory, grow with notes and time)."""
    if len(notes) > MAX_NOTES:
        return f"more than {MAX_NOTES} notes"
    if len(notes) == 0:
        return None
    start, end = notes["start"].to_numpy(np.float64), notes["end"].to_numpy(np.float64)
    if not (np.isfinite(start).all() and np.isfinite(end).all()):
        return "note times are not finite"
    if end.max() > MAX_SECONDS or start.min() < -MAX_SECONDS:
        return f"notes span beyond the {MAX_SECONDS:.0f} s limit"
    if end.max() <= start.min():
        return f"all {len(notes)} notes sound at one instant, for no time (a zero tempo?)"
    return None


def no_record_reason(notes: pd.DataFrame) -> str:
    """Why a note table that read fine gave no record (every item ends as records or a reason)."""
    if len(notes) == 0:
        return "no notes"
    pitch = notes["pitch"].to_numpy()
    piano = notes[(pitch >= 21) & (pitch <= 108)]
    if len(piano) == 0:
        return f"no notes in the piano range (pitches 21-108): all {len(notes)} are outside it"
    return (
        f"too few notes: {len(piano)} piano notes; a record needs {MIN_RECORD_NOTES} "
        f"between pauses of more than {MAX_PAUSE:g} s"
    )


def _label(item) -> str:
    try:
        return str(item.label)
    except Exception:  # a broken item still gets reported
        return repr(item)[:200]


def shards_key(dataset_cfg: dict, tokenizer: MidiTokenizer) -> str:
    """Shards depend on what the dataset config names, on the contents of the files it is made from
    (a bad file replaced by a good one rebuilds) and on the tokenizer's note encoding.

    Special tokens (composers, tasks) never appear in encoded notes, so they are left out of the key:
    adding them to a tokenizer does not re-tokenize a corpus.
    """
    relevant = {k: dataset_cfg.get(k) for k in ("type", "path", "base_datasets", "extra_datasets")}
    encoding = _without_special_tokens(tokenizer.to_dict())
    payload = json.dumps(
        {
            "dataset": relevant,
            "contents": dataset_fingerprint(dataset_cfg),
            "tokenizer": encoding,
            "format": SHARD_FORMAT,
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def _without_special_tokens(data):
    if isinstance(data, dict):
        return {k: _without_special_tokens(v) for k, v in data.items() if k != "special_tokens"}
    return data


def _pool(n_workers: int, tokenizer: MidiTokenizer) -> cf.ProcessPoolExecutor:
    return cf.ProcessPoolExecutor(n_workers, initializer=_init_worker, initargs=(tokenizer.to_dict(),))


def _stop_pool(pool: cf.ProcessPoolExecutor, kill: bool) -> None:
    """Shut a pool down; ``kill`` first kills its workers (a hung one would never return)."""
    if kill:
        # ProcessPoolExecutor has no public way to stop a busy worker before Python 3.14.
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            process.kill()
    pool.shutdown(wait=True, cancel_futures=True)


def _isolated(item, tokenizer: MidiTokenizer, timeout: float = ITEM_TIMEOUT, work=tokenize_item):
    """The result of one item in a fresh one-worker pool; an error string if that worker dies or hangs."""
    pool = _pool(1, tokenizer)
    kill = True
    try:
        result = pool.submit(work, item).result(timeout=timeout)
        kill = False
        return result
    except cf.TimeoutError:
        return f"{_label(item)}: still parsing after {timeout:g} s (a hung parser?); stopped"
    except cf.process.BrokenProcessPool:
        return f"{_label(item)}: the MIDI parser crashed the worker process"
    except Exception as error:  # e.g. a result that cannot be sent back
        kill = False
        return f"{_label(item)}: {type(error).__name__}: {error}"
    finally:
        _stop_pool(pool, kill)


def _map_items(
    items,
    tokenizer: MidiTokenizer,
    n_workers: int,
    desc: str,
    timeout: float = ITEM_TIMEOUT,
    work=tokenize_item,
):
    """Yield (item, result) in order, parsing in worker processes (``work(item)``: a top-level function
    returning a result or an error string; default :func:`tokenize_item`).

    MIDI files are always parsed in worker processes (a native parser can crash or hang on a hostile
    file); records alone are worked in-process when ``n_workers <= 1`` or there are few of them.
    A worker that dies breaks the pool: the item being waited for is retried alone in a fresh
    one-worker pool (and reported if it crashes there too), results that already arrived are kept,
    and a new pool takes the rest. An item still running after ``timeout`` seconds is reported as
    hung and the pool's workers are killed. So a crash or a hang costs the file that caused it (plus a
    retry of the few files in flight with it), never the build, nor the parallelism of the rest.
    """
    progress = tqdm(total=len(items), desc=desc, disable=not sys.stderr.isatty())
    parses_midi = any(isinstance(item, MidiFileItem) for item in items)
    if not parses_midi and (n_workers <= 1 or len(items) < 4):
        for item in items:
            yield item, work(item, tokenizer)
            progress.update(1)
        progress.close()
        return
    done: dict[int, object] = {}  # results that arrived ahead of their turn when a pool broke
    i = 0
    while i < len(items):
        pool = _pool(max(1, n_workers), tokenizer)
        futures = {j: pool.submit(work, items[j]) for j in range(i, len(items)) if j not in done}
        broken = None
        try:
            while i < len(items):
                if i not in done:
                    try:
                        done[i] = futures[i].result(timeout=timeout)
                    except cf.TimeoutError:
                        # Workers take items in order, so item i has been running all this time.
                        broken = (
                            f"{_label(items[i])}: still parsing after {timeout:g} s (a hung parser?); stopped"
                        )
                        break
                    except cf.process.BrokenProcessPool:
                        broken = "crash"
                        break
                    except Exception as error:  # e.g. a result that cannot be sent back
                        done[i] = f"{_label(items[i])}: {type(error).__name__}: {error}"
                yield items[i], done.pop(i)
                progress.update(1)
                i += 1
        finally:
            if broken:
                for j, future in futures.items():
                    if j > i and future.done() and not future.cancelled() and future.exception() is None:
                        done[j] = future.result()
            _stop_pool(pool, kill=broken is not None or i < len(items))
        if broken:
            # A crash: item i may have caused it or been in flight with the culprit; retry it alone.
            yield items[i], _isolated(items[i], tokenizer, timeout, work) if broken == "crash" else broken
            progress.update(1)
            i += 1
    progress.close()


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


def map_midi_files(paths: list, work, desc: str = "reading MIDI files", timeout: float = ITEM_TIMEOUT):
    """Yield (path, ``work(MidiFileItem)``) for untrusted MIDI files, each parsed in a worker process: a
    file that crashes or hangs the parser costs only itself (its result is an error string)."""
    from piano_gpt.tokenizers import ExponentialTimeTokenizer  # the workers' (unused) tokenizer

    items = [MidiFileItem(str(path), "{}") for path in paths]
    n_workers = min(os.cpu_count() or 1, max(1, len(items)))
    for item, result in _map_items(items, ExponentialTimeTokenizer(), n_workers, desc, timeout, work):
        yield item.path, result


def build_split(
    items: list,
    tokenizer: MidiTokenizer,
    root: str | Path,
    n_workers: int | None = None,
    desc: str = "",
    item_timeout: float = ITEM_TIMEOUT,
) -> SplitShards:
    """Tokenize every item into ``root``; items that fail (unreadable, crash or hang the parser) are
    skipped and listed with the reason in ``errors.json``."""
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_builds(root)
    # Each builder writes its own folder: two runs building the same cache at once never share one.
    tmp = Path(tempfile.mkdtemp(prefix=f"{root.name}.building-{os.getpid()}-", dir=root.parent))
    n_workers = n_workers if n_workers is not None else (os.cpu_count() or 1)

    rows, errors = [], []
    with_records = 0
    token_offset = note_offset = 0
    with open(tmp / "tokens.u16", "wb") as token_file, open(tmp / "notes.raw", "wb") as note_file:
        for item, result in _map_items(
            items, tokenizer, n_workers, desc or f"tokenizing {root.name}", timeout=item_timeout
        ):
            if isinstance(result, str):
                errors.append({"item": _label(item), "error": result})
                print(f"skipped {result}", file=sys.stderr)
                continue
            with_records += 1
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
    if with_records + len(errors) != len(items):  # the accounting: no item is lost without a word
        raise RuntimeError(f"{len(items)} items gave {with_records} with records and {len(errors)} errors")
    manifest = {
        "format": SHARD_FORMAT,
        "records": len(rows),
        "tokens": token_offset,
        "notes": note_offset,
        "items": len(items),
        "items_with_records": with_records,
        "errors": len(errors),
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    _publish(tmp, root)
    return SplitShards.open(root)


def _publish(tmp: Path, root: Path) -> None:
    """Move a finished build into place by renames: a reader sees a whole split, old or new. Two
    builders of one split (two runs started at once) both succeed; the last one's folder stays."""
    for _ in range(100):
        if root.exists():  # the previous build: set aside whole, then removed
            stale = Path(tempfile.mkdtemp(prefix=f"{root.name}.stale-", dir=root.parent))
            with contextlib.suppress(FileNotFoundError):  # another builder set it aside first
                os.replace(root, stale / root.name)
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.replace(tmp, root)
            return
        except OSError as error:  # another builder published between the two renames: again
            if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
    raise RuntimeError(f"could not publish {root}: other builds keep replacing it")


def _remove_abandoned_builds(root: Path) -> None:
    """Remove the build folders of ``root`` whose builder process is gone (killed mid-build)."""
    for folder in root.parent.glob(f"{root.name}.building-*"):
        pid = folder.name.removeprefix(f"{root.name}.building-").split("-", 1)[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


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
        print(build_summary(split, manifest, split_root), file=sys.stderr)
    return built


def build_summary(split: str, manifest: dict, root: Path) -> str:
    """One line on a built split; its item counts add up (items = with records + skipped)."""
    return (
        f"built {split}: {manifest['items']} items = {manifest['items_with_records']} with records + "
        f"{manifest['errors']} skipped (reasons in {root / 'errors.json'}); {manifest['records']} records, "
        f"{manifest['notes']} notes, {manifest['tokens']} tokens in {root}"
    )

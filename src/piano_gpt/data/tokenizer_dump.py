"""The tokenizer dataset: a dataset split, tokenized by a base tokenizer and augmented, dumped as text,
one record per line and one character per base token (:func:`piano_gpt.tokenizers.awesome.base_ids_to_text`),
which the BPE ("awesome") tokenizer trains on.

Records are cut as the training shards cut them (:func:`piano_gpt.data.shards.tokenize_item`); each is
augmented once (pitch shift / speed change drawn from the dataset's ``augmentation``, seeded per item,
so the dump is deterministic). Lines are written as they come (to ``<path>.partial``, renamed when
complete); a file that cannot be read is reported and skipped.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator, Sized
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from piano_gpt.data.shards import tokenize_item
from piano_gpt.data.sources import dataset_items
from piano_gpt.midi import augment, make_notes
from piano_gpt.tokenizers import MidiTokenizer
from piano_gpt.tokenizers.awesome import base_ids_to_text

DUMP_FORMAT = 1
AUGMENTATION_SEED = 0  # fixed: the dump is a function of the configs its hash covers


def write_tokenizer_dataset(
    dataset_cfg: dict,
    base: MidiTokenizer,
    path: str | os.PathLike,
    split: str = "train",
    progress: bool = True,
    items: Iterable | None = None,
) -> dict:
    """Stream the tokenized, augmented ``split`` of ``dataset_cfg`` (or the given ``items``) into
    ``path``; returns counts (files, skipped, records, notes, tokens) and the skipped files' errors."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    items = dataset_items(dataset_cfg, split) if items is None else items
    augmentation = dataset_cfg.get("augmentation") or {}
    max_shift = int(augmentation.get("max_pitch_shift") or 0)
    factors = [float(f) for f in augmentation.get("speed_change_factors") or []]
    augmenting = max_shift > 0 or any(f != 1.0 for f in factors)
    stats = {"files": 0, "skipped": 0, "records": 0, "notes": 0, "tokens": 0, "errors": []}
    partial = path.with_name(path.name + ".partial")
    total = len(items) if isinstance(items, Sized) else None
    bar = tqdm(
        items, desc=f"tokenizing {split}", unit="file", total=total, disable=not progress, file=sys.stderr
    )
    with open(partial, "w", encoding="utf-8", newline="\n") as out:
        for index, item in enumerate(bar):
            stats["files"] += 1
            result = tokenize_item(item, base)
            if isinstance(result, str):
                stats["skipped"] += 1
                stats["errors"].append(result)
                tqdm.write(f"skipped {result}", file=sys.stderr)
                continue
            rng = np.random.default_rng([AUGMENTATION_SEED, index])
            for tokens, notes, _source in result:
                if augmenting:
                    table = make_notes(notes["pitch"], notes["velocity"], notes["start"], notes["end"])
                    tokens = base.encode(augment(table, rng, max_shift, factors))
                if len(tokens) == 0:
                    continue
                out.write(base_ids_to_text(tokens))
                out.write("\n")
                stats["records"] += 1
                stats["notes"] += len(notes)
                stats["tokens"] += len(tokens)
            out.flush()  # the dump grows file by file
            bar.set_postfix(tokens=stats["tokens"], refresh=False)
    bar.close()
    os.replace(partial, path)
    return stats


def dump_lines(path: str | os.PathLike) -> Iterator[str]:
    """The records of a tokenizer dataset dump, one text per line, read as they are needed."""
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            line = line.rstrip("\n")
            if line:
                yield line

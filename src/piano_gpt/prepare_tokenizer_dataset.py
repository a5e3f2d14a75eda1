"""python -m piano_gpt.prepare_tokenizer_dataset [dataset=...] [tokenizer.vocab_size=...]

Dumps the train split of the configured dataset, tokenized by the awesome tokenizer's base tokenizer
and augmented as the dataset config says, to ``<tokenizer_datasets_dir>/<hash>.txt``: one record per
line, one character per base token (:func:`piano_gpt.tokenizers.awesome.base_ids_to_text`), the text
``python -m piano_gpt.train_tokenizer`` trains on. Records are cut as the training shards cut them
(:func:`piano_gpt.data.shards.tokenize_item`); each is augmented once (pitch shift / speed change
drawn from the dataset's ``augmentation``, seeded per item, so the dump is deterministic). Lines are
written as they come (to ``<hash>.txt.partial``, renamed when complete); a file that cannot be read is
reported and skipped. The hash covers the dataset config and the base tokenizer config only, so
tokenizers of several vocabulary sizes share one dump.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from collections.abc import Iterable, Sized
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from piano_gpt.data.shards import tokenize_item
from piano_gpt.data.sources import dataset_items
from piano_gpt.midi import augment, make_notes
from piano_gpt.tokenizers import MidiTokenizer
from piano_gpt.tokenizers.awesome import (
    _plain,
    base_ids_to_text,
    base_tokenizer_from_config,
    tokenizer_config_hash,
)

DUMP_FORMAT = 1
AUGMENTATION_SEED = 0  # fixed: the dump is a function of the configs its hash covers


def tokenizer_dataset_path(cfg: DictConfig) -> Path:
    """``<tokenizer_datasets_dir>/<hash of the dataset config and the base tokenizer config>.txt``."""
    base = _plain(cfg.tokenizer).get("base") or {}
    key = tokenizer_config_hash(_plain(cfg.dataset), {"base": base, "dump_format": DUMP_FORMAT})
    return Path(str(cfg.tokenizer_datasets_dir)).expanduser() / f"{key}.txt"


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


def command_overrides() -> list[str]:
    """This command line's overrides (to repeat them in advice)."""
    from hydra.core.hydra_config import HydraConfig

    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:
        return []


def with_overrides(script: str, overrides: list[str]) -> str:
    return f"python -m piano_gpt.{script}" + "".join(f" {shlex.quote(o)}" for o in overrides)


def prepare(cfg: DictConfig) -> Path:
    """Write the dump ``cfg`` names unless it is there already (or ``overwrite``); returns its path."""
    path = tokenizer_dataset_path(cfg)
    if path.exists() and not cfg.get("overwrite", False):
        print(f"tokenizer dataset already there: {path} (overwrite=true rebuilds it)", file=sys.stderr)
        return path
    dataset_cfg = OmegaConf.to_container(cfg.dataset, resolve=True)
    base = base_tokenizer_from_config(cfg.tokenizer)
    started = time.time()
    stats = write_tokenizer_dataset(dataset_cfg, base, path, progress=bool(cfg.get("progress_bar", True)))
    info = {
        "dataset": dataset_cfg,
        "base_tokenizer": base.to_dict(),
        "augmentation_seed": AUGMENTATION_SEED,
        "format": DUMP_FORMAT,
        **stats,
        "seconds": round(time.time() - started, 1),
    }
    path.with_suffix(".json").write_text(json.dumps(info, indent=1))
    print(
        f"wrote {path}: {stats['records']} records, {stats['notes']} notes, {stats['tokens']} base tokens "
        f"from {stats['files'] - stats['skipped']} files ({stats['skipped']} skipped)",
        file=sys.stderr,
    )
    return path


@hydra.main(config_path="configs", config_name="tokenizer_training", version_base=None)
def main(cfg: DictConfig) -> None:
    try:
        path = prepare(cfg)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    print(path)
    print(f"next: {with_overrides('train_tokenizer', command_overrides())}", file=sys.stderr)


if __name__ == "__main__":
    main()

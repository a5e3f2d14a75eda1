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
import shlex
import sys
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from piano_gpt.commands.base import hydra_command
from piano_gpt.data.tokenizer_dump import AUGMENTATION_SEED, DUMP_FORMAT, write_tokenizer_dataset
from piano_gpt.tokenizers.awesome import base_tokenizer_from_config, plain_dict, tokenizer_config_hash


def tokenizer_dataset_path(cfg: DictConfig) -> Path:
    """``<tokenizer_datasets_dir>/<hash of the dataset config and the base tokenizer config>.txt``."""
    base = plain_dict(cfg.tokenizer).get("base") or {}
    key = tokenizer_config_hash(plain_dict(cfg.dataset), {"base": base, "dump_format": DUMP_FORMAT})
    return Path(str(cfg.tokenizer_datasets_dir)).expanduser() / f"{key}.txt"


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


@hydra_command("tokenizer_training", also=(ValueError,))
def main(cfg: DictConfig) -> None:
    print(prepare(cfg))
    print(f"next: {with_overrides('train_tokenizer', command_overrides())}", file=sys.stderr)


if __name__ == "__main__":
    main()

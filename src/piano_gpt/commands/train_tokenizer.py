"""python -m piano_gpt.train_tokenizer [dataset=...] [tokenizer.vocab_size=...]

Trains an :class:`~piano_gpt.tokenizers.awesome.AwesomeMidiTokenizer` on the dump
``python -m piano_gpt.prepare_tokenizer_dataset`` wrote for the same overrides, and saves it as
``<tokenizer.tokenizers_dir>/awesome-<dataset name>-<hash>.json`` (the hash of the dataset and tokenizer
configs), where ``python -m piano_gpt.train tokenizer=awesome`` with the same overrides finds it.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from omegaconf import DictConfig

from piano_gpt.commands.base import hydra_command
from piano_gpt.commands.prepare_tokenizer_dataset import (
    command_overrides,
    tokenizer_dataset_path,
    with_overrides,
)
from piano_gpt.data.tokenizer_dump import dump_lines
from piano_gpt.tokenizers.awesome import (
    AwesomeMidiTokenizer,
    base_tokenizer_from_config,
    trained_tokenizer_path,
)


def train_from_dump(
    dump_path: str | os.PathLike, tokenizer_cfg, progress: bool = False
) -> AwesomeMidiTokenizer:
    """An awesome tokenizer as ``tokenizer_cfg`` (vocab_size, max_token_length, base) says, from a dump."""
    return AwesomeMidiTokenizer.train(
        base_tokenizer_from_config(tokenizer_cfg),
        dump_lines(dump_path),
        vocab_size=int(tokenizer_cfg["vocab_size"]),
        max_token_length=int(tokenizer_cfg.get("max_token_length", 128)),
        show_progress=progress,
    )


class MissingDumpError(FileNotFoundError):
    pass


def train_tokenizer(cfg: DictConfig, overrides: list[str] | None = None) -> Path:
    """Train the tokenizer ``cfg`` names from its dump and save it; returns the file."""
    if cfg.tokenizer.get("name") != "awesome":
        raise ValueError(f"tokenizer={cfg.tokenizer.get('name')}: only the awesome tokenizer is trained")
    dump = tokenizer_dataset_path(cfg)
    if not dump.exists():
        raise MissingDumpError(
            f"no tokenizer dataset at {dump}: run first\n"
            f"  {with_overrides('prepare_tokenizer_dataset', overrides or [])}"
        )
    path = trained_tokenizer_path(cfg.dataset, cfg.tokenizer)
    started = time.time()
    tokenizer = train_from_dump(dump, cfg.tokenizer, progress=bool(cfg.get("progress_bar", True)))
    tokenizer.save(path)
    print(
        f"trained {tokenizer.vocab_size} tokens (asked for {cfg.tokenizer.vocab_size}) on {dump} "
        f"in {time.time() - started:.0f} s",
        file=sys.stderr,
    )
    return path


@hydra_command("tokenizer_training", also=(ValueError,))
def main(cfg: DictConfig) -> None:
    print(train_tokenizer(cfg, command_overrides()))


if __name__ == "__main__":
    main()

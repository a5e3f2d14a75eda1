"""python -m piano_gpt.eval init_from=DIR [split=validation|test|train] [dataset=demo|maestro] [max_records=N]

Loss evaluation of a checkpoint on a dataset split: mean token loss, bits per note and bits per second
of music, reading whole records in context-size windows (``piano_gpt.evaluation.loss``). Prints the
figures as JSON (and writes them to ``out_path`` when set). Options: ``configs/eval.yaml``.
"""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from piano_gpt.commands.base import CommandError, hydra_command
from piano_gpt.common import pick_device
from piano_gpt.evaluation.loss import evaluate_loss
from piano_gpt.evaluation.piano_eval import open_split
from piano_gpt.train.checkpoint import load_checkpoint


@hydra_command("eval", also=(ValueError,))
def main(cfg: DictConfig) -> None:
    path = cfg.get("init_from") or cfg.get("checkpoint_path")
    if not path:
        raise CommandError("name the checkpoint: init_from=DIR (or checkpoint_path=DIR)")
    model, tokenizer, _ = load_checkpoint(path, device=pick_device(cfg.device))
    dataset = OmegaConf.to_container(cfg.dataset, resolve=True)
    shards = open_split(dataset, tokenizer, str(cfg.split), str(cfg.shards_dir))
    figures = evaluate_loss(
        model,
        tokenizer,
        shards,
        context_size=cfg.context_size,
        max_records=cfg.max_records,
        batch_size=int(cfg.batch_size),
    )
    figures = {"checkpoint": str(path), "dataset": dataset.get("name"), "split": str(cfg.split), **figures}
    text = json.dumps(figures, indent=1)
    if cfg.out_path:
        Path(cfg.out_path).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.out_path).write_text(text)
    print(text)


if __name__ == "__main__":
    main()

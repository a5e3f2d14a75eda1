"""python -m piano_gpt.eval init_from=DIR [split=validation|test|train] [dataset=demo|maestro] [max_records=N]

Loss evaluation of a checkpoint on a dataset split: mean token loss, bits per note and bits per second
of music, reading whole records in context-size windows (``piano_gpt.evaluation.loss``). Prints the
figures as JSON (and writes them to ``out_path`` when set). Options: ``configs/eval.yaml``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf


@hydra.main(config_path="configs", config_name="eval", version_base=None)
def main(cfg: DictConfig) -> None:
    from piano_gpt.evaluation.loss import evaluate_loss
    from piano_gpt.evaluation.piano_eval import EvaluationError, open_split, pick_device
    from piano_gpt.train.checkpoint import CheckpointError, load_checkpoint

    path = cfg.get("init_from") or cfg.get("checkpoint_path")
    try:
        if not path:
            raise EvaluationError("name the checkpoint: init_from=DIR (or checkpoint_path=DIR)")
        device = pick_device(str(cfg.device))
        model, tokenizer, _ = load_checkpoint(path, device=device)
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
    except (EvaluationError, CheckpointError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    figures = {"checkpoint": str(path), "dataset": dataset.get("name"), "split": str(cfg.split), **figures}
    text = json.dumps(figures, indent=1)
    if cfg.out_path:
        Path(cfg.out_path).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.out_path).write_text(text)
    print(text)


if __name__ == "__main__":
    main()

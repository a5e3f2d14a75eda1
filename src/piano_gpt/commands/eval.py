"""python -m piano_gpt.eval init_from=DIR [split=validation|test|train] [dataset=demo|maestro] [max_records=N]

Loss evaluation of a checkpoint on a dataset split: mean token loss, bits per note and bits per second
of music, reading whole records in context-size windows (``piano_gpt.evaluation.loss``). Prints the
figures as JSON (and writes them to ``out_path`` when set).

With ``continuation=true``: continuations of the first ``prompt_notes`` notes of ``n_prompts`` pieces,
compared with what the performers played (``piano_gpt.evaluation.continuation``); prints a markdown
table, writes JSON to ``out_path`` (and the table beside it). Options: ``configs/eval.yaml``.
"""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from piano_gpt.commands.base import CommandError, hydra_command, sampling_options
from piano_gpt.common import pick_device
from piano_gpt.data.sources import dataset_items, item_notes
from piano_gpt.evaluation.continuation import continuation_prompts, evaluate_continuations, format_markdown
from piano_gpt.evaluation.loss import evaluate_loss
from piano_gpt.evaluation.piano_eval import open_split
from piano_gpt.train.checkpoint import find_checkpoint, load_checkpoint


def continuation_figures(cfg: DictConfig, model, tokenizer, dataset: dict) -> tuple[dict, str]:
    items = dataset_items(dataset, str(cfg.split))
    pieces = [(item.label, item_notes(item)) for item in items]
    prompts = continuation_prompts(
        pieces, int(cfg.n_prompts), int(cfg.prompt_notes), float(cfg.continuation_seconds)
    )
    if not prompts:
        raise CommandError(
            f"no piece of the {cfg.split} split has more than prompt_notes={cfg.prompt_notes} notes"
        )
    result = evaluate_continuations(
        model,
        tokenizer,
        prompts,
        float(cfg.continuation_seconds),
        **sampling_options(cfg),
        seed=int(cfg.seed),
        grammar=bool(cfg.grammar),
        max_note_seconds=None if cfg.max_note_seconds is None else float(cfg.max_note_seconds),
        max_new_tokens=4096,
    )
    return result, format_markdown(result)


@hydra_command("eval", also=(ValueError,))
def main(cfg: DictConfig) -> None:
    path = cfg.get("init_from") or cfg.get("checkpoint_path")
    if not path:
        raise CommandError("name the checkpoint: init_from=DIR (or checkpoint_path=DIR)")
    path = find_checkpoint(path)  # a run folder: its -best
    model, tokenizer, _ = load_checkpoint(path, device=pick_device(cfg.device))
    dataset = OmegaConf.to_container(cfg.dataset, resolve=True)
    header = {"checkpoint": str(path), "dataset": dataset.get("name"), "split": str(cfg.split)}
    markdown = None
    if cfg.continuation:
        figures, markdown = continuation_figures(cfg, model, tokenizer, dataset)
    else:
        shards = open_split(dataset, tokenizer, str(cfg.split), str(cfg.shards_dir))
        figures = evaluate_loss(
            model,
            tokenizer,
            shards,
            context_size=cfg.context_size,
            max_records=cfg.max_records,
            batch_size=int(cfg.batch_size),
        )
    text = json.dumps({**header, **figures}, indent=1)
    if cfg.out_path:
        out = Path(cfg.out_path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        if markdown:
            out.with_suffix(".md").write_text(markdown)
    print(markdown if markdown else text)


if __name__ == "__main__":
    main()

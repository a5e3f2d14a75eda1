"""python -m piano_gpt.piano_eval checkpoint_path=DIR [tasks=SET|TASK] [n_samples=N] [split=validation|test] [dataset=...]

The PIANO benchmark of a checkpoint against two baselines on the same samples (``init_from=DIR`` works
as in the original README; ``set_dir=DIR`` evaluates on an exported benchmark set). ``tasks=`` takes a
task set (``piano_default``, ``piano_legacy``, ...), a task name (``above_median_prediction``,
``top_line_masking-x1``) or a list (``tasks=[a,b]``).
Options: ``configs/piano_eval.yaml``; the library: ``piano_gpt.evaluation.piano_eval``.
"""

from __future__ import annotations

import sys

from omegaconf import DictConfig, OmegaConf

from piano_gpt.commands.base import CommandError, hydra_command, sampling_options
from piano_gpt.configs import CONFIG_DIR
from piano_gpt.evaluation.piano_eval import evaluate_checkpoint
from piano_gpt.evaluation.report import results_markdown
from piano_gpt.train.checkpoint import find_checkpoint


def task_overrides(argv: list[str]) -> list[str]:
    """``tasks=X`` -> ``tasks.names=X`` when X is not a file of the ``tasks`` config group (a single task
    name or a list), so every task name works on the command line."""
    out = []
    for arg in argv:
        if arg.startswith("tasks="):
            value = arg.split("=", 1)[1]
            if not (CONFIG_DIR / "tasks" / f"{value}.yaml").exists():
                arg = f"tasks.names={value}"
        out.append(arg)
    return out


def checkpoint_of(cfg: DictConfig) -> str:
    path = cfg.get("checkpoint_path") or cfg.get("init_from")
    if not path:
        raise CommandError("name the checkpoint: checkpoint_path=DIR (or init_from=DIR)")
    return str(find_checkpoint(path))  # a run folder: its -best


@hydra_command("piano_eval")
def run(cfg: DictConfig) -> None:
    results = evaluate_checkpoint(
        checkpoint_of(cfg),
        OmegaConf.to_container(cfg.tasks, resolve=True)["names"],
        int(cfg.n_samples),
        str(cfg.split),
        OmegaConf.to_container(cfg.dataset, resolve=True),
        seed=int(cfg.seed),
        out_dir=cfg.out_dir,
        device=str(cfg.device),
        notes_per_sample=None if cfg.notes_per_sample is None else int(cfg.notes_per_sample),
        budget_factor=float(cfg.budget_factor),
        **sampling_options(cfg),
        n_plots=int(cfg.n_plots),
        shards_dir=str(cfg.shards_dir),
        progress=True,
        set_dir=cfg.get("set_dir"),
    )
    print(results_markdown(results))
    print(f"results: {results['out_dir']}")


def main() -> None:
    sys.argv = [sys.argv[0], *task_overrides(sys.argv[1:])]
    run()


if __name__ == "__main__":
    main()

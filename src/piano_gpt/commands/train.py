"""python -m piano_gpt.train [--config-name=gpt2_pretraining|gpt2_piano|resume_training] key=value ..."""

from __future__ import annotations

import sys

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from piano_gpt.commands.base import hydra_command
from piano_gpt.train.checkpoint import find_checkpoint, read_checkpoint_config
from piano_gpt.train.config import command_line_problem
from piano_gpt.train.loop import summarize_log, train


def resume_config(cfg: DictConfig) -> tuple[DictConfig, str]:
    """The saved run config of ``checkpoint_path``, with this command line's other keys on top."""
    path = str(find_checkpoint(cfg.checkpoint_path, prefer="last"))  # a run folder: its -last
    saved = OmegaConf.create(read_checkpoint_config(path, verify=True).run)
    keys = [o.split("=", 1)[0].lstrip("+~") for o in HydraConfig.get().overrides.task]
    for key in keys:
        value = OmegaConf.select(cfg, key)
        if key in ("checkpoint_path", "resume", "force_resume") or isinstance(value, DictConfig):
            continue  # config groups (model=...) cannot change under a resumed run
        OmegaConf.update(saved, key, value, force_add=True)
    return saved, path


@hydra_command("gpt2_pretraining")
def run(cfg: DictConfig) -> None:
    resume_from = None
    force_resume = bool(cfg.get("force_resume", False))  # this command line's, never a saved one
    if cfg.get("resume"):
        cfg, resume_from = resume_config(cfg)
    run_dir = train(cfg, resume_from=resume_from, force_resume=force_resume)
    summary = summarize_log(run_dir)
    print(f"run: {run_dir}")
    print(f"val_loss: {summary['first_val_loss']} -> {summary['last_val_loss']}")


def main() -> None:
    problem = command_line_problem(sys.argv[1:])  # unknown keys, bad syntax: one line, before Hydra
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    run()


if __name__ == "__main__":
    main()

"""python -m piano_gpt.train [--config-name=gpt2_pretraining|gpt2_piano|resume_training] key=value ..."""

from __future__ import annotations

import os
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from piano_gpt.commands.base import CommandError, hydra_command
from piano_gpt.train.checkpoint import find_checkpoint, read_checkpoint_config
from piano_gpt.train.loop import summarize_log, train


def resume_config(cfg: DictConfig) -> tuple[DictConfig, str]:
    """The saved run config of ``checkpoint_path``, with this command line's other keys on top."""
    if OmegaConf.is_missing(cfg, "checkpoint_path") or not cfg.checkpoint_path:
        raise CommandError(
            "--config-name=resume_training needs the checkpoint to resume: checkpoint_path=DIR "
            "(a run's <run_name>-last folder)"
        )
    path = str(find_checkpoint(cfg.checkpoint_path, prefer="last"))  # a run folder: its -last
    saved = OmegaConf.create(read_checkpoint_config(path, verify=True).run)
    run_folder = Path(path).parent
    if run_folder.name == saved.get("run_name"):
        # The run goes on where its checkpoint lies now (a run folder copied or moved elsewhere
        # resumes there), not in the folder it was first written to.
        saved.out_dir = str(run_folder.parent)
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
    hydra = HydraConfig.get()
    if hydra.mode == RunMode.MULTIRUN and cfg.get("run_name") is None:  # -m: one run folder per job
        suffix = cfg.logging.get("wandb_run_name_suffix")
        cfg.logging.wandb_run_name_suffix = (
            f"{suffix}-job{hydra.job.num}" if suffix else f"job{hydra.job.num}"
        )
    if cfg.get("resume"):
        cfg, resume_from = resume_config(cfg)
    run_dir = train(cfg, resume_from=resume_from, force_resume=force_resume)
    if int(os.environ.get("RANK", 0)):
        return  # under torchrun, rank 0 says it once
    summary = summarize_log(run_dir)
    print(f"run: {run_dir}")
    print(f"val_loss: {summary['first_val_loss']} -> {summary['last_val_loss']}")


main = run


if __name__ == "__main__":
    main()

"""Config checks (one clear line before any heavy work) and the objects a config names."""

from __future__ import annotations

import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from piano_gpt.tokenizers import ExponentialTimeTokenizer, MidiTokenizer


class ConfigError(ValueError):
    """A config value that cannot work; the message says what to change."""


def fail(message: str) -> None:
    raise ConfigError(message)


def validate_config(cfg: DictConfig) -> None:
    data, opt = cfg.data, cfg.optimizer
    if data.batch_size <= 0:
        fail(f"data.batch_size={data.batch_size}: must be a positive number of sequences")
    if data.context_size <= 1:
        fail(f"data.context_size={data.context_size}: must be at least 2 tokens")
    micro = cfg.training.get("microbatch_size")
    if micro is not None and (micro <= 0 or data.batch_size % micro):
        fail(
            f"training.microbatch_size={micro}: must be positive and divide data.batch_size={data.batch_size}"
        )
    if opt.max_iters < 0:
        fail(f"optimizer.max_iters={opt.max_iters}: must be >= 0")
    if opt.gradient_accumulation_steps <= 0:
        fail(f"optimizer.gradient_accumulation_steps={opt.gradient_accumulation_steps}: must be >= 1")
    world = int(__import__("os").environ.get("WORLD_SIZE", 1))
    if opt.gradient_accumulation_steps % world:
        fail(
            f"optimizer.gradient_accumulation_steps={opt.gradient_accumulation_steps} must be a multiple of "
            f"the {world} processes (it is the global number of micro-batches per step)"
        )
    if cfg.lr.learning_rate <= 0 or cfg.lr.min_lr < 0:
        fail(f"lr.learning_rate={cfg.lr.learning_rate}, lr.min_lr={cfg.lr.min_lr}: must be positive")
    if cfg.eval_interval <= 0 or cfg.eval_iters <= 0:
        fail(f"eval_interval={cfg.eval_interval}, eval_iters={cfg.eval_iters}: must be >= 1")
    if cfg.system.dtype not in ("auto", "float32", "bfloat16", "float16"):
        fail(f"system.dtype={cfg.system.dtype}: use float32, bfloat16, float16 or auto")
    if cfg.task not in ("next_token_prediction", "next_token_prediction_with_composer", "piano_tasks"):
        fail(
            f"task={cfg.task}: use next_token_prediction, next_token_prediction_with_composer or piano_tasks"
        )
    if cfg.model.n_embd % cfg.model.n_head:
        fail(f"model.n_embd={cfg.model.n_embd} must be divisible by model.n_head={cfg.model.n_head}")
    if cfg.dataset.type == "maestro" and not Path(cfg.dataset.path).expanduser().is_dir():
        fail(f"dataset.path={cfg.dataset.path}: no such folder (point it at a MAESTRO-layout folder)")
    for init in (cfg.get("init_from"), cfg.get("checkpoint_path")):
        if init not in (None, "scratch") and not Path(init).exists():
            fail(f"checkpoint {init}: no such directory")
    if cfg.run_name is None:
        cfg.run_name = f"{cfg.model.name}-{cfg.dataset.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        suffix = cfg.logging.get("wandb_run_name_suffix")
        if suffix:
            cfg.run_name += f"-{suffix}"


def build_tokenizer(cfg: DictConfig) -> MidiTokenizer:
    tok = OmegaConf.to_container(cfg.tokenizer, resolve=True)
    name = tok.pop("name")
    if name == "exponential":
        return ExponentialTimeTokenizer(**tok)
    if name == "awesome":
        from piano_gpt.tokenizers.awesome import find_trained_tokenizer

        return find_trained_tokenizer(cfg)
    fail(f"tokenizer={name}: use exponential or awesome")

"""The training loop (after nanoGPT): read it top to bottom.

setup (DDP, device, precision) -> tokenizer -> data -> model -> optimizer -> [resume] -> loop:
    evaluate + checkpoint every ``eval_interval``; one optimizer step of gradient accumulation; log.

Sample ``i`` of the run is a pure function of (seed, i), and step ``s`` consumes the samples
``s * G * B ... (s + 1) * G * B - 1`` (G accumulation steps, B batch): that is what makes resume
exact and lets DDP ranks split the same global batch that a single process would see.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from piano_gpt import common
from piano_gpt.data.datasets import PretrainingDataset, composer_tokens_for, train_and_validation
from piano_gpt.data.shards import build_shards
from piano_gpt.data.task_datasets import make_task_datasets
from piano_gpt.model import GPT, GPTConfig
from piano_gpt.tasks import add_task_tokens
from piano_gpt.tokenizers import MidiTokenizer
from piano_gpt.train.checkpoint import (
    CheckpointError,
    capture_rng_state,
    load_checkpoint,
    load_training_state,
    optimizer_from_tensors,
    optimizer_state_from_tensors,
    optimizer_state_to_tensors,
    optimizer_to_tensors,
    restore_rng_state,
    resume_would_replace,
    save_checkpoint,
)
from piano_gpt.train.config import (
    ConfigError,
    build_tokenizer,
    model_checkpoint,
    optimizer_for,
    task_names,
    validate_config,
)
from piano_gpt.train.optimizers import build_optimizer


def peak_flops(cfg: DictConfig, device: str) -> float:
    """The FLOP/s that MFU is measured against: ``system.peak_flops``, else the device's (``common``)."""
    return common.peak_flops(device, cfg.system.get("peak_flops"))


def learning_rate(it: int, cfg: DictConfig) -> float:
    """Linear warm-up, then cosine decay to min_lr at lr_decay_iters, then min_lr."""
    lr = cfg.lr
    if not lr.get("decay_lr", True):
        return lr.learning_rate
    decay_iters = lr.lr_decay_iters or cfg.optimizer.max_iters
    if it < lr.warmup_iters:
        return lr.learning_rate * (it + 1) / (lr.warmup_iters + 1)
    if it > decay_iters:
        return lr.min_lr
    ratio = (it - lr.warmup_iters) / max(1, decay_iters - lr.warmup_iters)
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))
    return lr.min_lr + coeff * (lr.learning_rate - lr.min_lr)


def setup_distributed() -> tuple[bool, int, int, int]:
    """(ddp, rank, local_rank, world_size) from the torchrun environment."""
    if int(os.environ.get("RANK", -1)) == -1:
        return False, 0, 0, 1
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        # Naming the GPU binds NCCL to it (no guessing of the rank-to-GPU mapping, no barrier warning).
        dist.init_process_group(backend="nccl", device_id=torch.device(f"cuda:{local_rank}"))
    else:
        dist.init_process_group(backend="gloo")
    return True, dist.get_rank(), local_rank, dist.get_world_size()


def pick_device(cfg: DictConfig, local_rank: int) -> str:
    return common.pick_device(cfg.system.device, local_rank)


def pick_dtype(cfg: DictConfig, device_type: str) -> str:
    dtype = cfg.system.dtype
    if dtype != "auto":
        return dtype
    if device_type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "float32"


def build_model(cfg: DictConfig, tokenizer: MidiTokenizer) -> GPT:
    fields = {k: v for k, v in OmegaConf.to_container(cfg.model).items() if k != "name"}
    config = GPTConfig(block_size=cfg.data.context_size, vocab_size=tokenizer.vocab_size, **fields)
    return GPT(config)


def index_batches(
    first_step: int, max_iters: int, accumulation: int, batch: int, micro: int, rank: int, world: int
):
    """Sample indices of this rank's micro-batches, from ``first_step`` on, in training order."""
    for step in range(first_step, max_iters):
        for a in range(rank, accumulation, world):
            base = (step * accumulation + a) * batch
            for m in range(0, batch, micro):
                yield list(range(base + m, base + m + micro))


def check_resume_target(resume_from: str, run_dir: Path, run_name: str) -> None:
    """Refuse, in one line, a resume that would replace a newer or better checkpoint of ``run_dir``."""
    lost = resume_would_replace(resume_from, run_dir, run_name)
    if lost:
        raise CheckpointError(
            f"resuming {resume_from} into {run_dir} would replace its {lost}: resume into a new run "
            f"with run_name=<new name>, or add force_resume=true to replace it"
        )


def read_run_log(path: Path) -> list[dict]:
    """The rows of a run's log.jsonl. A torn last line (the process killed mid-write) is left out:
    the next write repairs the file. An unreadable line before the last is corruption:
    :class:`CheckpointError` in one line (the log is part of what a resume continues)."""
    if not path.exists():
        return []
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path}: unreadable ({error})") from error
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if (
                not isinstance(row, dict)
                or isinstance(row.get("iter"), bool)
                or not isinstance(row.get("iter"), int)
            ):
                raise ValueError("not an object with an integer iter")
        except ValueError as error:
            if number == len(lines):
                break  # torn by a kill mid-write: dropped
            raise CheckpointError(
                f"{path}: line {number} is corrupt ({error}); only a torn last line is repaired: "
                "fix or remove that line, or resume into a new run with run_name=<new name>"
            ) from error
        rows.append(row)
    return rows


class JsonlLog:
    """log.jsonl: one JSON object per logged step; on resume, lines past the checkpoint are dropped
    (and a torn last line with them)."""

    def __init__(self, path: Path, resume_iter: int | None):
        self.path = path
        if resume_iter is not None and path.exists():
            kept = [json.dumps(row) for row in read_run_log(path) if row["iter"] < resume_iter]
            path.write_text("".join(line + "\n" for line in kept))
        elif path.exists():
            path.unlink()

    def write(self, row: dict) -> None:
        with open(self.path, "a") as handle:
            handle.write(json.dumps(row) + "\n")


def train(cfg: DictConfig, resume_from: str | None = None, force_resume: bool = False) -> Path:
    """Run training as configured; returns the run directory.

    ``force_resume``: resume even where it replaces a newer ``-last`` or a better ``-best`` of the run
    it writes into (refused otherwise, see :func:`check_resume_target`)."""
    validate_config(cfg, resume_from)
    if resume_from and not force_resume:
        check_resume_target(resume_from, Path(cfg.out_dir) / cfg.run_name, cfg.run_name)
    if resume_from:
        read_run_log(Path(cfg.out_dir) / cfg.run_name / "log.jsonl")  # corrupt: refused before any work
    if cfg.logging.wandb_log:
        check_wandb_key(cfg.logging.get("wandb_mode"))
    ddp, rank, local_rank, world = setup_distributed()
    try:
        return run_training(cfg, resume_from, ddp, rank, local_rank, world)
    finally:
        if ddp:
            # The sharded model, its optimizer and their communication state are freed here, while
            # the interpreter is whole and the process group up: left to interpreter exit, their
            # tensors can be released from gloo's threads after Python has begun to shut down.
            gc.collect()
            dist.destroy_process_group()


def run_training(
    cfg: DictConfig, resume_from: str | None, ddp: bool, rank: int, local_rank: int, world: int
) -> Path:
    """The training loop of :func:`train`, inside its process group (``ddp``: under torchrun)."""
    # ---- setup ------------------------------------------------------------------------------------
    master = rank == 0
    fsdp = ddp and bool(cfg.system.get("fsdp", False))  # one process has nothing to shard
    device = pick_device(cfg, local_rank)
    device_type = "cuda" if device.startswith("cuda") else device
    dtype = pick_dtype(cfg, device_type)
    torch.manual_seed(cfg.seed + rank)
    if cfg.system.get("deterministic", True) and device_type == "cpu":
        torch.use_deterministic_algorithms(True)
    if device_type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    ptdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    autocast = (
        contextlib.nullcontext()
        if dtype == "float32"
        else torch.autocast(device_type=device_type, dtype=ptdtype)
    )
    scaler = torch.amp.GradScaler(device_type, enabled=(dtype == "float16"))

    accumulation = cfg.optimizer.gradient_accumulation_steps
    batch = cfg.data.batch_size
    micro = cfg.training.get("microbatch_size") or batch
    micro_steps_per_rank = (accumulation // world) * (batch // micro)
    tokens_per_step = accumulation * batch * cfg.data.context_size
    peak = peak_flops(cfg, device)

    # ---- tokenizer and data -----------------------------------------------------------------------
    init_from = model_checkpoint(cfg, resume_from)
    init_model = None
    if init_from:
        # Start from the checkpoint's own tokenizer: its special tokens keep their ids (and embeddings).
        init_model, tokenizer, _ = load_checkpoint(init_from)
    else:
        tokenizer = build_tokenizer(cfg)
    dataset_cfg = OmegaConf.to_container(cfg.dataset, resolve=True)
    # Rank 0 builds the shards; the others wait, then open what it built.
    if master:
        shards = build_shards(dataset_cfg, tokenizer, splits=("train", "validation"), n_workers=None)
    if ddp:
        dist.barrier()
    if not master:
        shards = build_shards(dataset_cfg, tokenizer, splits=("train", "validation"))
    with_composer = cfg.task == "next_token_prediction_with_composer"
    if with_composer:
        tokenizer.add_special_tokens(composer_tokens_for(shards["train"]))
    if cfg.task == "piano_tasks":  # after the shards (their key names the tokenizer), before the model
        add_task_tokens(tokenizer)  # placeholder slots: the vocabulary size (and a checkpoint's) is unchanged
    augmentation = cfg.dataset.get("augmentation") or {}
    model_cfg = cfg.model
    if cfg.task == "piano_tasks":
        train_data, val_data = make_task_datasets(
            tokenizer,
            shards,
            task_names(cfg),
            context_size=cfg.data.context_size,
            max_music_time=model_cfg.max_music_time,
            seed=cfg.seed,
            notes_per_record=cfg.data.get("notes_per_record") or 128,
            prompt_masking=bool(cfg.get("prompt_masking", False)),
            augmentation=augmentation,
        )
    else:
        train_data, val_data = train_and_validation(
            PretrainingDataset,
            shards,
            cfg.seed,
            augmentation,
            tokenizer=tokenizer,
            context_size=cfg.data.context_size,
            with_composer=with_composer,
            max_music_time=model_cfg.max_music_time,
        )

    # ---- model -------------------------------------------------------------------------------------
    if init_model is not None:
        model = init_model
        model.train()
    else:
        model = build_model(cfg, tokenizer)
    # What checkpoints save: with FSDP, an unsharded copy kept on rank 0, taken while the model is
    # still on the CPU (a model that needs FSDP may not fit twice on its GPU).
    checkpoint_model = copy.deepcopy(model) if fsdp and master else model
    model.to(device)
    raw_model = model
    if fsdp:
        from piano_gpt.train import sharding

        sharding.shard_model(model)  # before the optimizer: it must hold the sharded parameters
    optimizer_name = optimizer_for(cfg.optimizer.get("name", "auto"), model.config.architecture, fsdp)
    optimizer = build_optimizer(
        model,
        optimizer_name,
        cfg.lr.learning_rate,
        cfg.optimizer.weight_decay,
        (cfg.optimizer.beta1, cfg.optimizer.beta2),
        device_type,
        muon_lr=cfg.optimizer.get("muon_lr", 0.02),
        muon_weight_decay=cfg.optimizer.get("muon_weight_decay", 0.0),
    )
    if master and cfg.optimizer.get("name", "auto") == "auto":
        print(
            f"optimizer: {optimizer_name} (optimizer.name=auto, a {model.config.architecture} model)",
            flush=True,
        )

    # ---- resume ------------------------------------------------------------------------------------
    iter_num, best_val_loss, tokens_seen = 0, float("inf"), 0
    wandb_id = None
    if resume_from:
        tensors, meta = load_training_state(resume_from)
        if fsdp:
            full = optimizer_state_from_tensors(tensors, meta["optimizer"])
            sharding.load_full_optimizer_state(raw_model, optimizer, full)
        else:
            optimizer_from_tensors(optimizer, tensors, meta["optimizer"])
        if meta.get("scaler"):
            scaler.load_state_dict(meta["scaler"])
        restore_rng_state(tensors, meta["rng"])
        if rank:
            torch.manual_seed(cfg.seed + rank + 1000 * meta["iter_num"])
        iter_num, best_val_loss, tokens_seen = meta["iter_num"], meta["best_val_loss"], meta["tokens_seen"]
        wandb_id = meta.get("wandb_id")

    if cfg.system.compile:
        if master:  # the compilation itself happens in the first steps, silently
            print(
                "compiling the model (system.compile=true): the first steps take a minute or more", flush=True
            )
        model = torch.compile(model)
    if ddp and not fsdp:
        model = DDP(model, device_ids=[local_rank] if device_type == "cuda" else None)

    run_name = cfg.run_name
    run_dir = Path(cfg.out_dir) / run_name
    if master:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    log = JsonlLog(run_dir / "log.jsonl", iter_num if resume_from else None) if master else None
    wandb_run = start_wandb(cfg, run_name, wandb_id) if master and cfg.logging.wandb_log else None

    loader = DataLoader(
        train_data,
        batch_sampler=index_batches(
            iter_num, cfg.optimizer.max_iters, accumulation, batch, micro, rank, world
        ),
        num_workers=cfg.system.data_workers,
        persistent_workers=False,
    )
    batches = iter(loader)
    if master:
        print(
            f"global batch: {tokens_per_step:,} tokens per step = {accumulation} "
            f"micro-batch{'es' if accumulation != 1 else ''} "
            f"({accumulation // world} per process x {world}) x {batch} sequences x {cfg.data.context_size} tokens",
            flush=True,
        )
    eval_batches = fixed_eval_batches(val_data, cfg.eval_iters, batch, rank, world, equal_counts=fsdp)

    def checkpoint(name: str, val_loss: float | None) -> None:
        # Every rank calls this: with FSDP, gathering the full state is a collective. Rank 0 writes.
        if fsdp:
            model_state, optimizer_state = sharding.gather_full_state(raw_model, optimizer)
        if not master:
            return
        if fsdp:
            checkpoint_model.load_state_dict(model_state)
            opt_tensors, opt_meta = optimizer_state_to_tensors(optimizer_state)
        else:
            opt_tensors, opt_meta = optimizer_to_tensors(optimizer)
        rng_tensors, rng_meta = capture_rng_state()
        meta = {
            "iter_num": iter_num,
            "best_val_loss": best_val_loss,
            "tokens_seen": tokens_seen,
            "optimizer": opt_meta,
            "scaler": scaler.state_dict() if scaler.is_enabled() else None,
            "rng": rng_meta,
            "wandb_id": wandb_run.id if wandb_run else None,
        }
        save_checkpoint(
            run_dir / f"{run_name}-{name}",
            checkpoint_model,
            tokenizer,
            run_config=OmegaConf.to_container(cfg, resolve=True),
            metrics={"val_loss": val_loss, "best_val_loss": best_val_loss},
            training={"iter_num": iter_num, "tokens_seen": tokens_seen},
            training_tensors={**rng_tensors, **opt_tensors},
            training_meta=meta,
        )

    # ---- loop --------------------------------------------------------------------------------------
    started = time.time()
    # A bar redraws one line: right on a terminal, kilobytes of carriage returns in a pipe or a CI log.
    # Elsewhere (or with progress_bar=false): one plain line per log_interval.
    show_bar = master and bool(cfg.logging.progress_bar) and sys.stdout.isatty()
    progress = tqdm(
        total=cfg.optimizer.max_iters,
        initial=iter_num,
        disable=not show_bar,
        dynamic_ncols=True,
        file=sys.stdout,
    )
    first_iter = iter_num
    last_val_loss = None
    while True:
        row = {"iter": iter_num}
        at_end = iter_num >= cfg.optimizer.max_iters
        timed_out = cfg.max_train_minutes and (time.time() - started) > 60 * cfg.max_train_minutes
        if iter_num % cfg.eval_interval == 0 or at_end or timed_out:
            last_val_loss = evaluate(model, eval_batches, device, autocast, ddp)
            row["val_loss"] = last_val_loss
            # The validation loss is reduced over all ranks: every rank takes the same decisions.
            if last_val_loss < best_val_loss and iter_num > 0:
                best_val_loss = last_val_loss
                checkpoint("best", last_val_loss)
            if iter_num > 0 or at_end:
                checkpoint("last", last_val_loss)
        if at_end or timed_out:
            if master:
                log.write(row)
            break

        lr = learning_rate(iter_num, cfg)
        for group in optimizer.param_groups:  # Muon's group runs at its own rate, on the same schedule
            group["lr"] = lr * group.get("lr_scale", 1.0)
        t0 = time.time()
        loss_sum = 0.0
        for micro_step in range(micro_steps_per_rank):
            example = next(batches)
            inputs = example["input_ids"].to(device, non_blocking=True)
            targets = example["targets"].to(device, non_blocking=True)
            time_steps = example["time_steps"].to(device, non_blocking=True)
            sync = not ddp or micro_step == micro_steps_per_rank - 1  # reduce gradients on the last only
            if fsdp:
                raw_model.set_requires_gradient_sync(sync)
            with model.no_sync() if not (sync or fsdp) else contextlib.nullcontext():
                with autocast:
                    _, loss = model(inputs, time_steps, targets)
                    loss = loss / micro_steps_per_rank
                scaler.scale(loss).backward()
            loss_sum += loss.item()
        if cfg.optimizer.grad_clip:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optimizer.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        if ddp:
            reduced = torch.tensor([loss_sum], device=device)
            dist.all_reduce(reduced, op=dist.ReduceOp.AVG)
            loss_sum = reduced.item()
        dt = time.time() - t0
        iter_num += 1
        tokens_seen += tokens_per_step
        tokens_per_s = tokens_per_step / dt
        row.update(
            train_loss=loss_sum,
            lr=lr,
            tokens_per_s=tokens_per_s,
            mfu=raw_model.flops_per_token() * tokens_per_s / peak,
        )
        if master:
            if iter_num % cfg.log_interval == 0 or "val_loss" in row:
                log.write(row)
                if wandb_run:
                    wandb_run.log(row, step=row["iter"])
            progress.update(1)
            progress.set_postfix(
                loss=f"{loss_sum:.3f}", val=f"{last_val_loss:.3f}", tok_s=f"{tokens_per_s:,.0f}"
            )
            if not show_bar and (iter_num % cfg.log_interval == 0 or iter_num >= cfg.optimizer.max_iters):
                print(
                    progress_line(iter_num, cfg.optimizer.max_iters, row, last_val_loss, started, first_iter),
                    flush=True,
                )
    progress.close()
    if wandb_run:
        wandb_run.finish()
    if ddp:
        dist.barrier()  # every rank's last collective done before the group goes
    return run_dir


def progress_line(
    iter_num: int, max_iters: int, row: dict, val_loss: float | None, started: float, first_iter: int
) -> str:
    """One plain progress line: iteration, losses, learning rate, tokens/s and the time left."""
    done = iter_num - first_iter
    left = (time.time() - started) / done * (max_iters - iter_num) if done else 0.0
    val = f"  val {val_loss:.3f}" if val_loss is not None else ""
    return (
        f"iter {iter_num}/{max_iters}  loss {row['train_loss']:.3f}{val}  lr {row['lr']:.2e}  "
        f"{row['tokens_per_s']:,.0f} tok/s  ETA {int(left // 60)}:{int(left % 60):02d}"
    )


def fixed_eval_batches(
    val_data, eval_iters: int, batch: int, rank: int, world: int, equal_counts: bool = False
) -> list[dict]:
    """The same validation batches at every evaluation (indices 0.. of the validation sequence), dealt
    round-robin to the ranks. ``equal_counts`` (FSDP, where every forward is a collective) pads each
    rank to the same number of batches with ones that count zero."""
    batches = []
    per_rank = -(-eval_iters // world) if equal_counts else None
    js = list(range(rank, eval_iters, world))
    if per_rank is not None:
        js += [None] * (per_rank - len(js))
    for j in js:
        start = (j if j is not None else 0) * batch
        examples = [val_data[i] for i in range(start, start + batch)]
        stacked = {k: torch.stack([e[k] for e in examples]) for k in examples[0]}
        stacked["weight"] = torch.tensor(0.0 if j is None else 1.0, dtype=torch.float64)
        batches.append(stacked)
    return batches


@torch.no_grad()
def evaluate(model, batches: list[dict], device: str, autocast, ddp: bool) -> float:
    """Mean validation loss (per target token) over the fixed batches, across all ranks."""
    model.eval()
    total = torch.zeros(2, device=device, dtype=torch.float64)
    for example in batches:
        targets = example["targets"].to(device)
        with autocast:
            _, loss = model(example["input_ids"].to(device), example["time_steps"].to(device), targets)
        n = (targets != -1).sum() * example["weight"].to(device)
        total += torch.stack([loss.double() * n, n.double()])
    if ddp:
        dist.all_reduce(total)
    model.train()
    return (total[0] / total[1].clamp(min=1)).item()


def check_wandb_key(mode: str | None) -> None:
    """ConfigError before any work when W&B would log online without an API key (wandb itself stops
    only when it starts, after the data and the model, with a UsageError)."""
    import netrc
    from urllib.parse import urlparse

    mode = mode or os.environ.get("WANDB_MODE")
    if mode in ("offline", "disabled", "dryrun") or os.environ.get("WANDB_API_KEY"):
        return
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    path = Path(os.environ.get("NETRC") or Path.home() / ".netrc")
    try:
        if path.is_file() and netrc.netrc(path).authenticators(host):
            return
    except (OSError, netrc.NetrcParseError):
        pass
    raise ConfigError(
        f"logging.wandb_log=true: no W&B API key for {host} (set WANDB_API_KEY or run `wandb login`); "
        "logging.wandb_mode=offline logs locally, logging.wandb_log=false not at all"
    )


def start_wandb(cfg: DictConfig, run_name: str, run_id: str | None):
    import wandb

    mode = cfg.logging.get("wandb_mode")
    return wandb.init(
        project=cfg.logging.wandb_project,
        name=run_name,
        id=run_id,
        resume="allow" if run_id else None,
        mode=mode,
        dir=str(Path(cfg.out_dir) / run_name),
        config=OmegaConf.to_container(cfg, resolve=True),
    )


def summarize_log(run_dir: Path) -> dict:
    rows = read_run_log(run_dir / "log.jsonl")
    val = [(r["iter"], r["val_loss"]) for r in rows if "val_loss" in r]
    return {
        "first_val_loss": val[0][1] if val else None,
        "last_val_loss": val[-1][1] if val else None,
        "val": val,
    }


__all__ = ["learning_rate", "summarize_log", "train"]

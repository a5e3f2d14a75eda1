"""Training-step speed: piano_gpt.model.GPT vs HF transformers' GPT2LMHeadModel, same shape, same run.

    /work/venv/bin/python bench/train.py [--repeats 5] [--steps 1] [--dtypes float32 bfloat16]
                                         [--threads N] [--no-deterministic] [--compile]
                                         [--append bench/RESULTS.md]

Shape: gpt2_10M (``configs/model/gpt2_10M.yaml``: 12 layers, 8 heads, 256 wide), context 512, batch 8, vocab
1241 (``ExponentialTimeTokenizer().vocab_size``), no dropout, random weights and random token ids.
Ours: ``GPT(GPTConfig(block_size=512, ...))`` with the music time embedding, fed ``time_steps`` (a
running clock, as the datasets make it); HF: ``GPT2LMHeadModel(GPT2Config(n_layer=12, n_head=8,
n_embd=256, n_positions=512, vocab_size=1241, all dropouts 0))`` with its default attention
implementation (printed), loss from ``labels``.

A step is what ``piano_gpt.train.loop`` does for one micro-batch with no accumulation: forward and loss
under ``torch.autocast("cpu", bfloat16)`` (bf16) or no autocast (fp32), ``loss.backward()``,
``clip_grad_norm_(1.0)``, ``AdamW.step()`` (``GPT.configure_optimizers``: decay 0.1 on 2-D weights; the
same groups for HF), ``zero_grad(set_to_none=True)``. ``torch.use_deterministic_algorithms(True)`` is on,
as in training on CPU (``system.deterministic``, default true; ``--no-deterministic`` turns it off).

Also timed, as "ours, plain path": our model with its CPU training fast paths off
(``model_kernels.PLAIN``: MKL matmuls, one SDPA call per layer),
i.e. the model before those were added.

tokens/s = 8 * 512 / (wall seconds per step). After a warm-up step, each repeat times ``--steps`` steps of
each model in turn (the order reverses between repeats), so load from other processes hits all alike; the
table gives the median (and best) over all timed steps, and tokens per CPU-second (process time, the
median step): with other processes on the cores, wall time depends on the share of the CPU this process
gets, CPU time much less so (with one thread; with more, threads waiting on each other spin and count).
``--threads`` sets ``torch.set_num_threads`` (default: PyTorch's, one per core). ``--compile`` also times
``torch.compile`` of each model (what ``system.compile`` does), reported as separate rows.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tokenizer import machine  # noqa: E402  (bench/tokenizer.py: date, cores, CPU, torch, uptime)

from piano_gpt.model import GPT, GPTConfig  # noqa: E402
from piano_gpt.model_kernels import PLAIN, CpuTrainingKernels, use_cpu_training_kernels  # noqa: E402
from piano_gpt.train.config import model_preset  # noqa: E402

CONTEXT = 512
BATCH = 8
VOCAB = 1241
PRESET = "gpt2_10M"
LR, BETAS, WEIGHT_DECAY, GRAD_CLIP = 6e-4, (0.9, 0.95), 0.1, 1.0


def ours_model() -> GPT:
    torch.manual_seed(0)
    config = GPTConfig(block_size=CONTEXT, vocab_size=VOCAB, **{**model_preset(PRESET), "dropout": 0.0})
    return GPT(config).train()


def hf_model():
    from transformers import GPT2Config, GPT2LMHeadModel

    preset = model_preset(PRESET)
    config = GPT2Config(
        vocab_size=VOCAB,
        n_positions=CONTEXT,
        n_embd=preset["n_embd"],
        n_layer=preset["n_layer"],
        n_head=preset["n_head"],
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=None,
        eos_token_id=None,
    )
    torch.manual_seed(0)
    return GPT2LMHeadModel(config).train()


def adamw(model: torch.nn.Module) -> torch.optim.Optimizer:
    if isinstance(model, GPT):
        return model.configure_optimizers(WEIGHT_DECAY, LR, BETAS, "cpu")
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": WEIGHT_DECAY},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=LR, betas=BETAS)


def make_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (BATCH, CONTEXT + 1), generator=g)
    # A running clock in time units (10 ms): most tokens advance it by 0, time tokens by 1..64.
    advance = torch.randint(0, 64, (BATCH, CONTEXT), generator=g) * (
        torch.rand(BATCH, CONTEXT, generator=g) < 0.3
    )
    return {"input_ids": ids[:, :-1], "targets": ids[:, 1:], "time_steps": advance.cumsum(1)}


def loss_of(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    if isinstance(getattr(model, "_orig_mod", model), GPT):
        return model(batch["input_ids"], batch["time_steps"], batch["targets"])[1]
    return model(input_ids=batch["input_ids"], labels=batch["input_ids"]).loss


class Trainer:
    def __init__(
        self, name: str, model: torch.nn.Module, dtype: str, compile: bool = False, fast: bool = True
    ):
        self.name = name
        self.raw = model
        self.model = torch.compile(model) if compile else model
        self.optimizer = adamw(model)
        self.dtype = dtype
        self.kernels = CpuTrainingKernels() if fast else PLAIN
        self.batch = make_batch()
        self.times: list[float] = []
        self.cpu_times: list[float] = []

    def step(self) -> float:
        with use_cpu_training_kernels(self.kernels):
            c0 = time.process_time()
            t0 = time.perf_counter()
            if self.dtype == "bfloat16":
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    loss = loss_of(self.model, self.batch)
            else:
                loss = loss_of(self.model, self.batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.raw.parameters(), GRAD_CLIP)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            loss.item()
            seconds = time.perf_counter() - t0
            self.cpu_times.append(time.process_time() - c0)
            return seconds


def bench(dtypes: list[str], repeats: int, steps: int, warmup: int, compile: bool) -> list[dict]:
    rows = []
    for dtype in dtypes:
        trainers = [
            Trainer("ours", ours_model(), dtype),
            Trainer("HF GPT2LMHeadModel", hf_model(), dtype),
            Trainer("ours, plain path", ours_model(), dtype, fast=False),
        ]
        if compile:
            trainers += [
                Trainer("ours, torch.compile", ours_model(), dtype, compile=True),
                Trainer("HF, torch.compile", hf_model(), dtype, compile=True),
            ]
        for trainer in trainers:
            for _ in range(warmup):
                trainer.step()
            trainer.cpu_times.clear()
        for r in range(repeats):
            order = trainers if r % 2 == 0 else trainers[::-1]
            for trainer in order:
                trainer.times += [trainer.step() for _ in range(steps)]
            print(
                f"{dtype} repeat {r + 1}/{repeats}: "
                + ", ".join(
                    f"{t.name} {BATCH * CONTEXT / statistics.median(t.times):,.0f} tok/s" for t in trainers
                ),
                flush=True,
            )
        hf_median = statistics.median(trainers[1].times)
        for trainer in trainers:
            median = statistics.median(trainer.times)
            rows.append(
                {
                    "dtype": dtype,
                    "name": trainer.name,
                    "median": BATCH * CONTEXT / median,
                    "best": BATCH * CONTEXT / min(trainer.times),
                    "ratio": hf_median / median,
                    "per_cpu_s": BATCH * CONTEXT / statistics.median(trainer.cpu_times),
                    "cpu_ratio": statistics.median(trainers[1].cpu_times)
                    / statistics.median(trainer.cpu_times),
                    "n": len(trainer.times),
                }
            )
    return rows


def markdown(rows: list[dict], info: dict, load_after: str, args, attn: str, params: dict) -> str:
    lines = [
        f"## Training step speed: ours vs HF GPT2LMHeadModel ({info['date']})",
        "",
        f"Machine: {info['nproc']} cores, {info['cpu']}, torch {info['torch']} (**{torch.get_num_threads()} "
        f"threads**), transformers {params['transformers']}; `{info['uptime']}` before, `{load_after}` after "
        "(other workers share these cores).",
        f"Workload: {PRESET} (ours {params['ours'] / 1e6:.2f}M parameters with the music time embedding, HF "
        f"{params['hf'] / 1e6:.2f}M, HF attention `{attn}`), context {CONTEXT}, batch {BATCH}; a step = forward "
        "+ loss, backward, clip, AdamW step; deterministic algorithms "
        f"{'on' if args.deterministic else 'off'}. Median (best) of {rows[0]['n']} steps per model, "
        f"{args.repeats} interleaved repeats of {args.steps}. Command: `python bench/train.py {args.command}`.",
        "",
        "| dtype | model | tokens/s (median) | tokens/s (best) | vs HF (median) | tokens/CPU-s | vs HF (CPU) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['dtype']} | {row['name']} | {row['median']:,.0f} | {row['best']:,.0f} | {row['ratio']:.2f}x "
            f"| {row['per_cpu_s']:,.0f} | {row['cpu_ratio']:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=1, help="timed steps per model per repeat")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads (default: PyTorch's)"
    )
    parser.add_argument(
        "--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"]
    )
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd models")
    parser.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--append", type=Path, default=None, help="append the table to this markdown file")
    args = parser.parse_args()
    args.command = " ".join(sys.argv[1:])
    warnings.filterwarnings("ignore")
    import logging

    import transformers

    logging.getLogger("transformers").setLevel(logging.ERROR)
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.deterministic:
        torch.use_deterministic_algorithms(True)
    info = machine()
    hf = hf_model()
    params = {
        "ours": ours_model().num_parameters(),
        "hf": hf.num_parameters(),
        "transformers": transformers.__version__,
    }
    attn = getattr(hf.config, "_attn_implementation", "?")
    rows = bench(args.dtypes, args.repeats, args.steps, args.warmup, args.compile)
    load_after = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    table = markdown(rows, info, load_after, args, attn, params)
    print()
    print(table)
    if args.append:
        with open(args.append, "a") as handle:
            handle.write("\n" + table)


if __name__ == "__main__":
    main()

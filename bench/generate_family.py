"""Generation speed of the two model families, same run: piano_10M vs gpt2_10M.

    python bench/generate_family.py [--repeats 3] [--batches 1 8] [--threads N]
                                    [--models gpt2_10M piano_10M] [--kinds compiled torch_step reference]

Both presets (``configs/model/{gpt2,piano}_10M.yaml``: 12 layers, 8 heads, 256 wide), context 1024,
vocab of the exponential tokenizer, random weights (seed 0). Workload per batch size: a 256-token
prompt (the opening of the first demo validation piece, shared by the batch), 256 new tokens,
temperature 1, top-k 50, the engine's defaults otherwise (note grammar on). Kinds: ``compiled`` =
FastRunner with its compiled step (the default on a CPU in float32), ``torch_step`` = FastRunner's
PyTorch step (``PIANO_GPT_NATIVE=0``), ``reference`` = ModelRunner (``fast=False``: ``GPT.forward``
+ ``model.KVCache``). Whole ``sample_ids`` call timed; new tokens/s = batch * 256 / seconds, median
of ``--repeats`` runs interleaved (the models back to back), after a warm-up. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics

import torch
from generate import cpu_name, time_ours  # bench/generate.py: the same timing of our generation

from piano_gpt.data.demo import load_demo_records
from piano_gpt.generation import native
from piano_gpt.midi import make_notes
from piano_gpt.model import GPT, GPTConfig
from piano_gpt.tokenizers import ExponentialTimeTokenizer
from piano_gpt.train.config import model_preset

PROMPT_TOKENS = 256
NEW_TOKENS = 256
TOP_K = 50
KINDS = {  # kind: (fast, compiled)
    "compiled": (True, True),
    "torch_step": (True, False),
    "reference": (False, False),
}


def seconds(
    model, tokenizer, prompt: list[int], batch: int, kind: str, new_tokens: int = NEW_TOKENS
) -> float:
    fast, compiled = KINDS[kind]
    return time_ours(model, tokenizer, prompt, batch, new_tokens, fast=fast, compiled=compiled)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--models", nargs="+", default=["gpt2_10M", "piano_10M"])
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    tokenizer = ExponentialTimeTokenizer()
    models = {}
    for name in args.models:
        torch.manual_seed(0)
        config = GPTConfig(block_size=1024, vocab_size=tokenizer.vocab_size, **model_preset(name))
        models[name] = GPT(config).eval()
    record = load_demo_records("validation")[0]["notes"]
    notes = make_notes(record["pitch"], record["velocity"], record["start"], record["end"])
    prompt = tokenizer.encode(notes)[:PROMPT_TOKENS]
    compiled = native.library() is not None
    load_before = os.getloadavg()[0]
    print(
        f"# {datetime.datetime.now().isoformat(timespec='minutes')}, {cpu_name()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), load average before {load_before:.2f}; "
        f"compiled step {'loaded' if compiled else 'UNAVAILABLE: ' + str(native.unavailable_reason())}"
    )
    for model in models.values():  # warm-up: allocations, kernels' first calls, the build
        for kind in args.kinds:
            seconds(model, tokenizer, prompt, 2, kind, 8)

    # The two models back to back for each batch and kind: they see the same load.
    times = {(name, batch, kind): [] for batch in args.batches for kind in args.kinds for name in models}
    for _ in range(args.repeats):
        for name, batch, kind in times:
            times[name, batch, kind].append(seconds(models[name], tokenizer, prompt, batch, kind))
    rate = {key: key[1] * NEW_TOKENS / statistics.median(value) for key, value in times.items()}
    print(f"# load average after {os.getloadavg()[0]:.2f}")
    print("| batch | model | " + " | ".join(args.kinds) + " | compiled / reference |")
    print("|---|---|" + "---|" * (len(args.kinds) + 1))
    for batch in args.batches:
        for name in models:
            cells = [f"{rate[name, batch, kind]:.0f} tok/s" for kind in args.kinds]
            ratio = (
                f"{rate[name, batch, 'compiled'] / rate[name, batch, 'reference']:.2f}x"
                if {"compiled", "reference"} <= set(args.kinds)
                else "-"
            )
            print(f"| {batch} | {name} | " + " | ".join(cells) + f" | {ratio} |")
    if len(models) == 2:
        a, b = models
        for batch in args.batches:
            ratios = ", ".join(
                f"{kind} {rate[b, batch, kind] / rate[a, batch, kind]:.2f}" for kind in args.kinds
            )
            print(f"# batch {batch}: {b} / {a} tokens/s: {ratios}")


if __name__ == "__main__":
    main()

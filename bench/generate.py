"""Generation speed: piano_gpt.generation vs HF transformers' GPT2LMHeadModel.generate, same run.

    python bench/generate.py [--repeats 3] [--long] [--markdown]

Model shape: gpt2_10M (12 layers, 8 heads, 256 wide; ``model.MODEL_PRESETS``), context 1024, vocab
1241, random weights. Workload per batch size (1 and 8): a 256-token prompt (the opening of a demo
corpus piece; the batch is n samples of that one prompt), 512 new tokens, sampling at temperature 1
with top-k 50 on both sides. Timings cover the whole call (prompt processing included); new tokens/s
= batch * 512 / seconds, median of ``--repeats`` interleaved runs after a warm-up. Also timed: our
reference path (``fast=False``: ``GPT.forward`` + ``model.KVCache``). ``--long``: one 3-minute
continuation (``max_duration=180``) with the same 1024-token model, sliding past its context.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time
import warnings

import numpy as np
import torch

from piano_gpt.data.demo import load_demo_records
from piano_gpt.generation import generate_samples, sample_ids
from piano_gpt.midi import make_notes
from piano_gpt.model import GPT, MODEL_PRESETS, GPTConfig
from piano_gpt.tokenizers import ExponentialTimeTokenizer

PROMPT_TOKENS = 256
NEW_TOKENS = 512
TOP_K = 50


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def demo_prompt(tokenizer) -> tuple[list[int], object]:
    record = load_demo_records("validation")[0]["notes"]
    notes = make_notes(record["pitch"], record["velocity"], record["start"], record["end"])
    ids = tokenizer.encode(notes)
    return ids[:PROMPT_TOKENS], notes


def hf_model(vocab_size: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    preset = MODEL_PRESETS["gpt2_10M"]
    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=1024,
        n_embd=preset["n_embd"],
        n_layer=preset["n_layer"],
        n_head=preset["n_head"],
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=vocab_size - 1,  # an unused placeholder slot: never in the prompt
    )
    torch.manual_seed(0)
    return GPT2LMHeadModel(config).eval()


def time_hf(model, prompt: list[int], batch: int, new_tokens: int) -> float:
    ids = torch.tensor([prompt] * batch)
    with torch.inference_mode():
        start = time.perf_counter()
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=True,
            top_k=TOP_K,
            temperature=1.0,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            use_cache=True,
            pad_token_id=model.config.pad_token_id,
        )
        seconds = time.perf_counter() - start
    assert out.shape == (batch, len(prompt) + new_tokens), out.shape
    return seconds


def time_ours(model, tokenizer, prompt: list[int], batch: int, new_tokens: int, fast: bool = True) -> float:
    start = time.perf_counter()
    samples = sample_ids(
        model, tokenizer, prompt, n_samples=batch, max_new_tokens=new_tokens, top_k=TOP_K, fast=fast, seed=0
    )
    seconds = time.perf_counter() - start
    assert all(len(s.ids) == new_tokens for s in samples)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--long", action="store_true", help="also time a 3-minute continuation")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    tokenizer = ExponentialTimeTokenizer()
    torch.manual_seed(0)
    ours = GPT(
        GPTConfig(block_size=1024, vocab_size=tokenizer.vocab_size, **MODEL_PRESETS["gpt2_10M"])
    ).eval()
    hf = hf_model(tokenizer.vocab_size)
    prompt, notes = demo_prompt(tokenizer)
    load_before = os.getloadavg()
    print(
        f"# {datetime.datetime.now().isoformat(timespec='minutes')}, {cpu_name()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"load average before {load_before[0]:.2f}"
    )
    print(f"# ours: {ours.num_parameters() / 1e6:.1f}M parameters; HF: {hf.num_parameters() / 1e6:.1f}M")
    # Warm-up (allocations, kernels' first calls).
    time_hf(hf, prompt, 1, 16)
    time_ours(ours, tokenizer, prompt, 1, 16)
    time_ours(ours, tokenizer, prompt, 2, 16)

    rows = []
    for batch in args.batches:
        times = {"hf": [], "ours": [], "ours_reference": []}
        for _ in range(args.repeats):
            times["hf"].append(time_hf(hf, prompt, batch, NEW_TOKENS))
            times["ours"].append(time_ours(ours, tokenizer, prompt, batch, NEW_TOKENS))
            times["ours_reference"].append(time_ours(ours, tokenizer, prompt, batch, NEW_TOKENS, fast=False))
        rate = {k: batch * NEW_TOKENS / statistics.median(v) for k, v in times.items()}
        best = {k: batch * NEW_TOKENS / min(v) for k, v in times.items()}
        rows.append((batch, rate, best))
        print(
            f"batch {batch}: HF {rate['hf']:.0f} tok/s, ours {rate['ours']:.0f} tok/s "
            f"(x{rate['ours'] / rate['hf']:.2f}), ours reference path {rate['ours_reference']:.0f} tok/s",
            flush=True,
        )
    load_after = os.getloadavg()

    print()
    print(
        "| batch | HF GPT2LMHeadModel.generate | piano_gpt.generation | ratio | reference path (fast=False) |"
    )
    print("|---|---|---|---|---|")
    for batch, rate, best in rows:
        print(
            f"| {batch} | {rate['hf']:.0f} tok/s (best {best['hf']:.0f}) | {rate['ours']:.0f} tok/s "
            f"(best {best['ours']:.0f}) | **{rate['ours'] / rate['hf']:.2f}x** | {rate['ours_reference']:.0f} tok/s |"
        )
    print(f"\nload average before/after: {load_before[0]:.2f} / {load_after[0]:.2f}")

    if args.long:
        offset = float(notes["start"].min())
        prompt_notes = notes[notes["start"] < offset + 10].reset_index(drop=True)
        start = time.perf_counter()
        (g,) = generate_samples(
            ours, tokenizer, prompt_notes, max_new_tokens=200_000, max_duration=180.0, top_k=TOP_K, seed=0
        )
        seconds = time.perf_counter() - start
        music = float(g.notes["end"].max() - prompt_notes["end"].max()) if len(g.notes) else 0.0
        windows = int(np.ceil(max(0, len(g.ids) - 1024) / 512))
        print(
            f"\n3-minute continuation (random weights, block 1024): {len(g.ids)} tokens, {len(g.notes)} notes, "
            f"{music:.1f} s of music, ~{windows} window slides, stopped: {g.stop_reason}, {seconds:.1f} s wall "
            f"({len(g.ids) / seconds:.0f} tok/s)"
        )


if __name__ == "__main__":
    main()

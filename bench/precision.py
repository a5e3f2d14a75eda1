"""What bfloat16 weights cost a model: bits per token on MAESTRO files, float32 against the same
weights rounded to bfloat16 (what the compiled step reads from a bfloat16 model; its arithmetic stays
float32), same windows, same run.

    python bench/precision.py CKPT [CKPT ...] [--files 8] [--maestro ../shared/data/maestro]

Windows: up to 20 consecutive ``block_size`` windows from each of ``--files`` MAESTRO performances
(every year's files, shuffled with seed 0).
"""

from __future__ import annotations

import argparse
import math
import random
from pathlib import Path

import numpy as np
import torch

from piano_gpt.midi import read_notes
from piano_gpt.model import GPT
from piano_gpt.train.checkpoint import load_checkpoint

WINDOWS_PER_FILE = 20


def windows(tokenizer, files: list[Path], block: int) -> torch.Tensor:
    rows = []
    for path in files:
        ids = np.asarray(tokenizer.encode(read_notes(path)), np.int64)
        for start in range(0, min(len(ids) - block - 1, WINDOWS_PER_FILE * block), block):
            rows.append(ids[start : start + block + 1])
    return torch.as_tensor(np.stack(rows))


@torch.inference_mode()
def bits_per_token(model: GPT, tokenizer, rows: torch.Tensor) -> float:
    total = 0.0
    for chunk in rows.split(16):
        inputs, targets = chunk[:, :-1], chunk[:, 1:]
        time = torch.as_tensor(np.stack([tokenizer.music_time(row.numpy()) for row in inputs]))
        _, loss = model(inputs, time.clamp(max=model.config.max_music_time - 1), targets=targets)
        total += loss.item() * len(chunk)
    return total / len(rows) / math.log(2)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--maestro", default=str(Path(__file__).resolve().parents[2] / "shared/data/maestro"))
    args = parser.parse_args()
    files = sorted(p for p in Path(args.maestro).rglob("*.mid*") if p.suffix in (".mid", ".midi"))
    if not files:
        raise SystemExit(f"{args.maestro}: no MIDI files (give --maestro)")
    random.Random(0).shuffle(files)
    print("| checkpoint | windows | float32 bits/token | bfloat16 weights | change |")
    print("|---|---|---|---|---|")
    for path in args.checkpoints:
        model, tokenizer, _ = load_checkpoint(path, device="cpu")
        rows = windows(tokenizer, files[: args.files], model.config.block_size)
        full = bits_per_token(model, tokenizer, rows)
        rounded = bits_per_token(model.to(torch.bfloat16).to(torch.float32), tokenizer, rows)
        print(f"| {path} | {len(rows)} | {full:.4f} | {rounded:.4f} | {(rounded / full - 1) * 100:+.3f}% |")


if __name__ == "__main__":
    main()

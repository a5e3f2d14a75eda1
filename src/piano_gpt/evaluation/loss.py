"""Loss evaluation on a dataset split: mean token loss, bits per note, bits per second of music.

Every record (a piece, cut at long pauses) is read whole, in windows of ``context_size + 1`` tokens
that overlap by one token (window ``k`` holds tokens ``k*C .. k*C + C``), so each token but the
record's first is predicted exactly once, from at most ``C`` tokens of context, the music time
restarting at each window's start as in training (``make_example``).

- ``loss``: the mean NLL (nats) per predicted token;
- ``bits_per_note``: the NLL summed over all predicted tokens / the number of notes / ln 2
  (= ``loss * n_tokens / n_notes / ln 2``);
- ``bits_per_second``: the same NLL / the seconds of music (each record's last note end) / ln 2;
- ``bits_per_note_record_mean``: the mean over records of each record's own bits per note.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from piano_gpt.data.datasets import make_example
from piano_gpt.data.shards import SplitShards
from piano_gpt.tokenizers import GENAI_TOKEN, MidiTokenizer


def record_windows(n_tokens: int, context_size: int) -> list[tuple[int, int]]:
    """(start, stop) token ranges of the windows covering a record of ``n_tokens`` tokens."""
    return [(s, min(s + context_size + 1, n_tokens)) for s in range(0, max(n_tokens - 1, 0), context_size)]


@torch.no_grad()
def records_nll(
    model,
    tokenizer: MidiTokenizer,
    records,
    context_size: int | None = None,
    batch_size: int = 8,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(summed NLL in nats, number of predicted tokens) of each record of ``records`` (a sequence of
    token id arrays), read whole in overlapping windows (see the module docstring)."""
    context_size = int(context_size or model.config.block_size)
    if context_size > model.config.block_size:
        raise ValueError(
            f"context_size={context_size} exceeds the model's block_size {model.config.block_size}"
        )
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    reset_id = tokenizer.token_to_id.get(GENAI_TOKEN)
    nll = np.zeros(len(records))
    counts = np.zeros(len(records), np.int64)
    jobs = [
        (r, start, stop)
        for r in range(len(records))
        for start, stop in record_windows(len(records[r]), context_size)
    ]
    for b in range(0, len(jobs), batch_size):
        batch = jobs[b : b + batch_size]
        examples = [
            make_example(
                np.asarray(records[r][start:stop], dtype=np.int64),
                context_size,
                tokenizer,
                model.config.max_music_time,
                reset_id,
            )
            for r, start, stop in batch
        ]
        stacked = {k: torch.stack([e[k] for e in examples]).to(device) for k in examples[0]}
        logits, _ = model(stacked["input_ids"], stacked["time_steps"], all_logits=True)
        targets = stacked["targets"]
        losses = F.cross_entropy(
            logits.float().reshape(-1, logits.size(-1)),
            targets.reshape(-1),
            ignore_index=-1,
            reduction="none",
        ).view(targets.shape)
        per_window = losses.sum(dim=1).double().cpu().numpy()
        per_count = (targets != -1).sum(dim=1).cpu().numpy()
        for (r, _, _), value, count in zip(batch, per_window, per_count):
            nll[r] += value
            counts[r] += count
        if progress and (b // batch_size) % 50 == 0:
            print(f"  {b + len(batch)}/{len(jobs)} windows", flush=True)
    if was_training:
        model.train()
    return nll, counts


def evaluate_loss(
    model,
    tokenizer: MidiTokenizer,
    shards_split: SplitShards,
    context_size: int | None = None,
    max_records: int | None = None,
    batch_size: int = 8,
    progress: bool = False,
) -> dict:
    """Loss figures of ``model`` on the records of ``shards_split`` (the first ``max_records``)."""
    context_size = int(context_size or model.config.block_size)
    n_records = len(shards_split) if max_records is None else min(int(max_records), len(shards_split))
    records = [shards_split.record_tokens(r) for r in range(n_records)]  # views of the shards
    nll, counts = records_nll(model, tokenizer, records, context_size, batch_size, progress)
    n_windows = sum(len(record_windows(len(record), context_size)) for record in records)
    notes = shards_split.index["note_count"].to_numpy()[:n_records].astype(np.int64)
    seconds = shards_split.index["duration"].to_numpy()[:n_records].astype(np.float64)
    total, n_tokens = float(nll.sum()), int(counts.sum())
    ln2 = math.log(2)
    return {
        "loss": total / n_tokens if n_tokens else float("nan"),
        "bits_per_token": total / n_tokens / ln2 if n_tokens else float("nan"),
        "bits_per_note": total / notes.sum() / ln2 if notes.sum() else float("nan"),
        "bits_per_second": total / seconds.sum() / ln2 if seconds.sum() > 0 else float("nan"),
        "bits_per_note_record_mean": float(np.mean(nll / np.maximum(notes, 1) / ln2))
        if n_records
        else float("nan"),
        "nll_nats": total,
        "n_records": n_records,
        "n_tokens": n_tokens,
        "n_notes": int(notes.sum()),
        "seconds": float(seconds.sum()),
        "n_windows": n_windows,
        "context_size": context_size,
    }


__all__ = ["evaluate_loss", "record_windows", "records_nll"]

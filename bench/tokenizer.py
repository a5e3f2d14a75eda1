"""Tokenizer speed: ours (read_notes + ExponentialTimeTokenizer) vs MidiTok 3 (TSD, REMI), same run.

    /work/venv/bin/python bench/tokenizer.py [--pieces 60] [--repeats 5] [--append bench/RESULTS.md]

Pieces: the first ``--pieces`` MAESTRO validation files (``maestro-v3.0.0.csv``, split == validation,
in csv order) under ``--maestro`` (default ``../shared/data/maestro`` next to the repository).

What is timed, per piece:

- read+encode, ours: ``piano_gpt.midi.read_notes(path)`` (file checks, symusic parse in seconds,
  sustain folded into note ends) then ``ExponentialTimeTokenizer().encode(notes)`` (a list of ints).
- read+encode, MidiTok: ``tokenizer.encode(path)`` (symusic parse in ticks, MidiTok preprocessing,
  tokens and ids) with ``TSD(TokenizerConfig())`` and ``REMI(TokenizerConfig())`` (MidiTok defaults:
  32 velocities, beat resolution 8 per beat up to 4 beats then 4, no tempo/pedal tokens).
- decode, ours: ``tokenizer.decode(ids)`` (ids -> note table); also timed, as a row of its own,
  ids -> ``symusic.Score`` (``decode`` then ``piano_gpt.midi.notes_to_score``).
- decode, MidiTok: ``tokenizer.decode([ids of each track])`` (ids -> ``symusic.Score``).
- the two halves of read+encode, to show where the time goes: encode only (ours: note table -> ids;
  MidiTok: ``tokenizer.encode(score)`` on a ``symusic.Score`` loaded untimed just before) and read only
  (``read_notes(path)`` beside ``symusic.Score(path)``, the parse MidiTok starts with).

notes/s = (notes in the files, as symusic reads them: all non-drum notes) / seconds, the same count
for every tokenizer, so the ratios are ratios of time. Each repeat runs every piece through every
tokenizer, the tokenizers taking turns piece by piece (their order rotates each repeat), so a change
in machine load hits all of them alike; the table gives the median over repeats of the total time (and
the best repeat). Also reported: our tokens per note and the round trip's largest onset error
(``decode(encode(notes))`` against ``notes``, matched by pitch then start).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd

from piano_gpt.midi import notes_to_score, read_notes
from piano_gpt.tokenizers import ExponentialTimeTokenizer

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MAESTRO = REPO.parent / "shared" / "data" / "maestro"


def machine() -> dict[str, str]:
    import torch

    cpu = platform.processor() or "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "torch": torch.__version__,
        "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
    }


def validation_files(maestro: Path, n: int) -> list[Path]:
    table = pd.read_csv(maestro / "maestro-v3.0.0.csv")
    names = table[table["split"] == "validation"]["midi_filename"]
    files = [maestro / name for name in names if (maestro / name).exists()]
    if len(files) < n:
        raise SystemExit(f"only {len(files)} validation files under {maestro}, asked for {n}")
    return files[:n]


def file_note_count(path: Path) -> int:
    import symusic

    score = symusic.Score(str(path))
    return sum(len(track.notes) for track in score.tracks if not track.is_drum)


def onset_error(notes: pd.DataFrame, decoded: pd.DataFrame) -> tuple[float, int]:
    """(largest |onset difference| in seconds, |count difference|), notes matched by pitch then start."""
    notes = notes[(notes["pitch"] >= 21) & (notes["pitch"] <= 108)]
    a = notes.sort_values(["pitch", "start"], kind="stable")
    b = decoded.sort_values(["pitch", "start"], kind="stable")
    if len(a) != len(b) or not (a["pitch"].to_numpy() == b["pitch"].to_numpy()).all():
        return float("nan"), abs(len(a) - len(b))
    return float(np.abs(a["start"].to_numpy() - b["start"].to_numpy()).max()), 0


def run(files: list[Path], repeats: int) -> dict:
    """Per step, per tokenizer: total seconds over the pieces, one entry per repeat."""
    import symusic
    from miditok import REMI, TSD, TokenizerConfig

    ours = ExponentialTimeTokenizer()
    peers = {"MidiTok TSD": TSD(TokenizerConfig()), "MidiTok REMI": REMI(TokenizerConfig())}
    n_notes = sum(file_note_count(f) for f in files)
    notes = [read_notes(f) for f in files]

    def peer_ids(seqs) -> list[list[int]]:
        return [list(s.ids) for s in (seqs if isinstance(seqs, list) else [seqs])]

    # step -> tokenizer -> (prepare(i): untimed input, run(input): timed)
    tasks: dict[str, dict[str, tuple]] = {
        "read+encode": {
            "ours": (lambda i: files[i], lambda path: ours.encode(read_notes(path))),
            **{
                name: (lambda i: files[i], lambda path, t=tok: peer_ids(t.encode(path)))
                for name, tok in peers.items()
            },
        },
        "decode": {},  # filled below, from each tokenizer's own ids
        "encode only": {
            "ours (note table -> ids)": (lambda i: notes[i], ours.encode),
            **{
                f"{name} (Score -> ids)": (
                    lambda i: symusic.Score(str(files[i])),
                    lambda score, t=tok: peer_ids(t.encode(score)),
                )
                for name, tok in peers.items()
            },
        },
        "read only": {
            "ours: read_notes": (lambda i: files[i], read_notes),
            "symusic.Score(path) (MidiTok's reader)": (
                lambda i: files[i],
                lambda path: symusic.Score(str(path)),
            ),
        },
    }
    # Warm-up, and the token ids each decoder gets (its own encoder's output).
    ids = {
        name: [run_(prepare(i)) for i in range(len(files))]
        for name, (prepare, run_) in tasks["read+encode"].items()
    }
    tasks["decode"] = {
        "ours": (lambda i: ids["ours"][i], ours.decode),
        "ours (ids -> Score)": (lambda i: ids["ours"][i], lambda x: notes_to_score(ours.decode(x))),
        **{name: (lambda i, n=name: ids[n][i], tok.decode) for name, tok in peers.items()},
    }
    for step in tasks.values():
        for prepare, run_ in step.values():
            run_(prepare(0))

    times = {step: {name: [] for name in step_tasks} for step, step_tasks in tasks.items()}
    gc.disable()
    try:
        for r in range(repeats):
            totals = {step: dict.fromkeys(step_tasks, 0.0) for step, step_tasks in tasks.items()}
            for i in range(len(files)):
                for step, step_tasks in tasks.items():
                    names = list(step_tasks)
                    for name in names[r % len(names) :] + names[: r % len(names)]:  # rotating order
                        prepare, run_ = step_tasks[name]
                        arg = prepare(i)
                        t0 = time.perf_counter()
                        run_(arg)
                        totals[step][name] += time.perf_counter() - t0
                gc.collect()
            for step, step_totals in totals.items():
                for name, seconds in step_totals.items():
                    times[step][name].append(seconds)
    finally:
        gc.enable()

    tokens = {
        name: sum(len(x) if not x or isinstance(x[0], int) else sum(map(len, x)) for x in ids[name])
        for name in ids
    }
    errors, count_mismatch = [], 0
    for piece_notes, piece_ids in zip(notes, ids["ours"]):
        err, mismatch = onset_error(piece_notes, ours.decode(piece_ids))
        errors.append(err)
        count_mismatch += mismatch
    return {
        "n_pieces": len(files),
        "n_notes": n_notes,
        "n_notes_ours": sum(map(len, notes)),
        "repeats": repeats,
        "times": times,
        "tokens": tokens,
        "onset_max_error": float(np.nanmax(errors)) if errors else float("nan"),
        "count_mismatch": count_mismatch,
    }


def markdown(result: dict, info: dict, load_after: str) -> str:
    n = result["n_notes"]
    lines = [
        f"## Tokenizer speed: ours vs MidiTok ({info['date']})",
        "",
        f"Machine: {info['nproc']} cores, {info['cpu']}, torch {info['torch']}; load "
        f"`{info['uptime']}` before, `{load_after}` after (other workers share these cores).",
        f"Workload: the first {result['n_pieces']} MAESTRO validation pieces, {n:,} notes in the files "
        f"({result['n_notes_ours']:,} after our reader folds the sustain pedal and drops duplicate strikes); "
        f"notes/s = {n:,} / seconds for every row. Median (best) of {result['repeats']} repeats, tokenizers "
        f"interleaved piece by piece. Command: `python bench/tokenizer.py --pieces {result['n_pieces']} "
        f"--repeats {result['repeats']}`.",
        "",
        "| step | tokenizer | notes/s (median) | notes/s (best) | ours is faster by (median) | tokens/note |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for step, step_times in result["times"].items():
        base = statistics.median(next(iter(step_times.values())))  # the first row is ours
        for k, (name, seconds) in enumerate(step_times.items()):
            median = statistics.median(seconds)
            ratio = "—" if k == 0 else f"{median / base:.1f}x"
            tokens = result["tokens"].get(name) if step == "read+encode" else None
            per_note = f"{tokens / n:.2f}" if tokens is not None else ""
            lines.append(
                f"| {step} | {name} | {n / median:,.0f} | {n / min(seconds):,.0f} | {ratio} | {per_note} |"
            )
    lines += [
        "",
        "Decode: ours = ids -> note table (`ExponentialTimeTokenizer.decode`); MidiTok = ids -> `symusic.Score`; "
        "ours (ids -> Score) adds `piano_gpt.midi.notes_to_score`. Encode only: ours from the note table "
        "`read_notes` made, MidiTok from a `symusic.Score` loaded (untimed) just before.",
        f"Our round trip (`decode(encode(read_notes(f)))` against `read_notes(f)`, notes matched by pitch "
        f"then onset): largest onset error {result['onset_max_error'] * 1000:.2f} ms (time unit 10 ms: at most "
        f"5 ms by construction); note-count mismatches: {result['count_mismatch']}.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--maestro", type=Path, default=DEFAULT_MAESTRO)
    parser.add_argument("--pieces", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--append", type=Path, default=None, help="append the table to this markdown file")
    args = parser.parse_args()

    info = machine()
    files = validation_files(args.maestro, args.pieces)
    result = run(files, args.repeats)
    load_after = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    table = markdown(result, info, load_after)
    print(table)
    if args.append:
        with open(args.append, "a") as handle:
            handle.write("\n" + table)


if __name__ == "__main__":
    main()

"""Fuzz ``read_notes`` and the dataset builder with mutated MIDI files (run by hand; CI runs the short
property tests in tests/reliability/ instead).

    /work/venv/bin/python bench/fuzz_midi.py --minutes 10 --seed 0 [--corpus ../shared/data/maestro]

Inputs are well-formed seeds (random performances written byte by byte, odd hand-made files, and a few
files of ``--corpus``) put through 1-4 random mutations: bit flips, interesting bytes, inserted and
deleted ranges, splices, truncation, lying chunk lengths, header fields, and events inserted into a
track body whose chunk length is then fixed (so the mutation reaches the event parser): huge and
non-standard delta times, tempo changes (0 included), sysex/meta events with huge lengths, data bytes
>= 0x80. Each input goes through what the builder does with a file: ``read_notes`` (sustain folded),
cut at pauses, out-of-range pitches dropped, tokenized.

Each input runs in a worker process with an address-space limit (``--memory-mb``) and a time limit
(``--timeout``). Outcomes: ``ok``; ``MidiReadError`` (by kind: our own clear error, which is fine);
findings: ``bug`` (any other exception), ``invariant`` (a note table that breaks the contract),
``crash`` (the worker died), ``hang`` (over the time limit), ``memory`` (MemoryError). Findings are
saved under ``--out/findings/``. At the end the builder itself (``build_split`` with worker processes)
runs over a sample of the inputs plus every finding, and must finish and report each bad file.

Results go to ``--out/summary.json``; the last run's numbers are in docs/reliability.md.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import multiprocessing as mp
import random
import re
import resource
import shutil
import struct
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "reliability"))

from midi_fabric import (  # noqa: E402
    END_OF_TRACK,
    chunk,
    header,
    note_table_problem,
    random_performance,
    tempo_event,
    track_bytes,
    vlq,
)

INTERESTING_BYTES = [0x00, 0x01, 0x7F, 0x80, 0x81, 0x8F, 0x90, 0xB0, 0xF0, 0xF7, 0xFE, 0xFF]
MAX_INPUT_BYTES = 1 << 20


# --- seeds ------------------------------------------------------------------------------------


def odd_seeds() -> list[bytes]:
    """Hand-made odd but legal (or nearly) files: the cases the issue lists."""
    note = [(0, b"\x90\x3c\x40"), (480, b"\x80\x3c\x40")]
    seeds = [
        header(0, 1, 480) + chunk(b"MTrk", track_bytes(note)),
        header(1, 3, 480)
        + chunk(b"MTrk", track_bytes([(0, tempo_event(1))]))
        + chunk(b"MTrk", track_bytes(note)) * 2,
        header(2, 2, 96) + chunk(b"MTrk", track_bytes(note)) * 2,
        header(1, 1, 1)
        + chunk(b"MTrk", track_bytes([(0x0FFFFFFF, b"\x90\x15\x7f"), (0x1FFFFFFE, b"\x80\x15\x00")])),
        header(1, 1, 480) + chunk(b"MTrk", track_bytes([(0, b"\xb0\x40\x7f"), (960, b"\xb0\x40\x00")])),
        header(1, 1, 480)
        + chunk(b"MTrk", track_bytes([(0, b"\x90\x3c\x40"), (0, b"\x90\x3c\x40"), (10, b"\x80\x3c\x40")])),
        header(1, 1, 0x7FFF) + chunk(b"MTrk", track_bytes([(0, tempo_event(0xFFFFFF)), *note])),
        header(1, 40, 480) + chunk(b"MTrk", track_bytes(note, running_status=True)) * 40,
        header(0, 1, 480) + chunk(b"MTrk", b"\x00\xf0\x05\x01\x02\x03\x04\xf7" + track_bytes(note)),
        header(1, 1, 480)
        + chunk(b"MTrk", track_bytes([(0, b"\x90\x00\x40"), (1, b"\x90\x7f\x40"), (2, b"\x90\x00\x00")])),
    ]
    return seeds


def make_seeds(rng: random.Random, corpus: list[Path], n_random: int = 60, n_corpus: int = 10) -> list[bytes]:
    seeds = odd_seeds()
    seeds += [random_performance(rng).to_bytes() for _ in range(n_random)]
    files = [p for p in corpus if p.stat().st_size <= MAX_INPUT_BYTES]
    for path in rng.sample(files, min(n_corpus, len(files))):
        seeds.append(path.read_bytes())
    return seeds


# --- mutations --------------------------------------------------------------------------------


def split_chunks(data: bytes) -> tuple[bytes, list[bytes]] | None:
    """(header chunk, track bodies) when the file's chunk structure is intact, else None."""
    if data[:4] != b"MThd" or len(data) < 14:
        return None
    pos = 8 + struct.unpack(">I", data[4:8])[0]
    head, bodies = data[:pos], []
    while pos + 8 <= len(data):
        length = struct.unpack(">I", data[pos + 4 : pos + 8])[0]
        if pos + 8 + length > len(data):
            return None
        bodies.append(data[pos + 8 : pos + 8 + length])
        pos += 8 + length
    return (head, bodies) if bodies else None


def random_event(rng: random.Random) -> bytes:
    kind = rng.randrange(9)
    if kind == 0:
        return vlq(rng.choice([0x0FFFFFFF, 0x7FFFFFFF, 1 << 35, rng.randrange(1 << 28)])) + b"\x90\x3c\x40"
    if kind == 1:
        return b"\x00" + tempo_event(rng.choice([0, 1, 0xFFFFFF, rng.randrange(1 << 24)]))
    if kind == 2:  # sysex claiming more bytes than exist
        return b"\x00\xf0" + vlq(rng.choice([0x0FFFFFFF, rng.randrange(1 << 16)])) + b"\x01\x02"
    if kind == 3:  # meta event with a huge length
        return (
            b"\x00\xff" + bytes([rng.randrange(128)]) + vlq(rng.choice([0x0FFFFFFF, rng.randrange(1 << 20)]))
        )
    if kind == 4:  # channel message with data bytes >= 0x80
        return (
            b"\x00"
            + bytes([rng.choice([0x80, 0x90, 0xA0, 0xB0, 0xE0]) | rng.randrange(16)])
            + bytes([rng.randrange(256), rng.randrange(256)])
        )
    if kind == 5:
        return b"\x00" + END_OF_TRACK
    if kind == 6:  # running status data without any status
        return bytes([0, rng.randrange(128), rng.randrange(128)])
    if kind == 7:  # pedal
        return b"\x00\xb0\x40" + bytes([rng.choice([0, 63, 64, 127])])
    return bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))


def mutate_bytes(data: bytearray, rng: random.Random, other: bytes) -> bytearray:
    kind = rng.randrange(9)
    n = len(data)
    if n == 0:
        return bytearray(other[: rng.randint(0, len(other))])
    i = rng.randrange(n)
    if kind == 0:
        data[i] ^= 1 << rng.randrange(8)
    elif kind == 1:
        data[i] = rng.choice(INTERESTING_BYTES)
    elif kind == 2:
        data[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    elif kind == 3:
        del data[i : i + rng.randint(1, 64)]
    elif kind == 4:
        j = rng.randint(i, min(n, i + 256))
        data[j:j] = data[i:j] * rng.randint(1, 8)
    elif kind == 5:
        del data[rng.randint(0, n) :]
    elif kind == 6:
        j = rng.randrange(len(other)) if other else 0
        data = data[:i] + bytearray(other[j:])
    elif kind == 7 and n >= 14:  # a header field
        field = rng.choice([(8, 10), (10, 12), (12, 14), (4, 8)])
        width = field[1] - field[0]
        data[field[0] : field[1]] = (
            rng.choice([0, 1, 2, 0xFF, 0x7FFF, 0x8000, 0xFFFF, rng.randrange(1 << 16)]).to_bytes(2, "big")
            if width == 2
            else rng.choice([0, 5, 7, 0xFFFFFFFF, rng.randrange(64)]).to_bytes(4, "big")
        )
    else:  # a chunk length somewhere
        for pos in [m.start() for m in re.finditer(b"MTrk", data)][:1] or [i]:
            if pos + 8 <= n:
                data[pos + 4 : pos + 8] = rng.choice(
                    [0, 1, 0x7FFFFFFF, 0xFFFFFFFF, rng.randrange(n + 16)]
                ).to_bytes(4, "big")
    return data


def mutate_track(data: bytes, rng: random.Random) -> bytes | None:
    """Insert an event into, or damage, one track body, then fix its chunk length."""
    parts = split_chunks(data)
    if parts is None:
        return None
    head, bodies = parts
    t = rng.randrange(len(bodies))
    body = bytearray(bodies[t])
    i = rng.randint(0, len(body))
    if rng.random() < 0.6:
        body[i:i] = random_event(rng)
    else:
        body = mutate_bytes(body, rng, bodies[rng.randrange(len(bodies))])
    if rng.random() < 0.1:  # many tracks
        bodies = bodies + [bytes(body)] * rng.randint(1, 300)
    else:
        bodies[t] = bytes(body)
    return head + b"".join(chunk(b"MTrk", b) for b in bodies)


def mutate(data: bytes, rng: random.Random, corpus: list[bytes]) -> bytes:
    for _ in range(rng.randint(1, 4)):
        if rng.random() < 0.5:
            out = mutate_track(data, rng)
            if out is not None:
                data = out
                continue
        data = bytes(mutate_bytes(bytearray(data), rng, rng.choice(corpus)))
    return data[:MAX_INPUT_BYTES]


# --- the worker -------------------------------------------------------------------------------


def run_one(path: Path, tokenizer) -> tuple[str, str]:
    """(outcome, detail) of one input: what the dataset builder does with a file."""
    import numpy as np

    from piano_gpt.data.records import cut_at_pauses
    from piano_gpt.midi import MidiReadError, read_notes

    try:
        notes = read_notes(path)
    except MidiReadError as error:
        return "MidiReadError", re.sub(r"\d+", "N", error.problem)[:90]
    except MemoryError as error:
        return "memory", f"MemoryError {error}"[:200]
    except Exception as error:
        return "bug", f"read_notes: {type(error).__name__}: {error}"[:200]
    problem = note_table_problem(notes)
    if problem:
        return "invariant", problem
    try:
        for part in cut_at_pauses(notes):
            part = part[(part["pitch"] >= 21) & (part["pitch"] <= 108)]
            if len(part) == 0:
                continue
            tokens = np.asarray(tokenizer.encode(part))
            if len(tokens) and (tokens.min() < 0 or tokens.max() >= tokenizer.vocab_size):
                return "invariant", "token id out of range"
    except MemoryError as error:
        return "memory", f"MemoryError {error}"[:200]
    except Exception as error:
        return "bug", f"tokenize: {type(error).__name__}: {error}"[:200]
    return "ok", f"{len(notes)} notes"


def worker(conn, workdir: str, memory_mb: int) -> None:
    from piano_gpt.tokenizers import ExponentialTimeTokenizer

    tokenizer = ExponentialTimeTokenizer()
    import numpy  # noqa: F401  (imported before the limit is set)
    import pandas  # noqa: F401

    used = int(Path("/proc/self/statm").read_text().split()[0]) * resource.getpagesize()
    limit = used + memory_mb * (1 << 20)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    path = Path(workdir) / "input.mid"
    while True:
        data = conn.recv_bytes()
        path.write_bytes(data)
        t0 = time.perf_counter()
        outcome, detail = run_one(path, tokenizer)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        conn.send((outcome, detail, time.perf_counter() - t0, rss))


class Runner:
    """One worker process at a time; restarted after a crash, a hang or a memory error."""

    def __init__(self, workdir: Path, memory_mb: int, timeout: float):
        self.ctx = mp.get_context("spawn")
        self.workdir, self.memory_mb, self.timeout = workdir, memory_mb, timeout
        self.process = None
        self.peak_rss_kb = 0
        self.start()

    def start(self) -> None:
        self.conn, child = self.ctx.Pipe()
        self.process = self.ctx.Process(
            target=worker, args=(child, str(self.workdir), self.memory_mb), daemon=True
        )
        self.process.start()
        child.close()

    def stop(self) -> None:
        if self.process is not None and self.process.is_alive():
            self.process.kill()
        self.process.join()

    def run(self, data: bytes) -> tuple[str, str, float]:
        self.conn.send_bytes(data)
        if not self.conn.poll(self.timeout):
            self.stop()
            self.start()
            return "hang", f"over {self.timeout} s", self.timeout
        try:
            outcome, detail, seconds, rss = self.conn.recv()
        except EOFError:
            self.process.join()
            code = self.process.exitcode
            self.start()
            return "crash", f"worker died (exit code {code})", 0.0
        self.peak_rss_kb = max(self.peak_rss_kb, rss)
        if outcome == "memory":
            self.stop()
            self.start()
        return outcome, detail, seconds


# --- the builder over fuzz inputs --------------------------------------------------------------


def build_over(inputs: list[bytes], workdir: Path) -> dict:
    from piano_gpt.data.shards import build_split
    from piano_gpt.data.sources import MidiFileItem
    from piano_gpt.tokenizers import ExponentialTimeTokenizer

    folder = workdir / "build_inputs"
    folder.mkdir(exist_ok=True)
    items = []
    for i, data in enumerate(inputs):
        path = folder / f"input-{i:04d}.mid"
        path.write_bytes(data)
        items.append(MidiFileItem(str(path), json.dumps({"title": path.name})))
    t0 = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):  # one "skipped ..." line per bad file
        shards = build_split(items, ExponentialTimeTokenizer(), workdir / "shards" / "train", n_workers=2)
    manifest = json.loads((shards.root / "manifest.json").read_text())
    errors = json.loads((shards.root / "errors.json").read_text())
    return {
        "items": len(items),
        "records": manifest["records"],
        "items_skipped": manifest["errors"],
        "errors_name_the_file": all(Path(e["item"]).name in e["error"] for e in errors),
        "seconds": round(time.perf_counter() - t0, 1),
    }


ERROR_GROUPS = {
    "malformed MIDI": "malformed (parser)",
    "not a MIDI file": "not a MIDI file",
    "a RIFF file": "not a MIDI file",
    "empty file": "empty file",
    "contains no": "no notes",
    "corrupt header": "0 ticks per quarter (limit)",
    "a track lasts": "over MAX_TICKS (limit)",
    "notes last until": "over MAX_SECONDS (limit)",
    "more than": "over MAX_NOTES (limit)",
    "note times are not finite": "non-finite times (limit)",
}


def error_groups(kinds: Counter) -> Counter:
    """MidiReadError counts by the check that raised them."""
    groups: Counter[str] = Counter()
    for key, count in kinds.items():
        if key.startswith("MidiReadError: "):
            problem = key.removeprefix("MidiReadError: ")
            group = next(
                (name for prefix, name in ERROR_GROUPS.items() if problem.startswith(prefix)), "other"
            )
            groups[group] += count
    return groups


# --- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long to fuzz")
    parser.add_argument("--max-inputs", type=int, default=None, help="stop after this many inputs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--corpus", type=Path, action="append", default=[], help="folder of .mid/.midi seeds")
    parser.add_argument("--out", type=Path, default=REPO / "tmp" / "fuzz_midi")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds per input before it is a hang")
    parser.add_argument("--memory-mb", type=int, default=2048, help="address space a worker may add")
    parser.add_argument(
        "--build-sample", type=int, default=300, help="inputs the builder runs over at the end"
    )
    args = parser.parse_args(argv)

    rng = random.Random(args.seed)
    corpus_files = sorted(p for folder in args.corpus for p in folder.rglob("*.mid*"))
    corpus = make_seeds(rng, corpus_files)
    n_seeds = len(corpus)
    findings_dir = args.out / "findings"
    findings_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="fuzz_midi_"))
    runner = Runner(workdir, args.memory_mb, args.timeout)

    outcomes: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    findings: list[dict] = []
    sample: list[bytes] = []
    slowest = 0.0
    tried = 0
    started = time.time()
    try:
        while time.time() - started < 60 * args.minutes and (
            args.max_inputs is None or tried < args.max_inputs
        ):
            parent = rng.choice(corpus)
            data = mutate(parent, rng, corpus) if rng.random() < 0.95 else parent
            outcome, detail, seconds = runner.run(data)
            tried += 1
            slowest = max(slowest, seconds)
            outcomes[outcome] += 1
            key = f"{outcome}: {detail}" if outcome in ("MidiReadError", "bug", "invariant") else outcome
            new_kind = key not in kinds
            kinds[key] += 1
            if outcome in ("bug", "invariant", "crash", "hang", "memory"):
                digest = hashlib.sha256(data).hexdigest()[:16]
                (findings_dir / f"{outcome}-{digest}.mid").write_bytes(data)
                findings.append({"outcome": outcome, "detail": detail, "file": f"{outcome}-{digest}.mid"})
                print(f"[{tried}] {outcome}: {detail} -> findings/{outcome}-{digest}.mid", flush=True)
            # Cheap guidance: an input that produced a new kind of outcome (or read fine) breeds.
            if (new_kind or outcome == "ok") and len(data) < MAX_INPUT_BYTES // 4:
                if len(corpus) < 2000:
                    corpus.append(data)
                else:  # keep the seeds, let the rest turn over
                    corpus[rng.randrange(n_seeds, len(corpus))] = data
            if len(sample) < args.build_sample:
                sample.append(data)
            elif rng.random() < args.build_sample / tried:
                sample[rng.randrange(len(sample))] = data
            if tried % 5000 == 0:
                rate = tried / (time.time() - started)
                print(f"[{tried}] {rate:.0f}/s {dict(outcomes)}", flush=True)
    finally:
        runner.stop()
    elapsed = time.time() - started
    try:
        build = build_over(sample + [(findings_dir / f["file"]).read_bytes() for f in findings], workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    summary = {
        "seed": args.seed,
        "minutes": round(elapsed / 60, 2),
        "inputs": tried,
        "inputs_per_second": round(tried / elapsed, 1),
        "outcomes": dict(outcomes),
        "findings": findings,
        "error_kinds": len([k for k in kinds if k.startswith("MidiReadError")]),
        "errors_by_check": dict(error_groups(kinds).most_common()),
        "most_common": kinds.most_common(12),
        "slowest_input_s": round(slowest, 3),
        "worker_peak_rss_mb": round(runner.peak_rss_kb / 1024),
        "seeds": n_seeds,
        "corpus": len(corpus),
        "build": build,
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k != "most_common"}, indent=1))
    return summary


if __name__ == "__main__":
    summary = main()
    sys.exit(1 if summary["findings"] else 0)

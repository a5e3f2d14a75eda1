"""What keying the shard cache on file contents costs: ``dataset_fingerprint`` over MAESTRO.

    python bench/dataset_fingerprint.py [--maestro ../shared/data/maestro] [--repeats 5]

Timed, alternating, median of ``--repeats`` (after one untimed warm-up, so the files are in the page
cache, as after any build): ``dataset_fingerprint`` (sha256 of every file the csv names, what the
cache key uses); a size + mtime key over the same files (the cheaper, incorrect peer: a file
replaced by ``cp -p`` or unpacked from an archive keeps both); and listing the items
(``maestro_items`` for train and validation, work every build does anyway).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import time
from pathlib import Path

from piano_gpt.data.sources import dataset_files, dataset_fingerprint, maestro_items


def stat_key(config: dict) -> str:
    digest = hashlib.sha256()
    for path in dataset_files(config):
        stat = path.stat()
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    return digest.hexdigest()


def list_items(config: dict) -> int:
    return sum(len(maestro_items(config["path"], split)) for split in ("train", "validation"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--maestro", default=str(Path(__file__).resolve().parents[2] / "shared/data/maestro"))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    config = {"type": "maestro", "path": args.maestro}
    files = dataset_files(config)
    size = sum(path.stat().st_size for path in files if path.exists())
    jobs = {
        "contents (sha256)": dataset_fingerprint,
        "size + mtime": stat_key,
        "listing the items": list_items,
    }
    times: dict[str, list[float]] = {name: [] for name in jobs}
    for job in jobs.values():
        job(config)
    for _ in range(args.repeats):
        for name, job in jobs.items():
            start = time.perf_counter()
            job(config)
            times[name].append(time.perf_counter() - start)
    print(f"{len(files)} files, {size / 1e6:.1f} MB; load average {os.getloadavg()[0]:.2f}")
    base = statistics.median(times["listing the items"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.3f} s | {median / base:.2f}x listing |")


if __name__ == "__main__":
    main()

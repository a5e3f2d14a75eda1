"""The embedded demo corpus: Bach chorales as synthetic piano performances, shipped with the package.

It is the offline default dataset: no network and no extra dependency (music21 is only needed to
rebuild it with ``scripts/build_demo_corpus.py``). See ``docs/demo_corpus.md``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

DEMO_CORPUS_PATH = Path(__file__).resolve().parent / "demo" / "bach_chorales.parquet"
DEMO_SPLITS = ("train", "validation", "test")

PROVENANCE = (
    "Demo corpus 'demo-bach-chorales': the chorale harmonisations of Johann Sebastian Bach "
    "(1685-1750) bundled in the corpus of music21 10.5.1 (music21/corpus/bach; 409 scores, BWV 846 "
    "left out), rendered by scripts/build_demo_corpus.py as piano performances. The compositions are "
    "in the public domain. The MusicXML encodings were compiled by Margaret Greentree "
    "(jsbchorales.net; some scores credit '(c)2004 Margaret Greentree') and are distributed in the "
    "music21 corpus with the encoders' permission (music21/corpus/license.txt); music21 itself is "
    "BSD-3-Clause licensed (Copyright (c) 2006-2026 Michael Scott Asato Cuthbert). Only the notes "
    "(pitches and score rhythm) are taken from the encodings; no notation, layout or text is copied. "
    "The performance (tempo, fermata ritardandi and breaths, velocities, onset jitter, legato) is "
    "synthetic and deterministic: made up per piece by a seeded random generator, not played by "
    "anyone. Splits (~90/5/5 train/validation/test) come from a stable hash of the hymn title."
)


def load_demo_records(split: str) -> list[dict]:
    """Records of one split in the epr-labs schema: ``{"notes": {pitch, velocity, start, end,
    duration: lists}, "source": "<json>"}``, notes sorted by start."""
    if split not in DEMO_SPLITS:
        raise ValueError(f"unknown demo split {split!r}; expected one of {DEMO_SPLITS}")
    table = pq.read_table(DEMO_CORPUS_PATH, columns=["notes", "source"])
    sources = table.column("source").to_pylist()
    rows = [i for i, source in enumerate(sources) if json.loads(source).get("split") == split]
    notes = table.column("notes").take(rows).to_pylist()
    return [{"notes": n, "source": sources[i]} for i, n in zip(rows, notes)]


__all__ = ["DEMO_CORPUS_PATH", "DEMO_SPLITS", "PROVENANCE", "load_demo_records"]

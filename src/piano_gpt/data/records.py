"""Records: note tables with their source, in the epr-labs HF schema, and cutting pieces at pauses."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa

from piano_gpt.midi import make_notes

# The epr-labs ``notes`` column: one struct of equal-length lists per record.
NOTES_ARROW_TYPE = pa.struct(
    [
        ("pitch", pa.list_(pa.int64())),
        ("velocity", pa.list_(pa.int64())),
        ("start", pa.list_(pa.float64())),
        ("end", pa.list_(pa.float64())),
        ("duration", pa.list_(pa.float64())),
    ]
)

MAX_PAUSE = 4.0  # seconds: pieces are cut into records at longer silences (as the epr-labs sets are)


def notes_to_record(notes: pd.DataFrame, source: dict) -> dict:
    return {
        "notes": {
            "pitch": notes["pitch"].astype(int).tolist(),
            "velocity": notes["velocity"].astype(int).tolist(),
            "start": notes["start"].astype(float).tolist(),
            "end": notes["end"].astype(float).tolist(),
            "duration": (notes["end"] - notes["start"]).astype(float).tolist(),
        },
        "source": json.dumps(source),
    }


def record_to_notes(record: dict) -> pd.DataFrame:
    notes = record["notes"]
    return make_notes(notes["pitch"], notes["velocity"], notes["start"], notes["end"])


def record_source(record: dict) -> dict:
    source = record.get("source", "{}")
    return json.loads(source) if isinstance(source, str) else dict(source)


def cut_at_pauses(notes: pd.DataFrame, max_pause: float = MAX_PAUSE) -> list[pd.DataFrame]:
    """Split a piece where nothing sounds for more than ``max_pause`` seconds; each part starts at 0."""
    if len(notes) == 0:
        return []
    start = notes["start"].to_numpy()
    # Silence before note i: its start minus the latest end of any earlier note.
    latest_end = np.maximum.accumulate(notes["end"].to_numpy())
    silence = start[1:] - latest_end[:-1]
    cuts = np.flatnonzero(silence > max_pause) + 1
    parts = []
    for part in np.split(np.arange(len(notes)), cuts):
        chunk = notes.iloc[part]
        offset = chunk["start"].min()
        parts.append(
            make_notes(chunk["pitch"], chunk["velocity"], chunk["start"] - offset, chunk["end"] - offset)
        )
    return parts

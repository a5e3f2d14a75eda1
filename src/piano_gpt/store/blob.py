"""Note tables <-> compact binary blobs (no pickle).

Layout (all little-endian)::

    magic  b"PGN1"                      4 bytes
    count  uint32                       4 bytes   number of notes n
    codes  uint8, uint8                 2 bytes   dtype codes of pitch and velocity
    pad    2 zero bytes                 2 bytes
    pitch     n x (int8|uint8|int16|int32|int64)  smallest type that holds every value
    velocity  n x (same choice)
    start     n x float64
    end       n x float64

Pitch and velocity usually take one byte each, so a note costs 18 bytes. Decoding gives back the
canonical dtypes (int64, int64, float64, float64) with a fresh RangeIndex, so for a canonical note table
``blob_to_notes(notes_to_blob(notes))`` equals ``notes`` exactly (floats bit for bit, order kept).
"""

from __future__ import annotations

import struct

import numpy as np
import pandas as pd

from piano_gpt.midi import NOTE_COLUMNS

MAGIC = b"PGN1"
_HEADER = struct.Struct("<4sIBB2x")
# Code -> little-endian dtype; the encoder picks the first one that holds all values.
_INT_DTYPES = {
    1: np.dtype("<u1"),
    2: np.dtype("<i1"),
    3: np.dtype("<i2"),
    4: np.dtype("<i4"),
    5: np.dtype("<i8"),
}
_FLOAT = np.dtype("<f8")
MAX_NOTES = 2**32 - 1


class NotesBlobError(ValueError):
    """A blob is not a valid encoded note table."""


def _integer_column(notes: pd.DataFrame, name: str) -> np.ndarray:
    values = notes[name].to_numpy()
    if values.dtype.kind in "iub":
        return values.astype(np.int64)
    as_float = values.astype(np.float64)
    as_int = as_float.astype(np.int64) if np.isfinite(as_float).all() else None
    if as_int is None or not np.array_equal(as_int, as_float):
        raise ValueError(f"note column {name!r} must hold integers")
    return as_int


def _smallest_code(values: np.ndarray) -> int:
    if len(values) == 0:
        return 1
    low, high = int(values.min()), int(values.max())
    for code, dtype in _INT_DTYPES.items():
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return code
    raise AssertionError("int64 always fits")  # pragma: no cover


def notes_to_blob(notes: pd.DataFrame) -> bytes:
    """Encode the ``pitch, velocity, start, end`` columns of a note table (other columns are dropped)."""
    missing = [name for name in NOTE_COLUMNS if name not in notes.columns]
    if missing:
        raise ValueError(f"note table lacks columns {missing}")
    if len(notes) > MAX_NOTES:
        raise ValueError(f"too many notes for one blob: {len(notes)}")
    pitch = _integer_column(notes, "pitch")
    velocity = _integer_column(notes, "velocity")
    start = notes["start"].to_numpy(dtype=np.float64)
    end = notes["end"].to_numpy(dtype=np.float64)
    pitch_code, velocity_code = _smallest_code(pitch), _smallest_code(velocity)
    parts = [
        _HEADER.pack(MAGIC, len(notes), pitch_code, velocity_code),
        pitch.astype(_INT_DTYPES[pitch_code]).tobytes(),
        velocity.astype(_INT_DTYPES[velocity_code]).tobytes(),
        start.astype(_FLOAT).tobytes(),
        end.astype(_FLOAT).tobytes(),
    ]
    return b"".join(parts)


def blob_to_notes(blob: bytes | bytearray | memoryview) -> pd.DataFrame:
    """Decode a blob from :func:`notes_to_blob` into a note table (int64, int64, float64, float64)."""
    blob = bytes(blob)
    if len(blob) < _HEADER.size:
        raise NotesBlobError(f"notes blob too short ({len(blob)} bytes)")
    magic, count, pitch_code, velocity_code = _HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise NotesBlobError(f"not a notes blob (magic {magic!r})")
    if pitch_code not in _INT_DTYPES or velocity_code not in _INT_DTYPES:
        raise NotesBlobError(f"unknown dtype codes {pitch_code}, {velocity_code}")
    pitch_dtype, velocity_dtype = _INT_DTYPES[pitch_code], _INT_DTYPES[velocity_code]
    expected = _HEADER.size + count * (pitch_dtype.itemsize + velocity_dtype.itemsize + 2 * _FLOAT.itemsize)
    if len(blob) != expected:
        raise NotesBlobError(f"notes blob has {len(blob)} bytes, expected {expected} for {count} notes")
    offset = _HEADER.size
    columns = {}
    for name, dtype in (
        ("pitch", pitch_dtype),
        ("velocity", velocity_dtype),
        ("start", _FLOAT),
        ("end", _FLOAT),
    ):
        array = np.frombuffer(blob, dtype=dtype, count=count, offset=offset)
        offset += count * dtype.itemsize
        columns[name] = array.astype(np.int64 if dtype.kind in "iu" else np.float64)  # native, writable copy
    return pd.DataFrame(columns)

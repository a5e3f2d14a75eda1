"""Build the embedded demo corpus: the Bach chorales bundled with music21, rendered as piano performances.

Every chorale score in music21's bundled corpus (``music21/corpus/bach``, offline) is turned into one
note table: the four voices (soprano, alto, tenor, bass) merged into one piano part, ties merged,
repeats expanded. Cantata movements whose instruments play interludes between the sung lines keep
every pitched part (timpani left out), so the interludes are heard instead of silence. The scores carry no performance, so one is
made up deterministically (a numpy generator seeded from the file name):

- a tempo per piece (quarter = 60..88 bpm) with a slow, small drift;
- at each fermata: a ritardando over the beat before it, the fermata held longer, and a breath after;
- velocity by voice (soprano loudest, then bass, inner voices softest), a metrical accent from the
  beat strength and a small random variation; a loudness offset per piece;
- onset jitter of a few milliseconds (per chord and per note; the melody leads slightly);
- legato: a note followed by another note of its voice ends a little after that note starts; a note
  before a rest or a breath is released a little early. A key cannot sound twice: a note ends where
  the same pitch is struck again.

One parquet file is written, one row per piece, in the epr-labs HF schema (``notes``: struct of lists
``pitch, velocity, start, end, duration``; ``source``: JSON string). The split (~90% train, ~5%
validation, ~5% test) is a stable hash of the normalised hymn title, so the harmonisations of one hymn
tune never straddle splits. Running the script twice writes identical content.

    /work/venv/bin/python scripts/build_demo_corpus.py [--out src/piano_gpt/data/demo/bach_chorales.parquet]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import unicodedata
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from piano_gpt.data.records import NOTES_ARROW_TYPE

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "src" / "piano_gpt" / "data" / "demo" / "bach_chorales.parquet"

COMPOSER = "Johann Sebastian Bach"
DATASET = "demo-bach-chorales"
NOT_CHORALES = {"bwv846"}  # the C major prelude and fugue (WTC I), also in music21/corpus/bach
SPLITS = ("train", "validation", "test")

GRID = 1 / 24  # quarter notes per cell of the tempo map
VOICE_VELOCITY = {"soprano": 74, "alto": 58, "tenor": 57, "bass": 64, "other": 56}
MELODY_LEAD = 0.008  # seconds the soprano sounds ahead of the other voices

SCHEMA = pa.schema([("notes", NOTES_ARROW_TYPE), ("source", pa.string())])


def stable_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def normalise(title: str) -> str:
    text = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode().lower()
    return re.sub(r"[^a-z0-9]+", " ", text).strip()


def split_of(hymn_title: str) -> str:
    bucket = stable_int(normalise(hymn_title)) % 100
    return "train" if bucket < 90 else "validation" if bucket < 95 else "test"


def chorale_files() -> list[Path]:
    from music21 import corpus

    files = [
        Path(p)
        for p in corpus.getComposer("bach")
        if Path(p).parent.name == "bach" and Path(p).suffix in (".mxl", ".xml")
    ]
    return sorted((p for p in files if p.stem not in NOT_CHORALES), key=lambda p: bwv_sort_key(p.stem))


def bwv_sort_key(stem: str) -> tuple:
    parts = re.findall(r"\d+|[^\d]+", stem[3:])
    return tuple((0, int(x), "") if x.isdigit() else (1, 0, x) for x in parts)


def hymn_titles() -> dict[str, str]:
    """BWV number (as in the file names: '269', '153.1', '248.9-1') -> hymn title, from music21's lists."""
    from music21 import corpus

    titles = {str(k): v["title"] for k, v in corpus.chorales.ChoraleListRKBWV().byBWV.items()}
    for info in corpus.chorales.ChoraleList().byBudapest.values():
        titles.setdefault(str(info["bwv"]), info["title"])
    return titles


def title_from_credits(path: Path) -> str | None:
    """The title printed on the score ('BWV 1.6  Wie schön leuchtet ...'), when the lists lack it."""
    from music21 import converter

    score = converter.parse(path)
    for box in score.recurse().getElementsByClass("TextBox"):
        match = re.match(r"\s*BWV\s*[\d.]+\S*\s+(.+)", box.content or "")
        if match:
            title = match.group(1).strip()
            if re.search("[šŠœŸ]", title):  # Mac Roman bytes read as cp1252 ('schšn' for 'schön')
                title = title.encode("cp1252").decode("mac_roman")
            return title
    return None


def voice_of(part_name: str | None) -> str:
    name = (part_name or "").strip().lower()
    for voice in ("soprano", "alto", "tenor", "bass"):
        if name.startswith(voice):
            return voice
    return "other"


def part_events(parts: list) -> tuple[list[dict], list[tuple[float, float]]]:
    """Notes of ``parts`` in quarter-note time (part, voice, pitch, onset, end, beat strength), fermatas."""
    events, fermatas = [], set()
    for index, part in enumerate(parts):
        voice = voice_of(part.partName)
        stripped = part.stripTies()
        for element in stripped.recurse().notes:
            length = float(element.quarterLength)
            if element.duration.isGrace or length <= 0:
                continue
            onset = float(element.getOffsetInHierarchy(stripped))
            strength = float(element.beatStrength or 0.0)
            if any(type(e).__name__ == "Fermata" for e in element.expressions):
                fermatas.add((round(onset, 4), round(onset + length, 4)))
            for pitch in element.pitches:
                events.append(
                    {
                        "part": index,
                        "voice": voice,
                        "pitch": int(pitch.midi),
                        "onset": onset,
                        "end": onset + length,
                        "strength": strength,
                    }
                )
    return events, merge_fermatas(fermatas)


def longest_silence(events: list[dict]) -> float:
    """The longest stretch (quarter notes) between the first and the last note where nothing sounds."""
    longest, sounding_until = 0.0, None
    for event in sorted(events, key=lambda e: e["onset"]):
        if sounding_until is not None:
            longest = max(longest, event["onset"] - sounding_until)
            sounding_until = max(sounding_until, event["end"])
        else:
            sounding_until = event["end"]
    return longest


def score_events(score) -> tuple[list[dict], list[tuple[float, float]], float, float]:
    """Notes in quarter-note time, fermatas, total length and the beat (in quarter notes) of a score.

    The four voices are played; where the voices alone fall silent for more than three beats
    (instrumental interludes in cantata movements) every pitched part is played instead.
    """
    score = score.expandRepeats()
    parts = list(score.parts)
    pitched = [p for p in parts if "timpani" not in (p.partName or "").lower()]
    voices = [p for p in pitched if voice_of(p.partName) != "other"]
    events, fermatas = part_events(voices if len(voices) >= 4 else pitched)
    if len(voices) >= 4 and len(pitched) > len(voices) and longest_silence(events) > 3:
        events, fermatas = part_events(pitched)
    first = min((e["onset"] for e in events), default=0.0)
    for event in events:
        event["onset"] -= first
        event["end"] -= first
    fermatas = [(a - first, b - first) for a, b in fermatas]
    length = max((e["end"] for e in events), default=0.0)
    signature = score.recurse().getElementsByClass("TimeSignature").first()
    beat = float(signature.beatDuration.quarterLength) if signature is not None else 1.0
    return events, fermatas, length, beat


def merge_fermatas(fermatas: set[tuple[float, float]]) -> list[tuple[float, float]]:
    """One (onset, end) per fermata chord: the earliest onset and latest end of overlapping ones."""
    merged: list[list[float]] = []
    for onset, end in sorted(fermatas):
        if merged and onset < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([onset, end])
    return [(a, b) for a, b in merged]


class TimeMap:
    """Quarter-note time -> seconds: tempo with drift, ritardando and hold at fermatas, breaths."""

    def __init__(
        self,
        length: float,
        fermatas: list[tuple[float, float]],
        onsets: set[float],
        beat: float,
        rng: np.random.Generator,
    ):
        # Quarter = 60..88 bpm; half-note (3/2) and dotted-quarter (12/8) beats at 48..66 bpm.
        self.qpm = float(rng.uniform(60, 88) if beat <= 1 else rng.uniform(48, 66) * beat)
        cells = int(np.ceil(length / GRID)) + 1
        grid = np.arange(cells + 1) * GRID
        centres = grid[:-1] + GRID / 2
        # A slow tempo drift of a few percent: random values every two bars, linearly joined.
        knots = np.arange(0, length + 8, 8.0)
        factor = 1 + np.interp(centres, knots, rng.normal(0, 0.025, len(knots)))
        self.breaths: list[tuple[float, float]] = []
        for onset, end in fermatas:
            rit = rng.uniform(0.10, 0.25)
            before = (centres >= onset - 1) & (centres < onset)
            factor[before] *= 1 + rit * (centres[before] - (onset - 1))
            # The fermata is held longer, but by no more than ~1.5 s.
            held = (end - onset) * 60 / self.qpm
            factor[(centres >= onset) & (centres < end)] *= min(rng.uniform(1.4, 1.9), 1 + 1.5 / held)
            # A breath before the next phrase, unless it begins with a rest anyway.
            if end < length - 1e-6 and round(end, 4) in onsets:
                self.breaths.append((end, float(rng.uniform(0.12, 0.30))))
        last = centres >= length - 2  # the close slows down too, fermata or not
        factor[last] *= 1 + 0.15 * (centres[last] - (length - 2)) / 2
        self.grid = grid
        self.seconds = np.concatenate([[0.0], np.cumsum(factor * GRID * 60 / self.qpm)])

    def _base(self, q: np.ndarray) -> np.ndarray:
        return np.interp(q, self.grid, self.seconds)

    def onset(self, q: np.ndarray) -> np.ndarray:
        """When a note starting at ``q`` sounds: breaths at or before ``q`` have been taken."""
        extra = sum(np.where(q >= at - 1e-6, pause, 0.0) for at, pause in self.breaths)
        return self._base(q) + extra

    def release(self, q: np.ndarray) -> np.ndarray:
        """When a note ending at ``q`` stops: breaths at ``q`` come after it."""
        extra = sum(np.where(q > at + 1e-6, pause, 0.0) for at, pause in self.breaths)
        return self._base(q) + extra


def perform(
    events: list[dict], fermatas, length: float, beat: float, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Render score events as a piano performance (arrays pitch, velocity, start, end in seconds)."""
    voice_onsets: dict[int, set[float]] = {}
    for event in events:
        voice_onsets.setdefault(event["part"], set()).add(round(event["onset"], 4))
    # Unisons struck together sound as one key: keep the longest (the upper voice on a tie).
    events = sorted(events, key=lambda e: (e["pitch"], e["onset"], -e["end"], e["part"]))
    unique, seen = [], set()
    for event in events:
        if (event["pitch"], event["onset"]) not in seen:
            seen.add((event["pitch"], event["onset"]))
            unique.append(event)
    events = sorted(unique, key=lambda e: (e["onset"], e["part"], e["pitch"]))

    onsets = {round(e["onset"], 4) for e in events}
    timing = TimeMap(length, fermatas, onsets, beat, rng)
    onset = np.array([e["onset"] for e in events])
    end_q = np.array([e["end"] for e in events])
    pitch = np.array([e["pitch"] for e in events], dtype=np.int64)
    voice = [e["voice"] for e in events]
    soprano = np.array([v == "soprano" for v in voice])

    # Onsets: a jitter per chord (all notes struck at one score time) plus a smaller one per note.
    chord_times, chord_index = np.unique(onset, return_inverse=True)
    chord_jitter = rng.normal(0, 0.006, len(chord_times))[chord_index]
    jitter = np.clip(chord_jitter + rng.normal(0, 0.004, len(events)), -0.025, 0.025)
    start = np.maximum(timing.onset(onset) + jitter - MELODY_LEAD * soprano, 0.0)

    # Ends: legato into the next note of the voice, released a little early before rests and breaths.
    breath_points = {round(at, 4) for at, _ in timing.breaths}
    followed = np.array(
        [
            round(e["end"], 4) in voice_onsets[e["part"]] and round(e["end"], 4) not in breath_points
            for e in events
        ]
    )
    release = timing.release(end_q)
    end = np.where(
        followed,
        release + rng.uniform(0.015, 0.045, len(events)),
        release - rng.uniform(0.02, 0.06, len(events)),
    )

    # Velocity: voice, metrical accent, a piece offset and a little noise.
    base = np.array([VOICE_VELOCITY[v] for v in voice], dtype=float)
    strength = np.array([e["strength"] for e in events])
    velocity = base + rng.normal(0, 5) + 10 * (strength - 0.5) + rng.normal(0, 4, len(events))
    velocity = np.clip(np.round(velocity), 20, 110).astype(np.int64)

    # Out-of-range pitches (none in these scores, but be safe) move by octaves onto the keyboard.
    while (pitch < 21).any() or (pitch > 108).any():
        pitch = np.where(pitch < 21, pitch + 12, np.where(pitch > 108, pitch - 12, pitch))

    # A key cannot sound twice: end each note where its pitch is struck again.
    order = np.lexsort((start, pitch))
    following = np.full(len(events), np.inf)
    same = pitch[order][1:] == pitch[order][:-1]
    following[order[:-1][same]] = start[order][1:][same] - 0.01
    end = np.minimum(end, following)
    end = np.maximum(end, start + 0.05)

    start, end = np.round(start, 4), np.round(end, 4)
    order = np.lexsort((pitch, start))
    return {"pitch": pitch[order], "velocity": velocity[order], "start": start[order], "end": end[order]}


def build(out: Path) -> dict:
    from music21 import converter

    titles = hymn_titles()
    rows, stats = [], {s: {"pieces": 0, "notes": 0, "seconds": 0.0} for s in SPLITS}
    for path in chorale_files():
        bwv = path.stem[3:]
        hymn = titles.get(bwv) or titles.get(bwv.split("-")[0]) or title_from_credits(path) or ""
        # Unknown hymn: the movement number, so that variants of one movement ('-a', '-s') stay together.
        split = split_of(hymn or bwv.split("-")[0])
        rng = np.random.default_rng(stable_int(path.name))
        events, fermatas, length, beat = score_events(converter.parse(path))
        if not events:
            print(f"skipped {path.name}: no notes")
            continue
        notes = perform(events, fermatas, length, beat, rng)
        source = {
            "composer": COMPOSER,
            "title": f"BWV {bwv}" + (f": {hymn}" if hymn else ""),
            "split": split,
            "year": None,
            "midi_filename": None,
            "dataset": DATASET,
            "score": f"music21 corpus bach/{path.name}",
        }
        rows.append(
            {
                "notes": {
                    "pitch": notes["pitch"].tolist(),
                    "velocity": notes["velocity"].tolist(),
                    "start": notes["start"].tolist(),
                    "end": notes["end"].tolist(),
                    "duration": np.round(notes["end"] - notes["start"], 4).tolist(),
                },
                "source": json.dumps(source, ensure_ascii=False),
                "split": split,
            }
        )
        stats[split]["pieces"] += 1
        stats[split]["notes"] += len(notes["pitch"])
        stats[split]["seconds"] += float(notes["end"].max())

    # Rows grouped by split (train, validation, test), in BWV order within each.
    rows.sort(key=lambda r: SPLITS.index(r["split"]))
    table = pa.Table.from_pylist([{"notes": r["notes"], "source": r["source"]} for r in rows], schema=SCHEMA)
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out, compression="zstd", compression_level=19, row_group_size=len(rows))
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    stats = build(args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")
    print(f"{'split':<11} {'pieces':>6} {'notes':>8} {'minutes':>8}")
    for split in SPLITS:
        s = stats[split]
        print(f"{split:<11} {s['pieces']:>6} {s['notes']:>8} {s['seconds'] / 60:>8.1f}")
    total = {k: sum(s[k] for s in stats.values()) for k in ("pieces", "notes", "seconds")}
    print(f"{'total':<11} {total['pieces']:>6} {total['notes']:>8} {total['seconds'] / 60:>8.1f}")


if __name__ == "__main__":
    main()

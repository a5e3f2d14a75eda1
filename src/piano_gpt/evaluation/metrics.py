"""PIANO metrics: compare a generated note table with its target.

Every function takes note tables (pandas DataFrames with columns ``pitch, velocity, start, end``, times
in seconds) and returns plain floats / dicts of floats / numpy arrays. No metric returns NaN: empty and
degenerate inputs have documented values.

Metric families
---------------
* :func:`note_f1` -- note-level precision / recall / F1 from ``mir_eval`` (onset, onset+offset,
  onset+velocity).
* :func:`f1_over_time` -- the reference's "F1 over time": agreement of the sets of sounding notes,
  averaged over time.
* :func:`key_distribution`, :func:`key_correlation`, :func:`estimate_key` -- tonality through Chew's
  spiral array.
* :func:`note_histogram`, :func:`histogram_distances`, :func:`distribution_metrics` -- histograms of
  pitch, velocity, onset gaps and durations compared by Pearson correlation, taxicab (L1) distance and
  Wasserstein distance (computed over the bin positions, with the histograms as weights).
* :func:`compute_all_metrics` (one flat ``dict[str, float]``) and :func:`average_metrics`.

Edge-case conventions (summary; details in each docstring)
----------------------------------------------------------
* Precision / recall / F1: both tables empty -> 1.0; exactly one empty -> 0.0.
* Histogram comparisons: both empty -> correlation 1, distances 0; one empty -> correlation 0,
  taxicab 2 (its maximum), Wasserstein = the span of the bin range (its maximum). Two flat histograms
  (all bins equal) -> correlation 1; flat vs non-flat -> correlation 0.
* Key correlation: the same convention applied to the 24-bin key distributions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import mir_eval
import numpy as np
import pandas as pd
from scipy.stats import wasserstein_distance

__all__ = [
    "DISTRIBUTIONS",
    "HISTOGRAM_BINS",
    "KEY_NAMES",
    "average_metrics",
    "compute_all_metrics",
    "distribution_metrics",
    "estimate_key",
    "f1_over_time",
    "histogram_bin_centres",
    "histogram_bin_edges",
    "histogram_distances",
    "key_correlation",
    "key_distribution",
    "key_scores",
    "note_f1",
    "note_histogram",
    "spiral_key_points",
]

# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------

# mir_eval needs strictly positive durations; a zero-length (or inverted) note is given this length.
MIN_NOTE_DURATION = 1e-3


def _columns(notes: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """pitch (int64), velocity (int64), start (float64), end (float64) arrays of a note table."""
    missing = {"pitch", "velocity", "start", "end"} - set(notes.columns)
    if missing:
        raise KeyError(f"note table lacks columns {sorted(missing)}")
    pitch = notes["pitch"].to_numpy(dtype=np.int64)
    velocity = notes["velocity"].to_numpy(dtype=np.int64)
    start = notes["start"].to_numpy(dtype=np.float64)
    end = notes["end"].to_numpy(dtype=np.float64)
    return pitch, velocity, start, end


# --------------------------------------------------------------------------------------------------
# 1. Note-level F1 (mir_eval)
# --------------------------------------------------------------------------------------------------


def _mir_eval_arrays(notes: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(intervals (n, 2), pitches in Hz, velocities) in the form mir_eval validates.

    mir_eval refuses negative times and non-positive durations: starts are clipped at 0 and a note
    shorter than ``MIN_NOTE_DURATION`` is lengthened to it.
    """
    pitch, velocity, start, end = _columns(notes)
    start = np.maximum(start, 0.0)
    end = np.maximum(end, start + MIN_NOTE_DURATION)
    intervals = np.stack([start, end], axis=1).reshape(-1, 2)
    return intervals, mir_eval.util.midi_to_hz(pitch.astype(np.float64)), velocity.astype(np.float64)


def note_f1(
    target: pd.DataFrame,
    generated: pd.DataFrame,
    onset_tolerance: float = 0.05,
    offset_ratio: float = 0.2,
    offset_min_tolerance: float = 0.05,
    velocity_tolerance: float = 0.1,
) -> dict[str, float]:
    """Note-level precision / recall / F1 of ``generated`` against ``target`` (the reference).

    Computed with ``mir_eval`` (pitches converted to Hz; a note matches only a note of the same MIDI
    pitch, since mir_eval's pitch tolerance is 50 cents):

    * ``onset``: onsets within ``onset_tolerance`` seconds, offsets ignored
      (``mir_eval.transcription.precision_recall_f1_overlap(offset_ratio=None)``);
    * ``onset_offset``: also offsets within ``max(offset_ratio * reference duration,
      offset_min_tolerance)``;
    * ``onset_velocity``: onsets plus velocities, with mir_eval's velocity rule (reference velocities
      scaled to [0, 1], generated velocities linearly rescaled to fit them, within
      ``velocity_tolerance``) (``mir_eval.transcription_velocity.precision_recall_f1_overlap``,
      offsets ignored).

    Returns ``{"onset/precision", "onset/recall", "onset/f1", "onset_offset/...", "onset_velocity/..."}``.
    Empty inputs: both tables empty -> every value 1.0; exactly one empty -> every value 0.0 (mir_eval
    itself would warn and return 0 in both cases). Memory is O(len(target) * len(generated)) inside
    mir_eval (about 0.7 GB for 5,000 x 5,000 notes).
    """
    names = [
        f"{kind}/{stat}"
        for kind in ("onset", "onset_offset", "onset_velocity")
        for stat in ("precision", "recall", "f1")
    ]
    if len(target) == 0 or len(generated) == 0:
        value = 1.0 if len(target) == 0 and len(generated) == 0 else 0.0
        return dict.fromkeys(names, value)

    ref_intervals, ref_hz, ref_vel = _mir_eval_arrays(target)
    est_intervals, est_hz, est_vel = _mir_eval_arrays(generated)
    common = dict(onset_tolerance=onset_tolerance, offset_min_tolerance=offset_min_tolerance)

    onset = mir_eval.transcription.precision_recall_f1_overlap(
        ref_intervals, ref_hz, est_intervals, est_hz, offset_ratio=None, **common
    )
    onset_offset = mir_eval.transcription.precision_recall_f1_overlap(
        ref_intervals, ref_hz, est_intervals, est_hz, offset_ratio=offset_ratio, **common
    )
    onset_velocity = mir_eval.transcription_velocity.precision_recall_f1_overlap(
        ref_intervals,
        ref_hz,
        ref_vel,
        est_intervals,
        est_hz,
        est_vel,
        offset_ratio=None,
        velocity_tolerance=velocity_tolerance,
        **common,
    )
    result: dict[str, float] = {}
    for kind, scores in (
        ("onset", onset),
        ("onset_offset", onset_offset),
        ("onset_velocity", onset_velocity),
    ):
        precision, recall, f1 = (float(x) for x in scores[:3])
        result[f"{kind}/precision"] = precision
        result[f"{kind}/recall"] = recall
        result[f"{kind}/f1"] = f1
    return result


# --------------------------------------------------------------------------------------------------
# 2. F1 over time
# --------------------------------------------------------------------------------------------------


def _sounding_pairs(
    notes: pd.DataFrame, times: np.ndarray, use_pitch_class: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct (interval, key, velocity) triples: which notes sound in which elementary interval.

    ``times`` holds every start and end of both tables, so a note either covers an interval
    ``[times[i], times[i+1])`` completely or not at all. key = pitch, or pitch % 12.
    """
    pitch, velocity, start, end = _columns(notes)
    if len(pitch) and (pitch.min() < 0 or velocity.min() < 0):
        raise ValueError("pitch and velocity must be non-negative")
    first = np.searchsorted(times, start)
    last = np.searchsorted(times, end)  # exclusive: intervals first .. last-1
    counts = np.maximum(last - first, 0)
    total = int(counts.sum())
    note_index = np.repeat(np.arange(len(pitch)), counts)
    offsets = np.cumsum(counts) - counts
    interval = first[note_index] + (np.arange(total) - offsets[note_index])
    key = pitch[note_index] % 12 if use_pitch_class else pitch[note_index]
    vel = velocity[note_index]
    # Set semantics, as in the reference: a (key, velocity) pair counts once per interval.
    triples = np.unique(np.stack([interval, key, vel], axis=1).reshape(-1, 3), axis=0)
    return triples[:, 0], triples[:, 1], triples[:, 2]


def _max_threshold_matching(a: list[int], b: list[int], threshold: float) -> int:
    """Size of a maximum matching between sorted values ``a`` and ``b``, an edge where |x - y| <= threshold.

    Greedy two-pointer: each value of ``a`` (ascending) takes the smallest unused ``b`` within reach.
    All neighbourhoods are windows of equal width, so this greedy is optimal.
    """
    i = j = matched = 0
    while i < len(a) and j < len(b):
        if b[j] < a[i] - threshold:
            j += 1
        elif b[j] > a[i] + threshold:
            i += 1
        else:
            matched += 1
            i += 1
            j += 1
    return matched


def _matches_per_group(
    t_group: np.ndarray, t_vel: np.ndarray, g_group: np.ndarray, g_vel: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """(group codes, matched counts) of a maximum velocity matching inside each (interval, key) group.

    Inputs are sorted by (group, velocity), as ``np.unique`` leaves them. Groups where one side has a
    single element are done with numpy (matched = 1 if any element of the other side is within reach);
    groups with several elements on both sides (octaves in pitch-class mode, overlapping same-pitch
    notes) with the exact greedy of ``_max_threshold_matching``.
    """
    t_codes, t_first, t_count = np.unique(t_group, return_index=True, return_counts=True)
    g_codes, g_first, g_count = np.unique(g_group, return_index=True, return_counts=True)
    common, ti, gi = np.intersect1d(t_codes, g_codes, assume_unique=True, return_indices=True)
    matched = np.zeros(len(common), dtype=np.int64)
    if len(common) == 0:
        return common, matched
    ct, cg = t_count[ti], g_count[gi]
    t_row_group = np.repeat(np.arange(len(t_codes)), t_count)
    g_row_group = np.repeat(np.arange(len(g_codes)), g_count)

    # One target velocity in the group: scan the group's generated rows against it.
    single_t = ct == 1
    hit = _any_within(g_row_group, g_vel, gi, single_t, t_vel[t_first[ti]], threshold, len(g_codes))
    matched[hit] = 1
    # One generated velocity (and several target ones): scan the group's target rows.
    single_g = (cg == 1) & (ct > 1)
    hit = _any_within(t_row_group, t_vel, ti, single_g, g_vel[g_first[gi]], threshold, len(t_codes))
    matched[hit] = 1
    # Several on both sides: exact greedy per group.
    for k in np.flatnonzero((ct > 1) & (cg > 1)):
        a = t_vel[t_first[ti[k]] : t_first[ti[k]] + ct[k]].tolist()
        b = g_vel[g_first[gi[k]] : g_first[gi[k]] + cg[k]].tolist()
        matched[k] = _max_threshold_matching(a, b, threshold)
    return common, matched


def _any_within(
    row_group: np.ndarray,
    row_vel: np.ndarray,
    code_index: np.ndarray,
    selected: np.ndarray,
    single_vel: np.ndarray,
    threshold: float,
    n_codes: int,
) -> np.ndarray:
    """Indices k of the selected common groups where some row is within ``threshold`` of ``single_vel[k]``.

    ``row_group`` maps each row to its group in one side's code list; ``code_index[k]`` is common group
    k's position in that list.
    """
    position = np.full(n_codes, -1, dtype=np.int64)
    position[code_index[selected]] = np.flatnonzero(selected)
    row_pos = position[row_group]
    keep = row_pos >= 0
    within = np.abs(row_vel[keep] - single_vel[row_pos[keep]]) <= threshold
    hits = np.bincount(row_pos[keep], weights=within.astype(np.float64), minlength=len(selected))
    return np.flatnonzero(hits > 0)


def f1_over_time(
    target: pd.DataFrame,
    generated: pd.DataFrame,
    use_pitch_class: bool = False,
    velocity_threshold: float = 30,
) -> dict[str, float]:
    """Duration-weighted agreement of the sounding notes of two tables (the reference's F1 metric).

    Event points are every start and end of both tables; between two consecutive points each table has
    a *set* of sounding ``(key, velocity)`` pairs, key = pitch (or pitch class, ``pitch % 12``, when
    ``use_pitch_class``). A note sounds on ``[start, end)``; a zero-length note never sounds. A
    generated pair matches a target pair when the keys are equal and ``|velocity difference| <=
    velocity_threshold``; each pair is used at most once, and the number of matches ``m`` is a maximum
    matching (the reference's greedy could miss matches, depending on set order).

    Per interval with ``T`` target and ``G`` generated pairs: precision ``m/G``, recall ``m/T``,
    F1 their harmonic mean (0 when both are 0).

    Averaging (interval durations as weights):

    * ``f1``: over every interval where at least one table sounds; an interval where exactly one table
      sounds scores 0 (as in the reference). Silent intervals (neither table sounding) are left out.
    * ``precision``: over the intervals where the generated table sounds (it asks "of what the
      generation plays, how much is in the target?"; the reference also averaged in 0 for intervals
      where only the target sounds, which mixes recall into precision).
    * ``recall``: over the intervals where the target sounds.

    Empty cases: if neither table ever sounds (both empty, or only zero-length notes), every value is
    1.0; if exactly one table never sounds, every value is 0.0.
    """
    _, _, t_start, t_end = _columns(target)
    _, _, g_start, g_end = _columns(generated)
    times = np.unique(np.concatenate([t_start, t_end, g_start, g_end]))
    n_intervals = max(len(times) - 1, 0)
    durations = np.diff(times)

    t_int, t_key, t_vel = _sounding_pairs(target, times, use_pitch_class)
    g_int, g_key, g_vel = _sounding_pairs(generated, times, use_pitch_class)
    n_t = np.bincount(t_int, minlength=n_intervals).astype(np.float64)
    n_g = np.bincount(g_int, minlength=n_intervals).astype(np.float64)
    t_sounds, g_sounds = n_t > 0, n_g > 0
    if not t_sounds.any() and not g_sounds.any():
        return {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    if not t_sounds.any() or not g_sounds.any():
        return {"precision": 0.0, "recall": 0.0, "f1": 0.0}

    key_base = int(max(t_key.max(initial=0), g_key.max(initial=0))) + 1
    groups, matched = _matches_per_group(
        t_int * key_base + t_key, t_vel, g_int * key_base + g_key, g_vel, velocity_threshold
    )
    m = np.bincount(groups // key_base, weights=matched, minlength=n_intervals)

    precision = np.divide(m, n_g, out=np.zeros(n_intervals), where=g_sounds)
    recall = np.divide(m, n_t, out=np.zeros(n_intervals), where=t_sounds)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(n_intervals), where=denom > 0)

    active = t_sounds | g_sounds
    return {
        "precision": float(np.sum(precision * durations * g_sounds) / np.sum(durations[g_sounds])),
        "recall": float(np.sum(recall * durations * t_sounds) / np.sum(durations[t_sounds])),
        "f1": float(np.sum(f1 * durations * active) / np.sum(durations[active])),
    }


# --------------------------------------------------------------------------------------------------
# 3. Key: Chew's spiral array
# --------------------------------------------------------------------------------------------------

# Spiral array parameters (Chew 2000, "Towards a Mathematical Model of Tonality", calibrated values):
# pitch k on the line of fifths sits at P(k) = (r sin(k pi/2), r cos(k pi/2), k h), r = 1,
# h = sqrt(2/15): a fifth and a major third are then equally far apart (squared distance 32/15) and the
# nearest intervals, a minor third next (16/5).
SPIRAL_RADIUS = 1.0
SPIRAL_HEIGHT = math.sqrt(2.0 / 15.0)
# Chord weights (root, fifth, third) and key weights (tonic, dominant, subdominant): (0.536, 0.274, 0.19)
# for major and minor chords and keys alike; the minor key mixes major/minor dominant and subdominant
# chords with alpha = beta = 0.75.
SPIRAL_WEIGHTS = (0.536, 0.274, 0.19)
SPIRAL_ALPHA = 0.75
SPIRAL_BETA = 0.75
# The spiral distinguishes enharmonics (F# != Gb); MIDI pitch classes do not. Before the centre of effect
# is formed, the pitch classes present are spelled: placed on 12 consecutive line-of-fifths indices, the
# window being the one that makes them most compact (least weighted variance of the index; ties go to
# the window -5..6, Db..F#). Keys are then searched around that window. The whole construction commutes
# with transposition (the spiral is symmetric under k -> k + 1), so a transposed piece gets the
# transposed keys.
_FIFTHS_OF_PC = (7 * np.arange(12)) % 12  # pitch class -> position on the line of fifths, C=0 G=1 .. F=11
_WINDOW_LOW = np.arange(12) - 5  # spelling windows [low, low + 11], low = -5 .. 6
_SPELLINGS = ((_FIFTHS_OF_PC[None, :] - _WINDOW_LOW[:, None]) % 12) + _WINDOW_LOW[:, None]  # (window, pc)
# Softmax temperature (in spiral-distance units) turning a segment's distances to the 24 keys into a
# distribution. For scale: C major's key point is 0.39 from C minor's, 0.70 from G and F major's and 0.88
# from A minor's, so at 0.1 a segment's nearest key takes most of its vote, while keys a few hundredths
# farther still share it.
KEY_TEMPERATURE = 0.1

_TONIC_NAMES = ["C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"]
KEY_NAMES = [f"{name} major" for name in _TONIC_NAMES] + [f"{name} minor" for name in _TONIC_NAMES]


def _pitch_point(k) -> np.ndarray:
    """P(k) for line-of-fifths indices k (any shape): array of shape k.shape + (3,)."""
    k = np.asarray(k, dtype=np.float64)
    return np.stack(
        [SPIRAL_RADIUS * np.sin(k * np.pi / 2), SPIRAL_RADIUS * np.cos(k * np.pi / 2), k * SPIRAL_HEIGHT],
        axis=-1,
    )


def _major_chord(k) -> np.ndarray:
    w1, w2, w3 = SPIRAL_WEIGHTS
    k = np.asarray(k, dtype=np.float64)
    return w1 * _pitch_point(k) + w2 * _pitch_point(k + 1) + w3 * _pitch_point(k + 4)


def _minor_chord(k) -> np.ndarray:
    w1, w2, w3 = SPIRAL_WEIGHTS
    k = np.asarray(k, dtype=np.float64)
    return w1 * _pitch_point(k) + w2 * _pitch_point(k + 1) + w3 * _pitch_point(k - 3)


def spiral_key_points(k=0) -> tuple[np.ndarray, np.ndarray]:
    """Major and minor key points of the tonic at line-of-fifths index ``k`` (0 = C, 1 = G, -1 = F, ...).

    Major key: ``T_M(k) = w1 C_M(k) + w2 C_M(k+1) + w3 C_M(k-1)``; minor key: ``T_m(k) = w1 C_m(k)
    + w2 [alpha C_M(k+1) + (1-alpha) C_m(k+1)] + w3 [beta C_m(k-1) + (1-beta) C_M(k-1)]``, with
    chords ``C_M(k) = w1 P(k) + w2 P(k+1) + w3 P(k+4)`` and ``C_m(k) = w1 P(k) + w2 P(k+1) + w3 P(k-3)``
    and ``w = SPIRAL_WEIGHTS``. ``k`` may be an array; the points then have shape k.shape + (3,).
    """
    w1, w2, w3 = SPIRAL_WEIGHTS
    k = np.asarray(k, dtype=np.float64)
    major = w1 * _major_chord(k) + w2 * _major_chord(k + 1) + w3 * _major_chord(k - 1)
    minor = (
        w1 * _minor_chord(k)
        + w2 * (SPIRAL_ALPHA * _major_chord(k + 1) + (1 - SPIRAL_ALPHA) * _minor_chord(k + 1))
        + w3 * (SPIRAL_BETA * _minor_chord(k - 1) + (1 - SPIRAL_BETA) * _major_chord(k - 1))
    )
    return major, minor


def _key_distances(pc_weights: np.ndarray) -> np.ndarray:
    """Distances (n, 24) from each row's centre of effect to the 24 key points (KEY_NAMES order).

    ``pc_weights`` (n, 12): non-negative weight of each pitch class; every row must have a positive sum.
    The row's pitch classes are spelled in their most compact window (see ``_SPELLINGS``), the centre of
    effect is their weighted mean position, and each tonic pitch class is represented by the nearer of
    its two key points among the 24 line-of-fifths indices window_low - 6 .. window_low + 17.
    """
    w = pc_weights / pc_weights.sum(axis=1, keepdims=True)
    mean = w @ _SPELLINGS.T  # (n, window)
    variance = w @ (_SPELLINGS.T.astype(np.float64) ** 2) - mean**2
    window = np.argmin(np.round(variance, 9), axis=1)  # first (Db..F#) window on ties
    spelled = _SPELLINGS[window]  # (n, 12)
    centre = np.einsum("np,npd->nd", w, _pitch_point(spelled))  # (n, 3)
    k = _WINDOW_LOW[window][:, None] + np.arange(-6, 18)[None, :]  # (n, 24) candidate key indices
    tonic_pc = (7 * k[:, :12]) % 12  # k and k + 12 share a pitch class
    result = []
    for points in spiral_key_points(k):  # major, minor: (n, 24, 3)
        distance = np.linalg.norm(points - centre[:, None, :], axis=-1)
        nearer = np.minimum(distance[:, :12], distance[:, 12:])
        by_pc = np.empty_like(nearer)
        np.put_along_axis(by_pc, tonic_pc, nearer, axis=1)
        result.append(by_pc)
    return np.concatenate(result, axis=1)


def key_scores(pc_weights: np.ndarray, temperature: float = KEY_TEMPERATURE) -> np.ndarray:
    """Softmax over the 24 keys of ``-distance / temperature`` for each row of pitch-class weights."""
    pc_weights = np.atleast_2d(np.asarray(pc_weights, dtype=np.float64))
    logits = -_key_distances(pc_weights) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    scores = np.exp(logits)
    return scores / scores.sum(axis=1, keepdims=True)


def _segment_pitch_class_weights(notes: pd.DataFrame, segment_duration: float) -> np.ndarray:
    """(n_segments, 12): per segment of ``segment_duration`` seconds (from t = 0, or from the first
    start if that is negative), the sum over sounding notes of overlap duration * velocity per pitch class.
    Segments where nothing sounds are dropped."""
    if segment_duration <= 0:
        raise ValueError("segment_duration must be positive")
    pitch, velocity, start, end = _columns(notes)
    sounding = end > start
    pitch, velocity, start, end = pitch[sounding], velocity[sounding], start[sounding], end[sounding]
    if len(pitch) == 0:
        return np.zeros((0, 12))
    origin = min(0.0, float(start.min()))
    first = np.floor((start - origin) / segment_duration).astype(np.int64)
    last = np.ceil((end - origin) / segment_duration).astype(np.int64)  # exclusive
    counts = np.maximum(last - first, 1)
    note_index = np.repeat(np.arange(len(pitch)), counts)
    offsets = np.cumsum(counts) - counts
    segment = first[note_index] + (np.arange(int(counts.sum())) - offsets[note_index])
    seg_start = origin + segment * segment_duration
    overlap = np.minimum(end[note_index], seg_start + segment_duration) - np.maximum(
        start[note_index], seg_start
    )
    # Float noise at segment boundaries (0.6 / 0.2 = 2.999...) leaves overlaps of ~1e-16 s: not sounding.
    weight = np.where(overlap > 1e-9, overlap, 0.0) * velocity[note_index]
    used, segment_row = np.unique(segment, return_inverse=True)
    weights = np.zeros((len(used), 12))
    np.add.at(weights, (segment_row, pitch[note_index] % 12), weight)
    return weights[weights.sum(axis=1) > 0]


def key_distribution(
    notes: pd.DataFrame, segment_duration: float = 0.2, temperature: float = KEY_TEMPERATURE
) -> np.ndarray:
    """Distribution (24,) over KEY_NAMES (12 major then 12 minor keys, tonics C, C#, ..., B).

    The piece is cut into segments of ``segment_duration`` seconds; each segment's centre of effect is
    the mean spiral position of its pitch classes weighted by overlap duration * velocity. The segment's
    key scores are a softmax of the negative distances to the 24 key points (``temperature`` in
    spiral-distance units; a soft vote, so that near keys (C / G / A minor) share credit and the
    correlation of two distributions is graded). Every sounding segment has equal weight; the sum of the
    segments' scores is normalised to sum 1. A table with no sounding note gives all zeros.
    """
    weights = _segment_pitch_class_weights(notes, segment_duration)
    if len(weights) == 0:
        return np.zeros(24)
    total = key_scores(weights, temperature).sum(axis=0)
    return total / total.sum()


def estimate_key(notes: pd.DataFrame) -> str:
    """The key (e.g. ``"C major"``) whose spiral point is nearest the centre of effect of the whole piece
    (Chew's CEG key finding: pitch classes weighted by duration * velocity). Raises ValueError when no
    note sounds (zero total duration)."""
    pitch, velocity, start, end = _columns(notes)
    weight = np.clip(end - start, 0.0, None) * velocity
    pc_weights = np.bincount(pitch % 12, weights=weight, minlength=12)[None, :]
    if pc_weights.sum() <= 0:
        raise ValueError("no sounding note: the key is undefined")
    return KEY_NAMES[int(np.argmin(_key_distances(pc_weights)[0]))]


def key_correlation(
    target: pd.DataFrame,
    generated: pd.DataFrame,
    segment_duration: float = 0.2,
    temperature: float = KEY_TEMPERATURE,
) -> float:
    """Pearson correlation of the key distributions of the two tables, in [-1, 1].

    Edge cases follow :func:`histogram_distances`: both without sounding notes -> 1.0; only one -> 0.0.
    """
    a = key_distribution(target, segment_duration, temperature)
    b = key_distribution(generated, segment_duration, temperature)
    return _correlation(a, b)


# --------------------------------------------------------------------------------------------------
# 4. Distributions
# --------------------------------------------------------------------------------------------------

# feature -> (low edge, high edge, number of bins). Values outside the range are clipped into the first /
# last bin, so every note counts (e.g. the "duration" last bin holds every note of 5 s or more).
HISTOGRAM_BINS: dict[str, tuple[float, float, int]] = {
    "pitch": (20.5, 108.5, 88),  # one bin per piano key 21..108
    "velocity": (-0.5, 127.5, 128),  # one bin per MIDI velocity 0..127
    "dstart": (0.0, 2.0, 100),  # gap between consecutive onsets, 20 ms bins
    "duration": (0.0, 5.0, 100),  # note duration, 50 ms bins
}


def histogram_bin_edges(feature: str) -> np.ndarray:
    low, high, bins = HISTOGRAM_BINS[feature]
    return np.linspace(low, high, bins + 1)


def histogram_bin_centres(feature: str) -> np.ndarray:
    edges = histogram_bin_edges(feature)
    return (edges[:-1] + edges[1:]) / 2


def note_histogram(notes: pd.DataFrame, feature: str, weighted: bool = False) -> np.ndarray:
    """Histogram (raw sums, not normalised) of one feature of a note table over ``HISTOGRAM_BINS[feature]``.

    feature: ``pitch``, ``velocity``, ``dstart`` (differences of consecutive sorted onsets; a table of
    n notes has n - 1) or ``duration`` (end - start, negatives as 0). ``weighted``: each note counts
    duration * velocity instead of 1 (for ``dstart`` the weight is that of the later note).
    """
    if feature not in HISTOGRAM_BINS:
        raise ValueError(f"unknown feature {feature!r}; expected one of {sorted(HISTOGRAM_BINS)}")
    pitch, velocity, start, end = _columns(notes)
    duration = np.clip(end - start, 0.0, None)
    weight = duration * velocity if weighted else np.ones(len(pitch))
    if feature == "pitch":
        values = pitch.astype(np.float64)
    elif feature == "velocity":
        values = velocity.astype(np.float64)
    elif feature == "duration":
        values = duration
    else:
        order = np.argsort(start, kind="stable")
        values = np.diff(start[order])
        weight = weight[order][1:]
    bins = HISTOGRAM_BINS[feature][2]
    edges = histogram_bin_edges(feature)
    # Rounded to 1e-9 so that a value on a bin edge up to float noise (5.1 - 5.0 = 0.0999...96 with
    # 0.05 s bins) falls in the bin starting at that edge.
    values = np.round(values, 9)
    index = np.clip(np.searchsorted(np.round(edges, 9), values, side="right") - 1, 0, bins - 1)
    return np.bincount(index, weights=weight, minlength=bins).astype(np.float64)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation with defined values: both all-zero -> 1; one all-zero -> 0; both flat
    (constant) -> 1; exactly one flat -> 0."""
    a_empty, b_empty = not np.any(a), not np.any(b)
    if a_empty or b_empty:
        return 1.0 if a_empty and b_empty else 0.0
    a_flat, b_flat = np.ptp(a) == 0, np.ptp(b) == 0
    if a_flat or b_flat:
        return 1.0 if a_flat and b_flat else 0.0
    a = a - a.mean()
    b = b - b.mean()
    value = float(np.dot(a, b) / math.sqrt(float(np.dot(a, a)) * float(np.dot(b, b))))
    return min(1.0, max(-1.0, value))


def histogram_distances(h1: np.ndarray, h2: np.ndarray, centres: np.ndarray) -> dict[str, float]:
    """Compare two histograms over the same bins (``centres``: the bin positions).

    * ``correlation``: Pearson correlation of the bin values (see ``_correlation`` for flat cases);
    * ``taxicab``: L1 distance of the normalised histograms, in [0, 2];
    * ``wasserstein``: earth mover's distance between the two distributions over the bin positions
      (``scipy.stats.wasserstein_distance(centres, centres, h1, h2)``), in the feature's units
      (semitones, velocity steps, seconds). Two one-hot histograms at bins i and j are |i - j| bin
      widths apart.

    Both empty (all zero) -> correlation 1, distances 0. Exactly one empty -> correlation 0, taxicab 2
    and Wasserstein ``centres[-1] - centres[0]`` (the largest values either can take).
    """
    h1 = np.asarray(h1, dtype=np.float64)
    h2 = np.asarray(h2, dtype=np.float64)
    centres = np.asarray(centres, dtype=np.float64)
    if h1.shape != h2.shape or h1.shape != centres.shape:
        raise ValueError("histograms and centres must have the same shape")
    if np.any(h1 < 0) or np.any(h2 < 0):
        raise ValueError("histograms must be non-negative")
    s1, s2 = h1.sum(), h2.sum()
    correlation = _correlation(h1, h2)
    if s1 == 0 or s2 == 0:
        both = s1 == 0 and s2 == 0
        span = float(centres[-1] - centres[0]) if len(centres) else 0.0
        return {
            "correlation": correlation,
            "taxicab": 0.0 if both else 2.0,
            "wasserstein": 0.0 if both else span,
        }
    p, q = h1 / s1, h2 / s2
    return {
        "correlation": correlation,
        "taxicab": float(np.abs(p - q).sum()),
        "wasserstein": float(wasserstein_distance(centres, centres, u_weights=p, v_weights=q)),
    }


# name in the results -> (feature, weighted)
DISTRIBUTIONS: dict[str, tuple[str, bool]] = {
    "pitch_hist": ("pitch", False),
    "pitch_hist_weighted": ("pitch", True),
    "velocity_hist": ("velocity", False),
    "dstart_hist": ("dstart", False),
    "duration_hist": ("duration", False),
}


def distribution_metrics(target: pd.DataFrame, generated: pd.DataFrame) -> dict[str, float]:
    """``{"<name>/correlation", "<name>/taxicab", "<name>/wasserstein"}`` for every name of DISTRIBUTIONS."""
    result: dict[str, float] = {}
    for name, (feature, weighted) in DISTRIBUTIONS.items():
        h1 = note_histogram(target, feature, weighted)
        h2 = note_histogram(generated, feature, weighted)
        for stat, value in histogram_distances(h1, h2, histogram_bin_centres(feature)).items():
            result[f"{name}/{stat}"] = value
    return result


# --------------------------------------------------------------------------------------------------
# 5. Everything at once
# --------------------------------------------------------------------------------------------------


def compute_all_metrics(
    target: pd.DataFrame,
    generated: pd.DataFrame,
    segment_duration: float = 0.2,
    velocity_threshold: float = 30,
) -> dict[str, float]:
    """Every PIANO metric as one flat ``dict[str, float]`` of finite values.

    Keys:
    ``note_f1/{onset,onset_offset,onset_velocity}/{precision,recall,f1}``,
    ``f1_over_time/{pitch,pitch_class}/{precision,recall,f1}``, ``key_correlation``,
    ``{pitch_hist,pitch_hist_weighted,velocity_hist,dstart_hist,duration_hist}/{correlation,taxicab,wasserstein}``.
    Higher is better for precision / recall / F1 / correlations; lower is better for distances.
    """
    result: dict[str, float] = {}
    for name, value in note_f1(target, generated).items():
        result[f"note_f1/{name}"] = value
    for mode, use_pitch_class in (("pitch", False), ("pitch_class", True)):
        scores = f1_over_time(
            target, generated, use_pitch_class=use_pitch_class, velocity_threshold=velocity_threshold
        )
        for name, value in scores.items():
            result[f"f1_over_time/{mode}/{name}"] = value
    result["key_correlation"] = key_correlation(target, generated, segment_duration)
    result.update(distribution_metrics(target, generated))
    result = {name: float(value) for name, value in result.items()}
    bad = [name for name, value in result.items() if not math.isfinite(value)]
    if bad:
        raise RuntimeError(f"non-finite metric values (a bug): {bad}")
    return result


def average_metrics(metrics: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Mean of each metric over a list of ``compute_all_metrics`` results.

    Nothing is skipped: every dict must have the same keys and only finite values (a NaN or a missing
    key raises ValueError rather than being silently ignored). An empty list raises ValueError.
    """
    metrics = list(metrics)
    if not metrics:
        raise ValueError("no metrics to average")
    keys = list(metrics[0])
    for i, item in enumerate(metrics):
        if set(item) != set(keys):
            raise ValueError(
                f"metrics[{i}] has keys {sorted(set(item) ^ set(keys))} that others lack (or lacks them)"
            )
        bad = [name for name, value in item.items() if not math.isfinite(float(value))]
        if bad:
            raise ValueError(f"metrics[{i}] has non-finite values for {bad}")
    return {name: float(np.mean([float(item[name]) for item in metrics])) for name in keys}

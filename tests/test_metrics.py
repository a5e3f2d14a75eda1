"""Tests of the PIANO metrics (piano_gpt.evaluation.metrics)."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import linear_sum_assignment

from piano_gpt.evaluation import (
    HISTOGRAM_BINS,
    KEY_NAMES,
    average_metrics,
    compute_all_metrics,
    estimate_key,
    f1_over_time,
    histogram_bin_centres,
    histogram_distances,
    key_correlation,
    key_distribution,
    note_f1,
    note_histogram,
)
from piano_gpt.midi import empty_notes, make_notes

# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------


def notes(*rows):
    """notes((pitch, velocity, start, end), ...)"""
    if not rows:
        return empty_notes()
    pitch, velocity, start, end = zip(*rows)
    return make_notes(pitch, velocity, start, end)


def transpose(table: pd.DataFrame, semitones: int) -> pd.DataFrame:
    table = table.copy()
    table["pitch"] = table["pitch"] + semitones
    return table


def scale(tonic=60, steps=(0, 2, 4, 5, 7, 9, 11, 12), step=0.5):
    return notes(*[(tonic + s, 80, i * step, (i + 1) * step) for i, s in enumerate(steps)])


def cadence(tonic=60, minor=False):
    """I - IV - V - I block chords, one second each (harmonic minor when ``minor``)."""
    third = 3 if minor else 4
    chords = [(0, third, 7), (5, 5 + third, 12), (7, 11, 14), (0, third, 7)]
    return notes(*[(tonic + p, 80, float(i), float(i + 1)) for i, chord in enumerate(chords) for p in chord])


def c_major_piece():
    """A C major scale (4 s) followed by a I - IV - V - I cadence (4 s)."""
    chords = cadence()
    both = pd.concat([scale(), chords.assign(start=chords.start + 4.0, end=chords.end + 4.0)])
    return make_notes(both.pitch, both.velocity, both.start, both.end)


C_MAJOR_PIECE = c_major_piece()


def brute_force_f1_over_time(target, generated, use_pitch_class=False, threshold=30):
    """Straightforward loop version of f1_over_time (same conventions) to check the vectorised one."""
    times = sorted(set(target.start) | set(target.end) | set(generated.start) | set(generated.end))
    rows = []

    def sounding(df, a, b):
        on = (df.start <= a) & (df.end >= b)
        return sorted({(p % 12 if use_pitch_class else p, v) for p, v in zip(df.pitch[on], df.velocity[on])})

    for a, b in zip(times[:-1], times[1:]):
        t, g = sounding(target, a, b), sounding(generated, a, b)
        if not t and not g:
            continue
        m = 0
        if t and g:
            adjacency = np.array(
                [[tp == gp and abs(tv - gv) <= threshold for gp, gv in g] for tp, tv in t], float
            )
            r, c = linear_sum_assignment(-adjacency)
            m = adjacency[r, c].sum()
        p = m / len(g) if g else 0.0
        rc = m / len(t) if t else 0.0
        f = 2 * p * rc / (p + rc) if p + rc > 0 else 0.0
        rows.append((b - a, p, rc, f, bool(t), bool(g)))
    if not rows:
        return {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    d, p, r, f, t_on, g_on = (np.array(x) for x in zip(*rows))
    if not t_on.any() or not g_on.any():
        return {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    return {
        "precision": float(np.sum(d * p * g_on) / d[g_on].sum()),
        "recall": float(np.sum(d * r * t_on) / d[t_on].sum()),
        "f1": float(np.sum(d * f) / d.sum()),
    }


# ------------------------------------------------------------------------------------------------
# note_f1
# ------------------------------------------------------------------------------------------------


def test_note_f1_identical_is_one_and_disjoint_is_zero():
    piece = C_MAJOR_PIECE
    assert all(v == 1.0 for v in note_f1(piece, piece).values())
    # Same pitches one second later: no onset within 50 ms.
    late = piece.assign(start=piece.start + 100.0, end=piece.end + 100.0)
    assert all(v == 0.0 for v in note_f1(piece, late).values())
    # Same times, every pitch a semitone off.
    assert all(v == 0.0 for v in note_f1(piece, transpose(piece, 1)).values())


def test_note_f1_hand_computed():
    target = notes((60, 80, 0.0, 1.0), (62, 80, 1.0, 2.0), (64, 80, 2.0, 3.0))
    generated = notes(
        (60, 80, 0.02, 1.0),  # onset 20 ms late (<= 50 ms): onset match; offset exact: offset match
        (62, 80, 1.03, 1.5),  # onset match; offset 0.5 s early > max(0.2 * 1.0 s, 50 ms): no offset match
        (64, 80, 2.2, 3.0),  # onset 200 ms late: no match
        (65, 80, 0.0, 1.0),  # no target note of pitch 65
    )
    result = note_f1(target, generated)
    # onset: 2 matches of 4 generated / 3 target notes: P = 2/4, R = 2/3,
    # F = 2 * (1/2)(2/3) / (1/2 + 2/3) = (2/3) / (7/6) = 4/7
    assert result["onset/precision"] == pytest.approx(1 / 2)
    assert result["onset/recall"] == pytest.approx(2 / 3)
    assert result["onset/f1"] == pytest.approx(4 / 7)
    # onset + offset: 1 match: P = 1/4, R = 1/3, F = 2 * (1/12) / (7/12) = 2/7
    assert result["onset_offset/precision"] == pytest.approx(1 / 4)
    assert result["onset_offset/recall"] == pytest.approx(1 / 3)
    assert result["onset_offset/f1"] == pytest.approx(2 / 7)
    # onset + velocity: all velocities equal, so both onset matches keep their velocity match.
    assert result["onset_velocity/f1"] == pytest.approx(4 / 7)


def test_note_f1_velocity_hand_computed():
    target = notes((60, 40, 0.0, 1.0), (62, 80, 1.0, 2.0), (64, 120, 2.0, 3.0))
    generated = target.assign(velocity=[40, 80, 40])
    result = note_f1(target, generated)
    assert result["onset/f1"] == 1.0
    # mir_eval scales target velocities to [0, 0.5, 1] and fits a line a * v + b to them from the
    # generated velocities [40, 80, 40]: the best fit is the constant 0.5 (both 40s must map to the
    # mean of 0 and 1). Errors 0.5, 0, 0.5: only the middle note is within 0.1 -> P = R = F = 1/3.
    assert result["onset_velocity/precision"] == pytest.approx(1 / 3)
    assert result["onset_velocity/recall"] == pytest.approx(1 / 3)
    assert result["onset_velocity/f1"] == pytest.approx(1 / 3)


def test_note_f1_empty_inputs():
    piece = C_MAJOR_PIECE
    assert all(v == 1.0 for v in note_f1(empty_notes(), empty_notes()).values())
    assert all(v == 0.0 for v in note_f1(piece, empty_notes()).values())
    assert all(v == 0.0 for v in note_f1(empty_notes(), piece).values())


def test_note_f1_accepts_zero_length_and_negative_times():
    target = notes((60, 80, 0.0, 0.0), (62, 80, -0.01, 0.5))
    result = note_f1(target, target)
    assert result["onset/f1"] == 1.0 and result["onset_offset/f1"] == 1.0


# ------------------------------------------------------------------------------------------------
# f1_over_time
# ------------------------------------------------------------------------------------------------


def test_f1_over_time_identical_and_disjoint():
    piece = C_MAJOR_PIECE
    for use_pitch_class in (False, True):
        assert f1_over_time(piece, piece, use_pitch_class) == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    # A semitone off: no equal pitch (or pitch class) anywhere.
    for use_pitch_class in (False, True):
        assert f1_over_time(piece, transpose(piece, 1), use_pitch_class) == {
            "precision": 0.0,
            "recall": 0.0,
            "f1": 0.0,
        }
    # Same notes, velocities 31 apart: over the threshold of 30.
    louder = piece.assign(velocity=piece.velocity + 31)
    assert f1_over_time(piece, louder)["f1"] == 0.0
    assert f1_over_time(piece, piece.assign(velocity=piece.velocity + 30))["f1"] == 1.0


def test_f1_over_time_hand_computed():
    target = notes((60, 80, 0.0, 1.0), (64, 80, 0.0, 3.0))
    generated = notes((60, 90, 0.0, 1.0), (64, 20, 1.0, 3.0), (67, 100, 3.0, 4.0))
    # Event points 0, 1, 3, 4 -> intervals [0,1) (1 s), [1,3) (2 s), [3,4) (1 s).
    # [0,1): T = {60/80, 64/80}, G = {60/90}: 60 matches (|80-90| = 10 <= 30): m = 1, P = 1, R = 1/2, F = 2/3
    # [1,3): T = {64/80}, G = {64/20}: |80-20| = 60 > 30: m = 0, P = R = F = 0
    # [3,4): T = {}, G = {67/100}: only the generation sounds: P = 0, F = 0 (recall not averaged here)
    # F1 = (1 * 2/3 + 2 * 0 + 1 * 0) / 4 = 1/6
    # precision over the 4 s where G sounds = (1 * 1 + 2 * 0 + 1 * 0) / 4 = 1/4
    # recall over the 3 s where T sounds = (1 * 1/2 + 2 * 0) / 3 = 1/6
    result = f1_over_time(target, generated)
    assert result["f1"] == pytest.approx(1 / 6)
    assert result["precision"] == pytest.approx(1 / 4)
    assert result["recall"] == pytest.approx(1 / 6)
    # With a threshold of 60, [1,3) matches (P = R = F = 1):
    # F1 = (2/3 + 2 * 1 + 0) / 4 = 2/3; precision = (1 + 2 + 0) / 4 = 3/4; recall = (1/2 + 2) / 3 = 5/6
    result = f1_over_time(target, generated, velocity_threshold=60)
    assert result["f1"] == pytest.approx(2 / 3)
    assert result["precision"] == pytest.approx(3 / 4)
    assert result["recall"] == pytest.approx(5 / 6)


def test_f1_over_time_pitch_class():
    target = notes((60, 80, 0.0, 1.0))
    octave_up = notes((72, 80, 0.0, 1.0))
    assert f1_over_time(target, octave_up)["f1"] == 0.0
    assert f1_over_time(target, octave_up, use_pitch_class=True)["f1"] == 1.0
    # Pitch classes form a set: C4 + C5 at velocity 80 are one (0, 80) pair, matched by one C.
    doubled = notes((60, 80, 0.0, 1.0), (72, 80, 0.0, 1.0))
    assert f1_over_time(doubled, target, use_pitch_class=True)["f1"] == 1.0
    # Octaves with different velocities are two pairs: one C matches one of them (P = 1, R = 1/2).
    doubled = notes((60, 80, 0.0, 1.0), (72, 40, 0.0, 1.0))
    result = f1_over_time(doubled, target, use_pitch_class=True)
    assert (result["precision"], result["recall"]) == (1.0, 0.5)
    assert result["f1"] == pytest.approx(2 / 3)


def test_f1_over_time_uses_a_maximum_matching():
    # Target velocities {50, 80}, generated {65, 100} on one pitch class: 50-65 and 80-100 both match
    # (a greedy pairing 80-65 would leave 50 and 100 unmatched).
    target = notes((60, 50, 0.0, 1.0), (72, 80, 0.0, 1.0))
    generated = notes((48, 65, 0.0, 1.0), (84, 100, 0.0, 1.0))
    assert f1_over_time(target, generated, use_pitch_class=True)["f1"] == 1.0


def test_f1_over_time_empty_and_silent():
    piece = C_MAJOR_PIECE
    assert f1_over_time(empty_notes(), empty_notes()) == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert f1_over_time(piece, empty_notes()) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert f1_over_time(empty_notes(), piece) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    # Silence between notes is not counted: a 10 s gap changes nothing.
    target = notes((60, 80, 0.0, 1.0), (62, 80, 11.0, 12.0))
    generated = notes((60, 80, 0.0, 1.0), (64, 80, 11.0, 12.0))
    assert f1_over_time(target, generated)["f1"] == pytest.approx(0.5)


def test_f1_over_time_matches_brute_force():
    rng = np.random.default_rng(0)

    def random_notes(n):
        start = np.round(rng.uniform(0, 5, n), 2)
        end = start + np.round(rng.uniform(0, 1.5, n), 2)  # some zero-length notes
        return make_notes(rng.integers(55, 72, n), rng.integers(1, 128, n), start, end)

    for _ in range(60):
        target, generated = random_notes(rng.integers(0, 20)), random_notes(rng.integers(0, 20))
        for use_pitch_class in (False, True):
            for threshold in (30, 10):
                fast = f1_over_time(target, generated, use_pitch_class, threshold)
                slow = brute_force_f1_over_time(target, generated, use_pitch_class, threshold)
                for name in ("precision", "recall", "f1"):
                    assert fast[name] == pytest.approx(slow[name], abs=1e-12)


# ------------------------------------------------------------------------------------------------
# Key (spiral array)
# ------------------------------------------------------------------------------------------------


def test_estimate_key():
    assert estimate_key(scale()) == "C major"
    assert estimate_key(cadence()) == "C major"
    assert estimate_key(C_MAJOR_PIECE) == "C major"
    assert estimate_key(cadence(57, minor=True)) == "A minor"
    assert estimate_key(cadence(66)) == "F# major"
    assert estimate_key(scale(63)) == "Eb major"
    with pytest.raises(ValueError):
        estimate_key(empty_notes())


def test_key_distribution_properties():
    dist = key_distribution(C_MAJOR_PIECE)
    assert dist.shape == (24,)
    assert dist.sum() == pytest.approx(1.0) and np.all(dist >= 0)
    assert KEY_NAMES[int(np.argmax(dist))] == "C major"
    # The model commutes with transposition: a piece moved up k semitones moves its keys up k.
    for k in range(12):
        moved = key_distribution(transpose(C_MAJOR_PIECE, k))
        assert np.allclose(moved[:12], np.roll(dist[:12], k))
        assert np.allclose(moved[12:], np.roll(dist[12:], k))
    # Segment length is configurable; empty tables give all zeros.
    assert KEY_NAMES[int(np.argmax(key_distribution(C_MAJOR_PIECE, segment_duration=1.0)))] == "C major"
    assert np.array_equal(key_distribution(empty_notes()), np.zeros(24))


def test_key_correlation_ranks_keys():
    same = key_correlation(C_MAJOR_PIECE, transpose(C_MAJOR_PIECE, 0))
    dominant = key_correlation(C_MAJOR_PIECE, transpose(C_MAJOR_PIECE, 7))  # G major
    tritone = key_correlation(C_MAJOR_PIECE, transpose(C_MAJOR_PIECE, 6))  # F# major
    assert same == pytest.approx(1.0)
    assert same > dominant > tritone
    assert tritone < 0.2
    assert key_correlation(empty_notes(), empty_notes()) == 1.0
    assert key_correlation(C_MAJOR_PIECE, empty_notes()) == 0.0


# ------------------------------------------------------------------------------------------------
# Distributions
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("feature", sorted(HISTOGRAM_BINS))
def test_wasserstein_of_one_hot_histograms_is_bin_distance(feature):
    low, high, bins = HISTOGRAM_BINS[feature]
    width = (high - low) / bins
    centres = histogram_bin_centres(feature)
    for i, j in [(0, 0), (0, 1), (3, 10), (bins - 1, 0)]:
        h1, h2 = np.zeros(bins), np.zeros(bins)
        h1[i], h2[j] = 1.0, 5.0  # scale does not matter: histograms are normalised
        result = histogram_distances(h1, h2, centres)
        assert result["wasserstein"] == pytest.approx(abs(i - j) * width)
        assert result["taxicab"] == pytest.approx(0.0 if i == j else 2.0)


def test_pitch_wasserstein_from_notes_is_in_semitones():
    a = note_histogram(notes((60, 80, 0.0, 1.0)), "pitch")
    b = note_histogram(notes((67, 80, 0.0, 1.0)), "pitch")
    assert histogram_distances(a, b, histogram_bin_centres("pitch"))["wasserstein"] == pytest.approx(7.0)


def test_velocity_histogram_has_128_bins():
    table = notes((60, 120, 0.0, 1.0), (62, 127, 0.0, 1.0), (64, 0, 0.0, 1.0), (65, 120, 1.0, 2.0))
    hist = note_histogram(table, "velocity")
    assert hist.shape == (128,)
    assert hist[120] == 2 and hist[127] == 1 and hist[0] == 1 and hist.sum() == 4
    # Out-of-range values are clipped into the end bins rather than dropped.
    assert note_histogram(notes((60, 200, 0.0, 1.0)), "velocity")[127] == 1


def test_histograms_of_features():
    table = notes((21, 10, 0.0, 0.5), (108, 20, 0.0, 10.0), (60, 30, 0.3, 0.4), (60, 30, 5.0, 5.1))
    pitch = note_histogram(table, "pitch")
    assert pitch.shape == (88,) and pitch[0] == 1 and pitch[87] == 1 and pitch[60 - 21] == 2
    weighted = note_histogram(table, "pitch", weighted=True)
    assert weighted[0] == pytest.approx(0.5 * 10) and weighted[87] == pytest.approx(10.0 * 20)
    # Onset gaps 0, 0.3, 4.7 -> bins 0, 15 and the last (clipped at 2 s).
    dstart = note_histogram(table, "dstart")
    assert dstart.sum() == 3 and dstart[0] == 1 and dstart[15] == 1 and dstart[-1] == 1
    # Durations 0.5, 10 (clipped into the last bin), 0.1, 0.1 (0.4 - 0.3 and 5.1 - 5.0: both on the
    # edge of bin 2 up to float noise) with 50 ms bins.
    duration = note_histogram(table, "duration")
    assert duration[10] == 1 and duration[-1] == 1 and duration[2] == 2


def test_histogram_flat_and_empty_conventions():
    centres = np.arange(5.0)
    flat, other_flat = np.ones(5), np.full(5, 3.0)
    peaked, empty = np.array([0, 0, 5.0, 0, 0]), np.zeros(5)
    assert histogram_distances(flat, other_flat, centres) == {
        "correlation": 1.0,
        "taxicab": 0.0,
        "wasserstein": 0.0,
    }
    assert histogram_distances(flat, peaked, centres)["correlation"] == 0.0
    assert histogram_distances(empty, empty, centres) == {
        "correlation": 1.0,
        "taxicab": 0.0,
        "wasserstein": 0.0,
    }
    assert histogram_distances(empty, peaked, centres) == {
        "correlation": 0.0,
        "taxicab": 2.0,
        "wasserstein": 4.0,
    }
    assert histogram_distances(peaked, peaked, centres)["correlation"] == 1.0
    # Pearson on a plain case: [1, 2, 3] vs [3, 2, 1] -> -1.
    assert histogram_distances(np.array([1.0, 2, 3]), np.array([3.0, 2, 1]), np.arange(3.0))[
        "correlation"
    ] == pytest.approx(-1.0)


# ------------------------------------------------------------------------------------------------
# compute_all_metrics / average_metrics
# ------------------------------------------------------------------------------------------------

EDGE_CASES = {
    "empty/empty": (empty_notes(), empty_notes()),
    "piece/empty": (C_MAJOR_PIECE, empty_notes()),
    "empty/piece": (empty_notes(), C_MAJOR_PIECE),
    "one note/same": (notes((60, 80, 0.0, 1.0)), notes((60, 80, 0.0, 1.0))),
    "one note/other": (notes((60, 80, 0.0, 1.0)), notes((61, 120, 0.5, 0.7))),
    "zero-length notes": (notes((60, 80, 1.0, 1.0)), notes((60, 80, 1.0, 1.0), (64, 80, 1.0, 1.0))),
    "chord/chord": (
        notes((60, 80, 0.0, 1.0), (64, 80, 0.0, 1.0)),
        notes((60, 80, 0.0, 1.0), (67, 80, 0.0, 1.0)),
    ),
    "flat pitches": (
        notes(*[(p, 64, 0.1 * (p - 21), 0.1 * (p - 20)) for p in range(21, 109)]),
        notes(*[(p, 64, 0.1 * (p - 21), 0.1 * (p - 20)) for p in range(108, 20, -1)]),
    ),
    "piece/transposed": (C_MAJOR_PIECE, transpose(C_MAJOR_PIECE, 6)),
    "piece/piece": (C_MAJOR_PIECE, C_MAJOR_PIECE),
}


@pytest.mark.parametrize("case", sorted(EDGE_CASES))
def test_compute_all_metrics_never_nan(case):
    target, generated = EDGE_CASES[case]
    result = compute_all_metrics(target, generated)
    reference_keys = compute_all_metrics(C_MAJOR_PIECE, C_MAJOR_PIECE).keys()
    assert result.keys() == reference_keys
    for name, value in result.items():
        assert isinstance(value, float), name
        assert math.isfinite(value), (case, name, value)


def test_compute_all_metrics_names_and_identity():
    result = compute_all_metrics(C_MAJOR_PIECE, C_MAJOR_PIECE)
    expected = {
        f"note_f1/{k}/{s}"
        for k in ("onset", "onset_offset", "onset_velocity")
        for s in ("precision", "recall", "f1")
    }
    expected |= {
        f"f1_over_time/{k}/{s}" for k in ("pitch", "pitch_class") for s in ("precision", "recall", "f1")
    }
    expected |= {"key_correlation"}
    hists = ("pitch_hist", "pitch_hist_weighted", "velocity_hist", "dstart_hist", "duration_hist")
    expected |= {f"{h}/{s}" for h in hists for s in ("correlation", "taxicab", "wasserstein")}
    assert set(result) == expected
    for name, value in result.items():
        best = 0.0 if name.endswith(("taxicab", "wasserstein")) else 1.0
        assert value == pytest.approx(best), name


def test_average_metrics():
    a = {"x": 1.0, "y": 0.0}
    b = {"x": 0.0, "y": 0.5}
    assert average_metrics([a, b]) == {"x": 0.5, "y": 0.25}
    with pytest.raises(ValueError):
        average_metrics([])
    with pytest.raises(ValueError):
        average_metrics([a, {"x": 1.0}])
    with pytest.raises(ValueError):
        average_metrics([a, {"x": float("nan"), "y": 0.0}])


@pytest.mark.maestro
def test_metrics_on_maestro_piece(maestro_validation_files):
    from piano_gpt.midi import read_notes

    piece = read_notes(maestro_validation_files[0]).iloc[:1500].reset_index(drop=True)
    rng = np.random.default_rng(0)
    jittered = piece.assign(
        start=piece.start + rng.uniform(-0.01, 0.01, len(piece)),
        velocity=np.clip(piece.velocity + rng.integers(-5, 6, len(piece)), 1, 127),
    )
    jittered = jittered.assign(end=np.maximum(jittered.end, jittered.start + 0.01))
    close = compute_all_metrics(piece, jittered)
    far = compute_all_metrics(piece, transpose(piece, 6))
    assert all(math.isfinite(v) for v in close.values()) and all(math.isfinite(v) for v in far.values())
    assert close["note_f1/onset/f1"] > 0.95
    assert close["f1_over_time/pitch/f1"] > 0.8
    assert close["key_correlation"] > 0.95 > far["key_correlation"]
    # A tritone away, only notes that happen to meet another voice's pitch still match.
    assert far["note_f1/onset/f1"] < 0.3 < close["note_f1/onset/f1"]
    assert close["pitch_hist/wasserstein"] == 0.0 and far["pitch_hist/wasserstein"] == pytest.approx(
        6.0, abs=0.5
    )

import numpy as np
import pandas as pd
import pytest

from piano_gpt.midi import make_notes
from piano_gpt.tasks import (
    MASKING,
    TASK_SETS,
    TASKS,
    add_task_tokens,
    all_task_tokens,
    build_task_prompt,
    build_task_sequence,
    chord_groups,
    get_task,
    layout_special_tokens,
    list_tasks,
    n_notes_token,
    resolve_tasks,
    split_generated,
    task_special_tokens,
)
from piano_gpt.tokenizers import EOGENAI_TOKEN, GENAI_TOKEN, ExponentialTimeTokenizer

EXTRA_MASKING = [
    "chord_masking-x2",
    "linear_random_masking-x50",
    "band_random_masking-x70",
    "random_masking-x100",
]
ALL_TASK_NAMES = list_tasks() + EXTRA_MASKING


def rows(notes: pd.DataFrame) -> list[tuple]:
    """A note table as a sorted list of rows (a multiset)."""
    return sorted(notes[["pitch", "velocity", "start", "end"]].itertuples(index=False, name=None))


def spaced_notes(pitch, velocity=None) -> pd.DataFrame:
    n = len(pitch)
    velocity = [64] * n if velocity is None else velocity
    start = np.arange(n) * 0.5
    return make_notes(pitch, velocity, start, start + 0.4)


@pytest.fixture(scope="module")
def piece() -> pd.DataFrame:
    """A busy fragment: chords, repeated pitches, overlapping notes, equal starts."""
    rng = np.random.default_rng(0)
    n = 120
    start = np.round(np.sort(rng.uniform(0, 20, n)), 3)
    start[10:14] = start[10]  # a 4-note chord
    start[40:43] = start[40] + np.array([0.0, 0.007, 0.014])  # a rolled chord
    pitch = rng.integers(21, 109, n)
    pitch[50:53] = 60  # repeated pitch
    duration = rng.uniform(0.02, 2.0, n)
    return make_notes(pitch, rng.integers(1, 128, n), start, start + duration)


# --- split tasks -----------------------------------------------------------------------------------

PITCHES = [40, 44, 48, 52, 56, 60, 64, 68]  # q1 = 47, median = 54, q3 = 61 (linear interpolation)


@pytest.mark.parametrize(
    "name, target_pitches",
    [
        ("above_median_prediction", [56, 60, 64, 68]),
        ("below_median_prediction", [40, 44, 48, 52]),
        ("above_low_quartile_prediction", [48, 52, 56, 60, 64, 68]),
        ("below_low_quartile_prediction", [40, 44]),
        ("above_high_quartile_prediction", [64, 68]),
        ("below_high_quartile_prediction", [40, 44, 48, 52, 56, 60]),
        ("middle_quartiles_prediction", [48, 52, 56, 60]),
        ("extreme_quartiles_prediction", [40, 44, 64, 68]),
    ],
)
def test_pitch_splits(name, target_pitches):
    notes = spaced_notes(PITCHES[::-1])  # order in time must not matter
    sample = get_task(name).prepare(notes, seed=0)
    assert sorted(sample.target["pitch"]) == target_pitches
    assert sorted(sample.source["pitch"]) == sorted(set(PITCHES) - set(target_pitches))
    assert sample.prefix_tokens == [f"<{name.upper()}>"]


def test_above_median_takes_exactly_notes_at_or_above_median():
    pitch = [60, 60, 60, 61, 50, 72, 59, 60, 80]  # median 60, ties included
    sample = get_task("above_median_prediction").prepare(spaced_notes(pitch), seed=0)
    assert sorted(sample.target["pitch"]) == [60, 60, 60, 60, 61, 72, 80]
    assert sorted(sample.source["pitch"]) == [50, 59]


VELOCITIES = [10, 20, 30, 40, 50, 60, 70, 80]  # q1 = 27.5, median = 45, q3 = 62.5


@pytest.mark.parametrize(
    "name, target_velocities",
    [
        ("loud_prediction", [50, 60, 70, 80]),
        ("soft_prediction", [10, 20, 30, 40]),
        ("very_loud_prediction", [70, 80]),
        ("very_soft_prediction", [10, 20]),
        ("moderate_velocity_prediction", [30, 40, 50, 60]),
        ("extreme_velocity_prediction", [10, 20, 70, 80]),
    ],
)
def test_volume_splits(name, target_velocities):
    notes = spaced_notes(
        [60 + i for i in range(8)], velocity=[VELOCITIES[i] for i in (3, 0, 7, 5, 1, 6, 2, 4)]
    )
    sample = get_task(name).prepare(notes, seed=0)
    assert sorted(sample.target["velocity"]) == target_velocities
    assert rows(pd.concat([sample.source, sample.target])) == rows(notes)


@pytest.mark.parametrize(
    "name, changed",
    [
        ("velocity_denoising", {"velocity"}),
        ("pitch_denoising", {"pitch"}),
        ("start_time_denoising", {"start", "end"}),
        ("time_denoising", {"start", "end"}),
        ("comprehensive_denoising", {"pitch", "velocity", "start", "end"}),
    ],
)
def test_denoising(piece, name, changed):
    sample = get_task(name).prepare(piece, seed=3)
    pd.testing.assert_frame_equal(sample.target, piece)
    noisy = sample.source
    assert len(noisy) == len(piece)
    assert noisy["pitch"].between(21, 108).all()
    assert noisy["velocity"].between(1, 127).all()
    assert (noisy["start"] >= 0).all() and (noisy["end"] > noisy["start"]).all()
    assert noisy["start"].is_monotonic_increasing
    for column in ["pitch", "velocity", "start", "end"]:
        same = np.allclose(np.sort(noisy[column]), np.sort(piece[column]))
        assert same == (column not in changed), column
    if name == "start_time_denoising":  # durations kept
        np.testing.assert_allclose(
            np.sort(noisy["end"] - noisy["start"]), np.sort(piece["end"] - piece["start"]), atol=1e-9
        )
    if name == "time_denoising":
        assert ((noisy["end"] - noisy["start"]) >= 0.01 - 1e-12).all()


def test_denoising_clips_at_the_range_edges():
    n = 400
    notes = make_notes(
        [21, 108] * (n // 2), [1, 127] * (n // 2), np.arange(n) * 0.01, np.arange(n) * 0.01 + 0.1
    )
    noisy = get_task("comprehensive_denoising").prepare(notes, seed=0).source
    assert noisy["pitch"].min() == 21 and noisy["pitch"].max() == 108
    assert noisy["velocity"].min() == 1 and noisy["velocity"].max() == 127
    assert noisy["start"].min() == 0.0


def test_performance_source_is_an_evenly_spaced_score(piece):
    sample = get_task("performance_task").prepare(piece, seed=0)
    source = sample.source
    np.testing.assert_allclose(source["start"], np.arange(len(piece)) * 0.2)
    np.testing.assert_allclose(source["end"] - source["start"], 0.2)
    assert (source["velocity"] == 80).all()
    assert source["pitch"].tolist() == piece["pitch"].tolist()
    pd.testing.assert_frame_equal(sample.target, piece)


# --- masking tasks ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in ALL_TASK_NAMES if get_task(n).kind == MASKING])
def test_masking_source_and_target_make_the_input(piece, name):
    task = get_task(name)
    sample = task.prepare(piece, seed=5)
    assert rows(pd.concat([sample.source, sample.target])) == rows(piece)
    assert sample.prefix_tokens == [task.token, f"<PARAMETER_{task.param}>"]
    for part in (sample.source, sample.target):
        assert part["start"].is_monotonic_increasing
        assert list(part.index) == list(range(len(part)))


def test_split_tasks_that_combine_make_the_input(piece):
    for name in TASK_SETS["piano_legacy"]:
        task = get_task(name)
        if task.combine:
            sample = task.prepare(piece, seed=1)
            assert rows(pd.concat([sample.source, sample.target])) == rows(piece), name


@pytest.mark.parametrize("stride", [1, 2, 3])
def test_stride_alternates(stride):
    notes = spaced_notes(list(range(40, 52)))  # 12 notes, pitch = index + 40
    sample = get_task(f"stride_notes_masking-x{stride}").prepare(notes, seed=0)
    expected = [i for i in range(12) if (i // stride) % 2 == 1]
    assert (sample.target["pitch"] - 40).tolist() == expected
    assert (sample.source["pitch"] - 40).tolist() == [i for i in range(12) if i not in expected]


def test_chord_detection():
    start = [0.0, 0.005, 0.012, 0.5, 0.51, 1.0, 1.004, 1.008, 1.013, 2.0, 3.0, 3.01, 3.02, 3.03]
    pitch = list(range(50, 50 + len(start)))
    notes = make_notes(pitch, [64] * len(start), start, np.array(start) + 0.3)
    assert chord_groups(notes["start"]).tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 4, 4, 4, 4]
    sample = get_task("chord_masking-x3").prepare(notes, seed=0)
    # Groups of >= 3 notes, chained within 15 ms of the previous note (3.00..3.03 spans 30 ms).
    assert sample.target["start"].tolist() == [
        0.0,
        0.005,
        0.012,
        1.0,
        1.004,
        1.008,
        1.013,
        3.0,
        3.01,
        3.02,
        3.03,
    ]
    assert sample.source["start"].tolist() == [0.5, 0.51, 2.0]
    assert len(get_task("chord_masking-x2").prepare(notes, seed=0).target) == 13
    assert len(get_task("chord_masking-x5").prepare(notes, seed=0).target) == 0


def line_piece() -> pd.DataFrame:
    melody = [(72, 0.0, 0.3), (74, 0.4, 0.7), (76, 0.8, 1.1), (74, 1.2, 1.5), (72, 1.6, 1.9)]
    inner = [(60, 0.1, 0.3)]
    bass = [(40, 0.0, 2.0)]
    table = melody + inner + bass
    return make_notes(
        [p for p, _, _ in table], [64] * len(table), [s for _, s, _ in table], [e for _, _, e in table]
    )


def test_top_line_picks_the_highest_note_per_window():
    notes = line_piece()
    target = get_task("top_line_masking-x1").prepare(notes, seed=0).target
    assert target["pitch"].tolist() == [72, 74, 76, 74, 72]
    # Second repetition: on what is left, the inner voice is highest in the only window (0..0.2 s).
    target = get_task("top_line-x2").prepare(notes, seed=0).target
    assert sorted(target["pitch"].tolist()) == [60, 72, 72, 74, 74, 76]
    target = get_task("bottom_line_masking-x1").prepare(notes, seed=0).target
    assert target["pitch"].tolist() == [40]


def test_top_line_follows_the_highest_sounding_note():
    # A long high note covers 0..1 s; after it ends, a lower line is the top line.
    notes = make_notes([90, 60, 62, 64], [64] * 4, [0.0, 0.0, 1.2, 1.6], [1.0, 1.1, 1.5, 1.9])
    target = get_task("top_line_masking-x1").prepare(notes, seed=0).target
    assert target["pitch"].tolist() == [90, 62, 64]


@pytest.mark.parametrize(
    "name, expected",
    [
        ("high_notes_masking-x2", {90, 85}),
        ("low_notes_masking-x2", {30, 35}),
        ("short_notes_masking-x2", {50, 55}),
        ("long_notes_masking-x1", {85}),
    ],
)
def test_extreme_notes(name, expected):
    pitch = [50, 90, 30, 85, 55, 35, 60]
    duration = [0.05, 0.5, 0.4, 3.0, 0.1, 0.3, 0.2]
    start = np.arange(7) * 0.5
    notes = make_notes(pitch, [64] * 7, start, start + np.array(duration))
    assert set(get_task(name).prepare(notes, seed=0).target["pitch"]) == expected


def test_random_masking_fraction(piece):
    assert len(get_task("random_masking-x25").prepare(piece, seed=0).target) == 30
    assert len(get_task("random_masking-x100").prepare(piece, seed=0).source) == 0


def test_band_tasks_target_notes_near_a_line():
    # Two voices far apart: a line from a low note to a low note never reaches the high voice.
    start = np.arange(40) * 0.25
    pitch = np.where(np.arange(40) % 2 == 0, 36, 96)
    pitch[:10] = 36
    pitch[-10:] = 36
    notes = make_notes(pitch, [64] * 40, start, start + 0.2)
    for name in ["linear_random_masking-x100", "band_random_masking-x100"]:
        target = get_task(name).prepare(notes, seed=2).target
        assert set(target["pitch"]) == {36}
        assert len(target) == (pitch == 36).sum()


@pytest.mark.parametrize("name", ALL_TASK_NAMES)
def test_deterministic_for_a_seed(piece, name):
    task = get_task(name)
    first, second = task.prepare(piece, seed=11), task.prepare(piece, seed=11)
    pd.testing.assert_frame_equal(first.source, second.source)
    pd.testing.assert_frame_equal(first.target, second.target)
    assert first.prefix_tokens == second.prefix_tokens


def test_seed_changes_random_tasks(piece):
    for name in ["random_masking-x50", "velocity_denoising"]:
        task = get_task(name)
        assert not task.prepare(piece, seed=1).source.equals(task.prepare(piece, seed=2).source)


@pytest.mark.parametrize("name", ALL_TASK_NAMES)
def test_tasks_accept_tiny_and_empty_inputs(name):
    task = get_task(name)
    for notes in (make_notes([], [], [], []), make_notes([60], [64], [0.0], [0.5])):
        sample = task.prepare(notes, seed=0)
        assert len(sample.target) <= max(len(notes), 1)


def test_extra_columns_are_dropped():
    notes = spaced_notes([60, 62, 64])
    notes["duration"] = notes["end"] - notes["start"]
    sample = get_task("above_median_prediction").prepare(notes, seed=0)
    assert list(sample.target.columns) == ["pitch", "velocity", "start", "end"]
    record_notes = {column: notes[column].tolist() for column in notes.columns}  # the HF record form
    from_record = get_task("above_median_prediction").prepare(record_notes, seed=0)
    pd.testing.assert_frame_equal(from_record.target, sample.target)


# --- registry --------------------------------------------------------------------------------------


def test_registry_and_names():
    assert len(TASK_SETS["piano_legacy"]) == 20
    assert {"above_median_prediction", "loud_prediction", "velocity_denoising", "performance_task"} <= set(
        TASKS
    )
    assert set(TASK_SETS["piano_default"]) <= set(TASKS)
    assert all(TASKS[name].name == name for name in TASKS)
    assert get_task("top_line-x2").name == "top_line_masking-x2"
    assert get_task("stride-x7").name == "stride_notes_masking-x7"
    assert get_task("chord_masking").name == "chord_masking-x3"
    with pytest.raises(KeyError):
        get_task("no_such_task")
    with pytest.raises(KeyError):
        get_task("above_median_prediction-x2")
    with pytest.raises(ValueError):
        get_task("stride-x0")
    with pytest.raises(ValueError):
        get_task("random_masking-x101")


def test_resolve_tasks():
    assert [t.name for t in resolve_tasks("piano_default")] == TASK_SETS["piano_default"]
    assert resolve_tasks("subsequence") == []
    assert resolve_tasks(None) == []
    assert [t.name for t in resolve_tasks("loud_prediction")] == ["loud_prediction"]
    names = [t.name for t in resolve_tasks(["piano_legacy", "loud_prediction", "top_line-x1"])]
    assert names == TASK_SETS["piano_legacy"] + ["top_line_masking-x1"]


# --- sequence layout -------------------------------------------------------------------------------


@pytest.fixture()
def tokenizer() -> ExponentialTimeTokenizer:
    tokenizer = ExponentialTimeTokenizer()
    add_task_tokens(tokenizer, ["<CHOPIN>", "<MAESTRO>"])
    return tokenizer


def test_every_token_fits_the_placeholder_slots():
    tokenizer = ExponentialTimeTokenizer()
    tokens = task_special_tokens()
    assert len(tokens) == len(set(tokens))
    ids = tokenizer.add_special_tokens(tokens)
    assert len(set(ids)) == len(tokens)
    assert min(ids) >= tokenizer.first_special_id and max(ids) < tokenizer.vocab_size
    free = tokenizer.n_special_ids - len(tokenizer.special_tokens)
    assert free >= 500  # room for composer and dataset tokens
    # Every prefix a task or the layout can produce is covered.
    known = set(all_task_tokens()) | set(layout_special_tokens())
    for name in ALL_TASK_NAMES + ["stride-x100", "chord-x2", "random_masking-x1"]:
        assert set(get_task(name).prefix_tokens) <= known, name
    assert {n_notes_token(n) for n in range(5000)} <= known


def test_build_task_sequence_layout(tokenizer, piece):
    sample = get_task("above_median_prediction").prepare(piece, seed=0)
    ids, loss_mask = build_task_sequence(
        tokenizer, sample, composer_token="<CHOPIN>", dataset_token="<MAESTRO>"
    )
    tokens = tokenizer.decode_tokens(ids)
    n_target = len(sample.target)
    first = float(sample.target["start"].min())
    last = float(sample.target["end"].max())
    header = ["<MAESTRO>", "<CHOPIN>", n_notes_token(n_target), "<ABOVE_MEDIAN_PREDICTION>"]
    header += [f"<MUSIC_TIME_{int(np.floor(first))}>", f"<MUSIC_TIME_{int(np.ceil(last))}>"]
    assert tokens[: len(header)] == header
    source_ids = tokenizer.encode(sample.source)
    target_ids = tokenizer.encode(sample.target)
    genai = len(header) + len(source_ids)
    assert ids[len(header) : genai].tolist() == source_ids
    assert tokens[genai] == GENAI_TOKEN and tokens.count(GENAI_TOKEN) == 1
    assert ids[genai + 1 : -1].tolist() == target_ids
    assert tokens[-1] == EOGENAI_TOKEN and tokens.count(EOGENAI_TOKEN) == 1
    expected_mask = np.zeros(len(ids), bool)
    expected_mask[genai + 1 :] = True
    np.testing.assert_array_equal(loss_mask, expected_mask)
    assert ids.dtype == np.int64 and loss_mask.dtype == bool
    np.testing.assert_array_equal(
        build_task_prompt(tokenizer, sample, "<CHOPIN>", "<MAESTRO>"), ids[: genai + 1]
    )

    # Music time restarts after <GENAI>: the target keeps the source's clock.
    genai_id = tokenizer.token_to_id[GENAI_TOKEN]
    time = tokenizer.music_time(ids, reset_token_id=genai_id)
    first_on = genai + 1 + next(i for i, t in enumerate(tokens[genai + 1 :]) if t.startswith("NOTE_ON"))
    assert time[first_on] == round(first / tokenizer.time_unit)

    # The generated part decodes back to the target notes.
    decoded = split_generated(tokenizer, ids)
    assert decoded["pitch"].tolist() == sample.target.sort_values(["start", "pitch"])["pitch"].tolist()
    assert np.abs(decoded["start"].to_numpy() - sample.target["start"].to_numpy()).max() <= 0.005 + 1e-9


def test_build_task_sequence_without_optional_tokens_and_with_context(tokenizer):
    notes = spaced_notes([60, 62, 64, 65, 67, 69])
    sample = get_task("stride-x1").prepare(notes, seed=0)
    ids, loss_mask = build_task_sequence(tokenizer, sample)
    tokens = tokenizer.decode_tokens(ids)
    assert tokens[:3] == ["<N_NOTES_3>", "<STRIDE_NOTES_MASKING>", "<PARAMETER_1>"]
    assert loss_mask.sum() == len(tokenizer.encode(sample.target)) + 1

    padded, padded_mask = build_task_sequence(tokenizer, sample, context_size=len(ids) + 7)
    assert len(padded) == len(ids) + 7
    np.testing.assert_array_equal(padded[: len(ids)], ids)
    assert (padded[len(ids) :] == tokenizer.pad_token_id).all() and not padded_mask[len(ids) :].any()

    cut, cut_mask = build_task_sequence(tokenizer, sample, context_size=len(ids) - 3)
    np.testing.assert_array_equal(cut, ids[:-3])
    np.testing.assert_array_equal(cut_mask, loss_mask[:-3])


def test_split_generated_stops_at_eogenai(tokenizer):
    target = spaced_notes([60, 64])
    ids = tokenizer.encode(target)
    genai, eogenai = tokenizer.ids_of([GENAI_TOKEN, EOGENAI_TOKEN])
    junk = tokenizer.encode(spaced_notes([100]))
    with_prompt = tokenizer.encode(spaced_notes([30])) + [genai] + ids + [eogenai] + junk
    assert split_generated(tokenizer, with_prompt)["pitch"].tolist() == [60, 64]
    assert split_generated(tokenizer, ids + [eogenai] + junk)["pitch"].tolist() == [60, 64]
    assert len(split_generated(tokenizer, [genai, eogenai])) == 0


def test_n_notes_buckets_are_bounded():
    assert n_notes_token(0) == "<N_NOTES_0>"
    assert n_notes_token(63) == "<N_NOTES_63>"
    assert n_notes_token(64) == n_notes_token(79) == "<N_NOTES_64>"
    assert n_notes_token(80) == "<N_NOTES_80>"
    assert n_notes_token(10_000) == "<N_NOTES_512>"

"""Tests of the continuation plausibility measures (piano_gpt.evaluation.continuation).

Expected values are computed by hand in the comments."""

import json
import math

import pytest

from piano_gpt.evaluation.continuation import (
    STAT_KEYS,
    compare_continuations,
    continuation_stats,
    format_markdown,
    plausibility_checks,
)
from piano_gpt.midi import empty_notes, make_notes


def notes(*rows):
    """notes((pitch, velocity, start, end), ...)"""
    if not rows:
        return empty_notes()
    pitch, velocity, start, end = zip(*rows)
    return make_notes(pitch, velocity, start, end)


def all_finite(value) -> bool:
    if isinstance(value, dict):
        return all(all_finite(v) for v in value.values())
    if isinstance(value, (int, float)):
        return math.isfinite(value)
    return True


# Three notes: A [0, 4), B [1, 3), C [2, 5).
# Polyphony: [0,1) 1, [1,2) 2, [2,3) 3, [3,4) 2, [4,5) 1 -> 1 for 2 s, 2 for 2 s, 3 for 1 s of 5 s.
# Time fractions: F(1) = 0.4, F(2) = 0.8, F(3) = 1.0 -> median 2, p95 3, max 3.
THREE = notes((60, 60, 0.0, 4.0), (64, 80, 1.0, 3.0), (67, 100, 2.0, 5.0))


def test_polyphony_of_three_overlapping_notes():
    stats = continuation_stats(THREE)
    assert stats["polyphony_median"] == 2
    assert stats["polyphony_p95"] == 3
    assert stats["polyphony_max"] == 3
    # Span 5 s, 3 notes.
    assert stats["seconds"] == 5.0
    assert stats["notes_per_second"] == pytest.approx(0.6)
    # Durations 4, 2, 3.
    assert stats["duration_mean"] == pytest.approx(3.0)
    assert stats["duration_median"] == 3.0
    assert stats["longest"] == 4.0
    assert stats["long_2s"] == pytest.approx(2 / 3)  # 4 and 3; exactly 2 s is not longer than 2 s
    assert stats["long_4s"] == 0.0  # exactly 4 s is not longer than 4 s
    # Velocity 60, 80, 100: mean 80, population std sqrt(800 / 3). Pitch 60, 64, 67.
    assert stats["velocity_mean"] == pytest.approx(80.0)
    assert stats["velocity_std"] == pytest.approx(math.sqrt(800 / 3))
    assert stats["pitch_mean"] == pytest.approx(191 / 3)
    assert "open_notes" not in stats
    assert list(stats) == list(STAT_KEYS)


def test_polyphony_gaps_touching_and_zero_length_notes():
    # [0,1) and [1,2) touch (never 2 at once), a silent gap [2,3), a note [3,4), a zero-length note at 3.5.
    # Polyphony over the span [0, 4): 1 for 3 s, 0 for 1 s -> F(0) = 0.25, F(1) = 1.
    table = notes((60, 64, 0.0, 1.0), (62, 64, 1.0, 2.0), (64, 64, 3.0, 4.0), (65, 64, 3.5, 3.5))
    stats = continuation_stats(table)
    assert stats["polyphony_max"] == 1
    assert stats["polyphony_median"] == 1
    assert stats["polyphony_p95"] == 1
    # A polyphony of 0 for 60 % of the time: median 0.
    sparse = notes((60, 64, 0.0, 1.0), (62, 64, 4.0, 5.0))  # 1 for 2 s, 0 for 3 s of 5 s
    stats = continuation_stats(sparse)
    assert stats["polyphony_median"] == 0
    assert stats["polyphony_p95"] == 1


def test_duration_fractions_and_rate_over_given_duration():
    # Durations 0.5, 1, 2, 2.5, 5: longer than 2 s: 2.5 and 5 (2 / 5); longer than 4 s: 5 (1 / 5).
    table = notes(
        (60, 64, 0.0, 0.5), (61, 64, 1.0, 2.0), (62, 64, 2.0, 4.0), (63, 64, 3.0, 5.5), (64, 64, 4.0, 9.0)
    )
    stats = continuation_stats(table, duration=10.0, open_notes=3)
    assert stats["long_2s"] == pytest.approx(0.4)
    assert stats["long_4s"] == pytest.approx(0.2)
    assert stats["duration_mean"] == pytest.approx(11 / 5)
    assert stats["duration_median"] == 2.0
    assert stats["longest"] == 5.0
    assert stats["seconds"] == 10.0
    assert stats["notes_per_second"] == pytest.approx(0.5)  # 5 notes over the given 10 s
    assert stats["open_notes"] == 3


def test_float_noise_does_not_make_a_long_note():
    table = notes((60, 64, 0.1, 2.1))  # 2.1 - 0.1 = 2.0000000000000004
    assert continuation_stats(table)["long_2s"] == 0.0


def test_empty_table_gives_zeros():
    stats = continuation_stats(empty_notes())
    assert set(stats) == set(STAT_KEYS)
    assert all(value == 0 for value in stats.values())
    stats = continuation_stats(empty_notes(), duration=5.0, open_notes=0)
    assert stats["seconds"] == 5.0 and stats["notes_per_second"] == 0.0 and stats["open_notes"] == 0


def test_pooling_is_time_weighted_over_pieces():
    # THREE (span 5: polyphony 1 for 2 s, 2 for 2 s, 3 for 1 s) + one note [0, 5) (1 for 5 s).
    # Pooled over 10 s: 1 for 7 s, 2 for 2 s, 3 for 1 s -> F(1) = 0.7, F(2) = 0.9, F(3) = 1:
    # median 1 (the per-piece medians 2 and 1 would average to 1.5), p95 3, max 3.
    single = notes((72, 40, 0.0, 5.0))
    result = compare_continuations([THREE, single], [THREE, single])
    gen = result["generated"]
    assert result["n_pairs"] == 2
    assert gen["n_notes"] == 4
    assert gen["polyphony_median"] == 1
    assert gen["polyphony_p95"] == 3
    assert gen["polyphony_max"] == 3
    assert gen["seconds"] == 10.0
    assert gen["notes_per_second"] == pytest.approx(0.4)  # 4 notes / (5 + 5) s
    # Durations pooled: 4, 2, 3, 5 -> long_2s 3/4, long_4s 1/4, median 3.5.
    assert gen["long_2s"] == pytest.approx(0.75)
    assert gen["long_4s"] == pytest.approx(0.25)
    assert gen["duration_median"] == pytest.approx(3.5)
    # Given durations: 4 notes / (10 + 10) s.
    result = compare_continuations(
        [THREE, single], [THREE, single], generated_durations=[10.0, 10.0], generated_open_notes=[1, 2]
    )
    assert result["generated"]["notes_per_second"] == pytest.approx(0.2)
    assert result["generated"]["open_notes"] == 3
    assert "open_notes" not in result["real"]
    assert result["real"]["notes_per_second"] == pytest.approx(0.4)


def test_identical_continuations_have_zero_distances_and_pass():
    real = [THREE, notes((48, 70, 0.0, 2.5), (50, 75, 0.5, 1.0))]
    result = compare_continuations(real, real)
    distance = result["distance"]
    for key in (
        "duration_wasserstein",
        "duration_hist_wasserstein",
        "velocity_wasserstein",
        "pitch_wasserstein",
        "polyphony_p95_difference",
    ):
        assert distance[key] == 0.0, key
    assert distance["long_2s_ratio"] == pytest.approx(1.0)
    assert result["generated"] == result["real"]
    checks = plausibility_checks(result, max_note_seconds=4.0)
    assert checks == {"long_2s": True, "polyphony_p95": True, "longest_note": True, "all": True}
    assert "longest_note" not in plausibility_checks(result)


def test_distances_hand_computed():
    # Generated: durations all 1 s, velocity 60, pitch 60. Real: durations all 3 s, velocity 80, pitch 62.
    gen = notes((60, 60, 0.0, 1.0), (60, 60, 2.0, 3.0))
    real = notes((62, 80, 0.0, 3.0), (62, 80, 4.0, 7.0))
    distance = compare_continuations([gen], [real])["distance"]
    assert distance["duration_wasserstein"] == pytest.approx(2.0)
    assert distance["duration_hist_wasserstein"] == pytest.approx(2.0)  # bins 20 and 60 of 50 ms
    assert distance["velocity_wasserstein"] == pytest.approx(20.0)
    assert distance["pitch_wasserstein"] == pytest.approx(2.0)
    assert distance["polyphony_p95_difference"] == 0.0
    # gen long_2s 0; real long_2s 1 -> ratio 0.
    assert distance["long_2s_ratio"] == 0.0
    # A 10 s note: the raw distance sees 10 s, the histogram clips it at 5 s (last bin centre 4.975).
    gen = notes((60, 60, 0.0, 10.0))
    real = notes((60, 60, 0.0, 1.0))
    distance = compare_continuations([gen], [real])["distance"]
    assert distance["duration_wasserstein"] == pytest.approx(9.0)
    assert distance["duration_hist_wasserstein"] == pytest.approx(4.975 - 1.025)
    # No long real note: the real fraction is taken as 1 / n_real_notes = 1 -> ratio 1 / 1.
    assert distance["long_2s_ratio"] == pytest.approx(1.0)


def wash():
    # 20 notes of 10 s, one every 0.5 s: up to 20 notes sound at once.
    return notes(*[(40 + i, 90, 0.5 * i, 0.5 * i + 10.0) for i in range(20)])


def realistic():
    # 40 notes of 0.25 s played as two voices, one onset every 0.25 s, each voice's notes 0.5 s apart.
    return notes(*[(60 + (i % 12), 70, 0.25 * i, 0.25 * i + 0.4) for i in range(40)])


def test_wash_fails_the_checks():
    result = compare_continuations([wash()], [realistic()])
    gen, real = result["generated"], result["real"]
    assert gen["long_2s"] == 1.0 and real["long_2s"] == 0.0
    assert gen["longest"] == 10.0
    # Real: notes 0.4 s long every 0.25 s: 2 sound at once for 0.15 s of every 0.25 s -> p95 2.
    assert real["polyphony_p95"] == 2 and real["polyphony_max"] == 2
    # Wash over [0, 19.5): polyphony k for 0.5 s on the way up and 0.5 s down (k = 1..19), 20 for 0.5 s.
    # F(k) = k / 19.5 for k < 20: median 10 (F(9) = 0.46, F(10) = 0.51), p95 19 (F(18) = 0.92, F(19) = 0.97).
    assert gen["polyphony_max"] == 20
    assert gen["polyphony_median"] == 10
    assert gen["polyphony_p95"] == 19
    checks = plausibility_checks(result, max_note_seconds=5.0)
    assert checks == {"long_2s": False, "polyphony_p95": False, "longest_note": False, "all": False}
    # No long real note: ratio against one long note out of 40: 1.0 / (1 / 40).
    assert result["distance"]["long_2s_ratio"] == pytest.approx(40.0)


def test_long_2s_check_allows_up_to_one_and_a_half_times():
    # Real: 1 long note of 4 -> 0.25. Generated: 3 of 8 = 0.375 = 1.5 * 0.25 passes; 4 of 8 fails.
    real = notes((60, 64, 0, 3.0), (61, 64, 3, 3.5), (62, 64, 4, 4.5), (63, 64, 5, 5.5))

    def generated(n_long):
        return notes(*[(60, 64, 10.0 * i, 10.0 * i + (3.0 if i < n_long else 1.0)) for i in range(8)])

    assert plausibility_checks(compare_continuations([generated(3)], [real]))["long_2s"]
    assert not plausibility_checks(compare_continuations([generated(4)], [real]))["long_2s"]


def test_empty_generated_has_no_nan():
    result = compare_continuations([empty_notes()], [THREE])
    assert all_finite(result)
    assert all(result["generated"][key] == 0 for key in STAT_KEYS)
    distance = result["distance"]
    assert distance["duration_wasserstein"] == pytest.approx(3.0)  # mean real duration
    assert distance["duration_hist_wasserstein"] == pytest.approx(4.975 - 0.025)  # the bin range
    assert distance["velocity_wasserstein"] == pytest.approx(127.0)
    assert distance["pitch_wasserstein"] == pytest.approx(87.0)
    assert distance["polyphony_p95_difference"] == -3.0
    assert distance["long_2s_ratio"] == 0.0
    assert plausibility_checks(result, max_note_seconds=1.0)["all"]
    # Both empty, and zero pairs.
    for result in (compare_continuations([empty_notes()], [empty_notes()]), compare_continuations([], [])):
        assert all_finite(result)
        assert all(value == 0 for value in result["distance"].values())
    assert "nan" not in format_markdown(result).lower()


def test_json_round_trip():
    result = compare_continuations(
        [wash(), empty_notes()],
        [realistic(), THREE],
        generated_durations=[20.0, None],
        generated_open_notes=[5, 0],
    )
    text = json.dumps(result, allow_nan=False)
    assert json.loads(text) == result


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError):
        compare_continuations([THREE], [])
    with pytest.raises(ValueError):
        compare_continuations([THREE], [THREE], generated_durations=[1.0, 2.0])


def test_format_markdown():
    result = compare_continuations([wash()], [realistic()], generated_open_notes=[4])
    text = format_markdown(result)
    lines = text.splitlines()
    assert "| measure | generated | real | generated vs real |" in lines
    assert "| notes | 20 | 40 | x0.50 |" in lines
    assert "| notes longer than 2 s | 100.0 % | 0.0 % | - |" in lines
    assert "| longest note | 10.000 s | 0.400 s | x25.00 |" in lines
    assert "| polyphony, max | 20.00 | 2.00 | +18.00 |" in lines
    assert "| notes open at the end | 4 | - | - |" in lines
    assert any(line.startswith("| Wasserstein, note durations (raw, s) | 9.600 |") for line in lines)


# --- continuations of real prompts -------------------------------------------------------------------


def test_continuation_prompts_cut_the_real_continuation():
    from piano_gpt.evaluation.continuation import continuation_prompts

    piece = make_notes([60, 62, 64, 65, 67], [80] * 5, [0.0, 1.0, 2.0, 3.0, 3.5], [0.5, 1.5, 2.5, 9.0, 4.0])
    (item,) = continuation_prompts([("a", piece), ("too short", piece.iloc[:2])], 3, 2, seconds=2.0)
    assert item.label == "a" and len(item.prompt) == 2
    # the generation would start at 1.5 s (the prompt's last end): notes starting in [1.5, 3.5)
    assert item.real["pitch"].tolist() == [64, 65]
    assert item.real["end"].tolist() == [2.5, 3.5]  # 65 cut at the window's end ...
    assert item.real_open_notes == 1  # ... and counted as still sounding


def test_evaluate_continuations_with_a_tiny_model():
    import torch

    from piano_gpt.evaluation.continuation import continuation_prompts, evaluate_continuations
    from piano_gpt.model import GPT, GPTConfig
    from piano_gpt.tokenizers import ExponentialTimeTokenizer

    tokenizer = ExponentialTimeTokenizer()
    torch.manual_seed(0)
    model = GPT(
        GPTConfig(block_size=256, vocab_size=tokenizer.vocab_size, n_layer=1, n_head=2, n_embd=32)
    ).eval()
    piece = make_notes(
        [60 + i % 12 for i in range(40)],
        [70] * 40,
        [0.25 * i for i in range(40)],
        [0.25 * i + 0.2 for i in range(40)],
    )
    prompts = continuation_prompts([("p", piece)], 1, 8, seconds=3.0)
    result = evaluate_continuations(model, tokenizer, prompts, 3.0, top_k=40, max_note_seconds=1.0)
    assert result["n_pairs"] == 1 and result["real"]["n_notes"] == 12
    assert result["generated"]["longest"] <= 1.0 + 1e-9
    assert result["checks"]["longest_note"]
    json.dumps(result, allow_nan=False)

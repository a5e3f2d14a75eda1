import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from piano_gpt import generation
from piano_gpt.generation import (
    STOP_CONTEXT,
    STOP_EOGENAI,
    STOP_MAX_DURATION,
    STOP_MAX_NEW_TOKENS,
    STOP_MAX_NOTES,
    FastRunner,
    GenerationConfig,
    GenerationError,
    ModelRunner,
    NgramIndex,
    Sampler,
    SamplingConfig,
    complete,
    complete_samples,
    find_training_shards,
    generate,
    generate_samples,
    native,
    sample_ids,
    token_tables,
)
from piano_gpt.generation.engine import window_time
from piano_gpt.midi import make_notes, read_metadata, read_notes, write_notes
from piano_gpt.model import GPT, GPTConfig
from piano_gpt.tokenizers import EOGENAI_TOKEN, GENAI_TOKEN, PAD_TOKEN, ExponentialTimeTokenizer
from piano_gpt.train.checkpoint import CheckpointConfig, save_checkpoint

# Cached (incremental) and uncached logits agree to this absolute tolerance (float32; logits ~ 1).
LOGITS_ATOL = 1e-4
COMPOSER = "<COMPOSER_BACH>"


@pytest.fixture
def tokenizer():
    tokenizer = ExponentialTimeTokenizer()
    tokenizer.add_special_tokens(["<COMPOSER_UNKNOWN>", COMPOSER])
    return tokenizer


def tiny_model(tokenizer, seed=0, block_size=64, **overrides) -> GPT:
    torch.manual_seed(seed)
    config = GPTConfig(
        block_size=block_size, vocab_size=tokenizer.vocab_size, n_layer=2, n_head=2, n_embd=32, **overrides
    )
    model = GPT(config).eval()
    with torch.no_grad():  # make the music time embedding matter, so a wrong time step shows
        model.transformer.wtime.weight.mul_(20)
    return model


def constant_logits_model(tokenizer, favourite: str, logit: float, seed=0) -> GPT:
    """A model whose logits are the same at every step: ``favourite`` at ``logit``, others ~N(0, 1)."""
    model = tiny_model(tokenizer, seed, block_size=128, bias=True)
    with torch.no_grad():
        model.transformer.ln_f.weight.zero_()
        direction = model.lm_head.weight[tokenizer.token_to_id[favourite]]
        model.transformer.ln_f.bias.copy_(direction * logit / direction.norm() ** 2)
    return model


@pytest.fixture
def model(tokenizer):
    return tiny_model(tokenizer)


@pytest.fixture
def prompt_notes():
    pitch = [60, 64, 67, 72, 48, 55, 62, 65]
    start = np.arange(8) * 0.25 + 1.0
    return make_notes(pitch, [70, 80, 90, 100, 60, 70, 80, 90], start, start + 0.3)


def music_ids(tokenizer, ids) -> bool:
    allowed = token_tables(tokenizer).music.numpy()
    return bool(allowed[np.asarray(ids, dtype=np.int64)].all())


# --- incremental decoding -----------------------------------------------------------------------------


needs_native = pytest.mark.skipif(
    native.library() is None, reason=f"no native step here: {native.unavailable_reason()}"
)
# FastRunner with its compiled step, FastRunner's PyTorch step, and the reference.
RUNNER_KINDS = [
    pytest.param(lambda model, batch_size: FastRunner(model, batch_size, native=True), id="native", marks=needs_native),
    pytest.param(lambda model, batch_size: FastRunner(model, batch_size, native=False), id="fast_torch"),
    pytest.param(ModelRunner, id="model"),
]  # fmt: skip


@pytest.mark.parametrize("runner_class", RUNNER_KINDS)
def test_cached_logits_equal_uncached(model, tokenizer, prompt_notes, runner_class):
    ids = torch.tensor([tokenizer.encode(prompt_notes)[:40], tokenizer.encode(prompt_notes)[5:45]])
    time = torch.as_tensor(tokenizer.music_time(ids.numpy(), model.config.max_music_time))
    with torch.inference_mode():
        full, _ = model(ids, time, all_logits=True)
        runner = runner_class(model, batch_size=2)
        cached = [runner.prefill(ids[:, :16], time[:, :16])]
        for i in range(16, 40):
            cached.append(runner.step(ids[:, i], time[:, i]))
    cached = torch.stack(cached[:-1], dim=1)
    torch.testing.assert_close(cached, full[:, 15:39], atol=LOGITS_ATOL, rtol=0)


@pytest.mark.parametrize("runner_class", RUNNER_KINDS[:2])
@pytest.mark.parametrize("bias", [False, True])
def test_shared_prompt_cache_equals_uncached(tokenizer, prompt_notes, bias, runner_class):
    """Rows that share a prompt (kept once for the batch) and then diverge."""
    model = tiny_model(tokenizer, bias=bias)
    prompt = torch.tensor([tokenizer.encode(prompt_notes)[:20]])
    rng = np.random.default_rng(0)
    new = torch.as_tensor(rng.choice(tokenizer.note_on_ids, size=(3, 12)))
    ids = torch.cat([prompt.expand(3, -1), new], dim=1)
    time = torch.as_tensor(tokenizer.music_time(ids.numpy(), model.config.max_music_time))
    with torch.inference_mode():
        full, _ = model(ids, time, all_logits=True)
        runner = runner_class(model, batch_size=3)
        cached = [runner.prefill(prompt, time[:1, :20], batch_size=3)]
        for i in range(20, 32):
            cached.append(runner.step(ids[:, i], time[:, i]))
    torch.testing.assert_close(torch.stack(cached[:-1], dim=1), full[:, 19:31], atol=LOGITS_ATOL, rtol=0)


@needs_native
@pytest.mark.parametrize("batch_size", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("shared", [False, True])
def test_native_step_equals_uncached_at_simd_widths(tokenizer, batch_size, shared):
    """Widths that take the native step's vector paths (rows of 64 floats, heads of 32) and its
    row groups of 1-4; prompt lengths off and on a key tile boundary; logits of a few units."""
    torch.manual_seed(1)
    config = GPTConfig(
        block_size=96, vocab_size=tokenizer.vocab_size, n_layer=2, n_head=2, n_embd=64, bias=True
    )
    model = GPT(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.dim() == 2:
                parameter.normal_(0.0, 0.15)
            else:  # layer norm weights near 1, biases near 0
                parameter.normal_(1.0 if "ln" in name and name.endswith("weight") else 0.0, 0.1)
    rng = np.random.default_rng(batch_size)
    for prompt_length in (16, 21):
        ids = torch.as_tensor(rng.choice(tokenizer.note_on_ids, size=(batch_size, prompt_length + 40)))
        time = torch.as_tensor(rng.integers(0, config.max_music_time + 50, size=ids.shape))
        if shared:
            ids[:, :prompt_length] = ids[0, :prompt_length].clone()
            time[:, :prompt_length] = time[0, :prompt_length].clone()
        with torch.inference_mode():
            full, _ = model(ids, time, all_logits=True)
            runner = FastRunner(model, batch_size, native=True)
            rows = slice(0, 1) if shared else slice(None)  # a shared prompt is given once
            prompt = ids[rows, :prompt_length], time[rows, :prompt_length]
            cached = [runner.prefill(*prompt, batch_size=batch_size if shared else None)]
            for i in range(prompt_length, ids.size(1)):
                cached.append(runner.step(ids[:, i], time[:, i]))
        assert full.abs().max() > 1.0
        expected = full[:, prompt_length - 1 : -1]
        torch.testing.assert_close(torch.stack(cached[:-1], dim=1), expected, atol=LOGITS_ATOL, rtol=0)


def test_native_step_can_be_turned_off(model, monkeypatch):
    assert FastRunner(model, 2, native=False).native is None
    monkeypatch.setenv("PIANO_GPT_NATIVE", "0")
    assert native.library() is None and "PIANO_GPT_NATIVE" in native.unavailable_reason()
    assert FastRunner(model, 2).native is None  # the PyTorch step
    with pytest.raises(RuntimeError, match="no native step"):
        FastRunner(model, 2, native=True)
    # Not on the CPU in float32: the PyTorch step too.
    assert FastRunner(tiny_model(ExponentialTimeTokenizer()).to(torch.bfloat16), 2).native is None


def test_key_tiles_round_trip():
    keys = torch.randn(2, 3, 37, 8)
    tiles = native.tile_keys(keys)
    assert tiles.shape == (2, 3, 3, 8, native.TILE)
    torch.testing.assert_close(native.untile_keys(tiles, 37), keys, atol=0, rtol=0)


def test_window_time_is_tokenizers_music_time(tokenizer, prompt_notes):
    genai = tokenizer.token_to_id[GENAI_TOKEN]
    ids = np.array(tokenizer.encode(prompt_notes) + [genai] + tokenizer.encode(prompt_notes)[:30])
    tables = token_tables(tokenizer)
    ours = window_time(torch.as_tensor(ids)[None], tables.time_units, genai)[0].numpy()
    np.testing.assert_array_equal(ours, tokenizer.music_time(ids, reset_token_id=genai))


def greedy_reference(model, tokenizer, prompt_ids, n_new, allowed) -> list[int]:
    """Greedy decoding the slow way: the whole sequence through the uncached model for every token."""
    genai = tokenizer.token_to_id[GENAI_TOKEN]
    ids = list(prompt_ids)
    with torch.inference_mode():
        for _ in range(n_new):
            time = tokenizer.music_time(ids, model.config.max_music_time, genai)
            logits, _ = model(torch.tensor([ids]), torch.as_tensor(time)[None])
            logits = logits[0, -1].masked_fill(~allowed, float("-inf"))
            ids.append(int(logits.argmax()))
    return ids[len(prompt_ids) :]


@pytest.mark.parametrize("fast, use_native", [(True, True), (True, False), (False, False)])
def test_greedy_decoding_matches_full_recompute(
    model, tokenizer, prompt_notes, fast, use_native, monkeypatch
):
    """The engine's incremental time steps and cache give the tokens a full recompute gives."""
    if not use_native:
        monkeypatch.setenv("PIANO_GPT_NATIVE", "0")
    prompt = tokenizer.encode(prompt_notes)[:12]
    allowed = token_tables(tokenizer).music
    expected = greedy_reference(model, tokenizer, prompt, 40, allowed)
    (sample,) = sample_ids(
        model, tokenizer, prompt, temperature=0, max_new_tokens=40, fast=fast, grammar=False
    )
    assert sample.ids.tolist() == expected


# --- sampling -----------------------------------------------------------------------------------------


def test_same_seed_same_notes_and_seeds_are_per_sample(model, tokenizer, prompt_notes):
    options = dict(max_new_tokens=80, temperature=1.0, top_k=50, top_p=0.95)
    first = generate(model, tokenizer, prompt_notes, n_samples=3, seed=11, **options)
    again = generate(model, tokenizer, prompt_notes, n_samples=3, seed=11, **options)
    for a, b in zip(first, again):
        pd.testing.assert_frame_equal(a, b)
    assert not first[0].equals(first[1])
    # Sample i of a batch is the sample of seed + i on its own.
    (alone,) = generate(model, tokenizer, prompt_notes, n_samples=1, seed=12, **options)
    pd.testing.assert_frame_equal(alone, first[1])
    # The reference path (GPT.forward + KVCache) draws the same samples.
    reference = generate(model, tokenizer, prompt_notes, n_samples=3, seed=11, fast=False, **options)
    for a, b in zip(first, reference):
        pd.testing.assert_frame_equal(a, b)


def test_sampler_filters():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    allowed = torch.tensor([True, True, True, True])

    def draws(config, n=400, mask=allowed):
        sampler = Sampler(config, [0], mask)
        return {int(sampler(logits)[0]) for _ in range(n)}

    assert draws(SamplingConfig(temperature=0)) == {0}
    assert draws(SamplingConfig(top_k=1)) == {0}
    assert draws(SamplingConfig(top_k=2)) == {0, 1}
    assert draws(SamplingConfig(top_p=0.5)) == {0}  # 0.5 alone reaches 0.5
    assert draws(SamplingConfig(top_p=0.7)) == {0, 1}
    assert draws(SamplingConfig(min_p=0.5)) == {0, 1}  # 0.3 >= 0.5 * 0.5; 0.15 is not
    assert draws(SamplingConfig(), mask=torch.tensor([False, True, False, True])) == {1, 3}
    assert draws(SamplingConfig()) == {0, 1, 2, 3}


def test_sampler_draws_the_distribution():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    sampler = Sampler(SamplingConfig(), [123], torch.ones(4, dtype=torch.bool))
    counts = np.bincount([int(sampler(probs.log()[None])[0]) for _ in range(4000)], minlength=4)
    np.testing.assert_allclose(counts / 4000, probs.numpy(), atol=0.03)


@pytest.mark.parametrize(
    "options",
    [dict(temperature=-1), dict(top_p=0), dict(top_p=1.5), dict(min_p=1), dict(top_k=-2), dict(n_samples=0)],
)
def test_bad_options_are_refused(options):
    with pytest.raises(GenerationError):
        GenerationConfig(**options)


def test_special_tokens_are_never_drawn(tokenizer, prompt_notes):
    for favourite in (PAD_TOKEN, COMPOSER, EOGENAI_TOKEN, GENAI_TOKEN, "<SPECIAL_500>"):
        model = constant_logits_model(tokenizer, favourite, logit=30.0)
        samples = sample_ids(model, tokenizer, tokenizer.encode(prompt_notes), n_samples=2, max_new_tokens=50)
        for sample in samples:
            assert len(sample.ids) == 50 and music_ids(tokenizer, sample.ids), favourite


# --- stopping rules -----------------------------------------------------------------------------------


def test_stops_at_max_new_tokens(model, tokenizer, prompt_notes):
    for g in generate_samples(model, tokenizer, prompt_notes, n_samples=2, max_new_tokens=37):
        assert g.stop_reason == STOP_MAX_NEW_TOKENS and g.n_tokens == 37


def test_stops_at_note_budget(model, tokenizer, prompt_notes):
    counts = token_tables(tokenizer).note_counts.numpy()
    for g in generate_samples(model, tokenizer, prompt_notes, n_samples=3, max_new_tokens=5000, max_notes=25):
        assert g.stop_reason == STOP_MAX_NOTES
        assert counts[g.ids].sum() == 25  # the 26th note is not played
        assert 0 < len(g.notes) <= 25


def test_stops_at_duration_budget(model, tokenizer, prompt_notes):
    units = tokenizer.token_time_units()
    prompt_end = prompt_notes["end"].max()
    for g in generate_samples(
        model, tokenizer, prompt_notes, n_samples=2, max_new_tokens=5000, max_duration=4.0
    ):
        assert g.stop_reason == STOP_MAX_DURATION
        seconds = units[g.ids].sum() * tokenizer.time_unit
        assert 4.0 - max(tokenizer.time_steps) * tokenizer.time_unit < seconds <= 4.0 + 1e-9
        # (a note struck at the very end is given one time unit by the tokenizer's decoding)
        assert g.notes["end"].max() <= prompt_end + 4.0 + tokenizer.time_unit + 1e-9


def task_prompt_ids(tokenizer, prompt_notes) -> list[int]:
    return tokenizer.encode(prompt_notes) + tokenizer.ids_of([GENAI_TOKEN])


def test_completion_stops_at_eogenai(tokenizer, prompt_notes):
    # P(<EOGENAI>) ~ e^5 / (e^5 + ~215 music ids * e^(0.7^2 / 2)) ~ 0.35 per step.
    model = constant_logits_model(tokenizer, EOGENAI_TOKEN, logit=5.0)
    prompt = task_prompt_ids(tokenizer, prompt_notes)
    samples = complete_samples(model, tokenizer, prompt, n_samples=4, grammar=False)
    assert all(s.stop_reason == STOP_EOGENAI for s in samples)
    assert all(music_ids(tokenizer, s.ids) for s in samples)  # <EOGENAI> itself is not kept
    assert any(len(s.ids) > 0 for s in samples)
    # A continuation never ends with <EOGENAI>: it is not its place.
    for sample in sample_ids(
        model, tokenizer, tokenizer.encode(prompt_notes), n_samples=2, max_new_tokens=60
    ):
        assert len(sample.ids) == 60 and music_ids(tokenizer, sample.ids)


def test_completion_stops_when_the_context_is_full(model, tokenizer, prompt_notes):
    prompt = task_prompt_ids(tokenizer, prompt_notes)[-30:]
    (sample,) = complete_samples(model, tokenizer, prompt, max_new_tokens=500)
    assert sample.stop_reason == STOP_CONTEXT
    assert len(prompt) + len(sample.ids) == model.config.block_size + 1
    with pytest.raises(GenerationError, match="ends with"):
        complete(model, tokenizer, prompt[:-1])


def test_completion_decodes_after_genai(model, tokenizer, prompt_notes):
    (g,) = complete_samples(model, tokenizer, task_prompt_ids(tokenizer, prompt_notes), max_new_tokens=25)
    pd.testing.assert_frame_equal(g.notes, generation.engine.playable(tokenizer.decode(g.ids)))


# --- long pieces --------------------------------------------------------------------------------------


class RecordingRunner(FastRunner):
    windows: list = []

    def prefill(self, ids, time_steps, batch_size=None):
        RecordingRunner.windows.append(ids.clone())
        return super().prefill(ids, time_steps, batch_size)


def test_sliding_window_continues_past_the_context(model, tokenizer, prompt_notes, monkeypatch):
    monkeypatch.setitem(generation.runner.RUNNERS, "fast", RecordingRunner)
    RecordingRunner.windows = []
    block = model.config.block_size
    generations = generate_samples(
        model, tokenizer, prompt_notes, n_samples=2, seed=3, max_new_tokens=6 * block, composer="Bach"
    )
    composer_id = tokenizer.token_to_id[COMPOSER]
    for g in generations:
        assert g.stop_reason == STOP_MAX_NEW_TOKENS and g.n_tokens == 6 * block
        assert len(g.notes) > 0 and g.notes["start"].min() >= prompt_notes["end"].max() - 1e-9
        assert music_ids(tokenizer, g.ids)
    windows = RecordingRunner.windows
    assert len(windows) >= 6  # primed once, then re-primed each time the window filled
    offset = prompt_notes["start"].min()
    prompt_ids = tokenizer.encode(
        prompt_notes.assign(start=prompt_notes.start - offset, end=prompt_notes.end - offset)
    )
    velocities, note_ons = tokenizer.velocity_ids, tokenizer.note_on_ids
    for window in windows[1:]:
        assert window.shape == (2, block // 2)  # context_keep=0.5 of the window
        assert (window[:, 0] == composer_id).all()  # the conditioning token is kept
        for row, g in enumerate(generations):
            # then the notes held across the cut (VELOCITY NOTE_ON pairs), then the latest tokens
            history = np.concatenate([prompt_ids, g.ids])
            after = window[row, 1:].numpy()
            pairs = 0
            while np.isin(after[2 * pairs], velocities) and np.isin(after[2 * pairs + 1], note_ons):
                pairs += 1
            assert any(
                np.array_equal(history[j : j + len(after) - 2 * held], after[2 * held :])
                for held in range(pairs + 1)
                for j in range(len(history))
            )


def test_long_continuation_by_duration(model, tokenizer, prompt_notes):
    """Many windows of music by a duration budget: 20 s from a 64-token model."""
    (g,) = generate_samples(model, tokenizer, prompt_notes, max_new_tokens=20_000, max_duration=20.0, seed=1)
    assert g.stop_reason == STOP_MAX_DURATION and g.n_tokens > 10 * model.config.block_size
    assert g.notes["end"].max() > prompt_notes["end"].max() + 15


# --- modes and conditioning ---------------------------------------------------------------------------


def test_composer_conditioning(model, tokenizer, prompt_notes, monkeypatch):
    with pytest.raises(GenerationError, match="BACH"):
        generate(model, tokenizer, prompt_notes, composer="Chopin", max_new_tokens=5)
    with pytest.raises(GenerationError, match="dataset tokens"):
        generate(model, tokenizer, prompt_notes, dataset="maestro", max_new_tokens=5)
    monkeypatch.setitem(generation.runner.RUNNERS, "fast", RecordingRunner)
    RecordingRunner.windows = []
    (g,) = generate_samples(model, tokenizer, prompt_notes, composer="Bach", max_new_tokens=20)
    assert RecordingRunner.windows[0][0, 0] == tokenizer.token_to_id[COMPOSER]
    assert g.settings["composer"] == "Bach" and g.metadata()["composer"] == "Bach"
    with pytest.raises(GenerationError, match="empty prompt"):
        generate(model, tokenizer, None, max_new_tokens=5)
    (g,) = generate_samples(model, tokenizer, None, composer="Bach", max_new_tokens=30)  # a composer alone
    assert g.n_tokens == 30 and len(g.context) == 0


def test_task_completion_with_piano_tasks(tokenizer, prompt_notes):
    tasks = pytest.importorskip("piano_gpt.tasks")
    tasks.add_task_tokens(tokenizer)
    model = tiny_model(tokenizer, block_size=128)
    notes = pd.concat(
        [prompt_notes, prompt_notes.assign(start=prompt_notes.start + 2, end=prompt_notes.end + 2)]
    )
    notes = make_notes(notes.pitch, notes.velocity, notes.start - 1.0, notes.end - 1.0)
    name = "above_median_prediction"
    prompt, sample, task = generation.task_prompt(tokenizer, notes, name, task_seed=0)
    expected = tasks.build_task_prompt(tokenizer, sample)
    np.testing.assert_array_equal(prompt, expected)
    prompt_n, *_ = generation.task_prompt(
        tokenizer, notes, name, task_seed=0, n_notes=7, time_span=(1.2, 3.5)
    )
    assert tasks.n_notes_token(7) in tokenizer.decode_tokens(prompt_n)
    assert "<MUSIC_TIME_1>" in tokenizer.decode_tokens(
        prompt_n
    ) and "<MUSIC_TIME_4>" in tokenizer.decode_tokens(prompt_n)
    shifted = notes.assign(start=notes.start + 5, end=notes.end + 5)
    generations = generation.task_samples(model, tokenizer, shifted, name, n_samples=2, max_new_tokens=40)
    for g in generations:
        assert g.settings["task"] == task.name and g.reference is not None
        assert len(g.context) > 0 and g.context["start"].min() >= 5 - 1e-9  # back on the input's clock
        assert len(g.piece) >= len(g.notes)


# --- memorisation -------------------------------------------------------------------------------------


def random_piece(n, seed) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    start = np.cumsum(rng.integers(0, 30, n)) * 0.01  # gaps of 0: chords
    return make_notes(rng.integers(40, 90, n), rng.integers(30, 100, n), start, start + 0.2)


def test_memorisation_finds_the_longest_copied_run():
    corpus = [random_piece(300, s) for s in range(5)]
    index = NgramIndex.from_notes(
        corpus, n=6, sources=[json.dumps({"title": f"piece {s}"}) for s in range(5)]
    )
    copied = corpus[3].iloc[100:140]
    # Moved in time, replayed with other velocities, onsets jittered inside their 10 ms cell (so the
    # notes of a chord come in another order).
    jitter = np.random.default_rng(1).uniform(-0.004, 0.004, len(copied))
    copied = copied.assign(start=copied.start + 17.0 + jitter, end=copied.end + 17.0, velocity=64)
    fresh = random_piece(30, 99)
    generated = pd.concat(
        [fresh.iloc[:15], copied, fresh.iloc[15:].assign(start=fresh.start + 60, end=fresh.end + 60)]
    )
    generated = make_notes(generated.pitch, generated.velocity, generated.start, generated.end)
    report = index.check(generated)
    assert report.longest_run == 40 and report.record == 3 and report.source == {"title": "piece 3"}
    assert report.copied_fraction == pytest.approx(40 / 70)
    assert "40 of 70 notes" in report.summary() and "piece 3" in report.summary()
    unrelated = index.check(random_piece(200, 1234))
    assert unrelated.longest_run < 6 and unrelated.copied_fraction == 0
    assert index.check(generated.iloc[:3]).longest_run == 0  # shorter than an n-gram


@pytest.fixture(scope="module")
def demo_shards(tmp_path_factory):
    from piano_gpt.data.shards import build_shards

    root = tmp_path_factory.mktemp("shards")
    tokenizer = ExponentialTimeTokenizer()
    build_shards({"name": "demo", "type": "demo"}, tokenizer, cache_dir=root, splits=("train",), n_workers=1)
    return root


def test_memorisation_from_shards(tokenizer, demo_shards, tmp_path):
    dataset_cfg = {"name": "demo", "type": "demo"}
    split = find_training_shards(CheckpointConfig(run={"dataset": dataset_cfg}), tokenizer, demo_shards)
    assert split is not None and split.name == "train"  # found though this tokenizer has more tokens
    from piano_gpt.data.shards import SplitShards

    shards = SplitShards.open(split)
    index = NgramIndex.from_shards(shards, tokenizer.time_unit)
    assert len(index) == shards.n_notes
    notes = shards.record_notes(2)
    report = index.check(notes.assign(start=notes.start + 3, end=notes.end + 3))
    assert report.longest_run == len(notes) and report.record == 2 and report.source
    assert find_training_shards(CheckpointConfig(run={}), tokenizer, demo_shards) is None
    assert find_training_shards(CheckpointConfig(run={"dataset": dataset_cfg}), tokenizer, tmp_path) is None


# --- CLI ----------------------------------------------------------------------------------------------


def run_cli(cwd, *args):
    return subprocess.run(
        [sys.executable, "-m", "piano_gpt.generate", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_writes_a_valid_midi_file_and_nothing_else(model, tokenizer, prompt_notes, tmp_path):
    save_checkpoint(tmp_path / "ckpt", model, tokenizer)
    write_notes(prompt_notes, tmp_path / "in.mid")
    before = set(tmp_path.iterdir())
    result = run_cli(
        tmp_path,
        "checkpoint_path=ckpt",
        "prompt_path=in.mid",
        "output_path=out.mid",
        "max_new_tokens=150",
        "temperature=0.9",
        "top_k=40",
        "seed=7",
    )
    assert result.returncode == 0, result.stderr
    assert set(tmp_path.iterdir()) - before == {tmp_path / "out.mid"}
    notes = read_notes(tmp_path / "out.mid")
    assert f"wrote out.mid: {len(notes)} notes ({len(prompt_notes)} prompt" in result.stdout
    assert len(notes) > len(prompt_notes)
    meta = read_metadata(tmp_path / "out.mid")
    assert meta["seed"] == "7" and meta["temperature"] == "0.9" and meta["top_k"] == "40"
    assert meta["max_new_tokens"] == "150" and meta["mode"] == "continuation"
    # The prompt comes back as it was given.
    np.testing.assert_allclose(notes.start.iloc[: len(prompt_notes)], prompt_notes.start, atol=2e-3)
    # Same seed, same file contents.
    again = run_cli(
        tmp_path, "checkpoint_path=ckpt", "prompt_path=in.mid", "output_path=again.mid", "max_new_tokens=150"
    )
    assert again.returncode == 0, again.stderr
    other = run_cli(
        tmp_path, "checkpoint_path=ckpt", "prompt_path=in.mid", "output_path=again2.mid", "max_new_tokens=150"
    )
    pd.testing.assert_frame_equal(read_notes(tmp_path / "again.mid"), read_notes(tmp_path / "again2.mid"))
    assert other.returncode == 0


def test_cli_samples_durations_and_errors(model, tokenizer, prompt_notes, tmp_path, demo_shards):
    save_checkpoint(
        tmp_path / "ckpt", model, tokenizer, run_config={"dataset": {"name": "demo", "type": "demo"}}
    )
    write_notes(prompt_notes, tmp_path / "in.mid")
    result = run_cli(
        tmp_path,
        "checkpoint_path=ckpt",
        "prompt_path=in.mid",
        "output_path=gen/out.mid",
        "n_samples=2",
        "seed=5",
        "duration=3",
        "max_new_tokens=5000",
        "composer=Bach",
        f"shards_dir={demo_shards}",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("memorisation: longest run copied from the training set") == 2
    for seed in (5, 6):
        path = tmp_path / "gen" / f"out-{seed}.mid"
        meta = read_metadata(path)
        assert (
            meta["seed"] == str(seed)
            and meta["stop_reason"] == STOP_MAX_DURATION
            and meta["composer"] == "Bach"
        )
        assert "memorised_longest_run" in meta
        assert read_notes(path)["end"].max() <= prompt_notes["end"].max() + 3.0 + 1e-2
    bad = run_cli(tmp_path, "checkpoint_path=ckpt", "prompt_path=in.mid", "composer=Chopin")
    assert bad.returncode == 2 and "BACH" in bad.stderr
    missing = run_cli(tmp_path, "checkpoint_path=nope", "prompt_path=in.mid")
    assert missing.returncode == 2 and "nope" in missing.stderr

"""GraphRunner: the fixed-shape decoding step a CUDA graph replays. Without a GPU its step runs
eagerly (``capture=False``) and must give ModelRunner's logits for every switch of GPTConfig, through
a shared prompt and a slid window; on a CUDA device the captured graph must give the eager step's."""

import pytest
import torch
from test_fast_piano import BLOCK, LOGITS_ATOL, SWITCHES, decode, inputs, piano_model_and_prompt, random_model

from piano_gpt.generation import engine, sample_ids
from piano_gpt.generation.runner import GraphRunner, ModelRunner, runner_for


def compare(model, batch: int, shared: bool, device: str, capture: bool) -> None:
    ids, times = inputs(batch, BLOCK + 16, seed=batch)
    prompt_length = 21
    if shared:
        ids[:, :prompt_length], times[:, :prompt_length] = ids[0, :prompt_length], times[0, :prompt_length]
    model = model.to(device)
    ids, times = ids.to(device), times.to(device)
    with torch.inference_mode():
        runner = GraphRunner(model, batch, capture=capture)
        fixed = decode(runner, ids, times, prompt_length, batch if shared else None)
        reference = decode(ModelRunner(model, batch), ids, times, prompt_length, batch if shared else None)
    assert runner.capture == capture and (runner.graph is not None) == capture
    assert len(fixed) == len(reference) == 16 + 2 + BLOCK - prompt_length
    assert reference[0].abs().max() > 2.0  # logits of a few units: a wrong term would show
    for call, (a, b) in enumerate(zip(fixed, reference, strict=True)):
        torch.testing.assert_close(
            a, b, atol=LOGITS_ATOL, rtol=0, msg=lambda m, call=call: f"call {call}: {m}"
        )


@pytest.mark.parametrize("batch, shared", [(1, False), (3, False), (3, True)])
@pytest.mark.parametrize("switches", SWITCHES.values(), ids=SWITCHES.keys())
def test_the_fixed_shape_step_gives_model_runner_logits(switches, batch, shared):
    compare(random_model(switches), batch, shared, "cpu", capture=False)


STALE = 1e3


def test_a_step_writes_only_its_own_position():
    """The step attends over the whole cache behind a mask: what lies beyond the filled positions (left
    by an earlier window; here: large numbers) must change nothing, and the step writes one position."""
    model = random_model(SWITCHES["piano"])
    ids, times = inputs(2, 30, seed=3)
    with torch.inference_mode():
        runner, reference = GraphRunner(model, 2, capture=False), ModelRunner(model, 2)
        runner.prefill(ids[:, :20], times[:, :20])
        reference.prefill(ids[:, :20], times[:, :20])
        runner.cache.keys[:, :, :, 21:] = STALE
        runner.cache.values[:, :, :, 21:] = STALE
        for t in range(20, 22):
            torch.testing.assert_close(
                runner.step(ids[:, t], times[:, t]),
                reference.step(ids[:, t], times[:, t]),
                atol=LOGITS_ATOL,
                rtol=0,
            )
        assert runner.length == 22
        assert (runner.cache.keys[:, :, :, 22:] == STALE).all()
        assert (runner.cache.values[:, :, :, :22] != STALE).all()
        with pytest.raises(ValueError, match="cache is full"):
            full = GraphRunner(model, 1, capture=False)
            full.prefill(*inputs(1, BLOCK))
            full.step(ids[:1, 0], times[:1, 0])


def test_generation_through_the_fixed_step_draws_the_reference_notes(monkeypatch):
    """The whole engine (grammar, windows slid past the context) on the fixed-shape step draws, for a
    seed, the ids the reference runner draws, greedy and sampled."""
    model, tokenizer, prompt = piano_model_and_prompt()
    used = []

    def graph_runner(model, batch_size, fast=True):
        used.append(GraphRunner(model, batch_size, capture=False) if fast else ModelRunner(model, batch_size))
        return used[-1]

    monkeypatch.setattr(engine, "runner_for", graph_runner)
    for options in (dict(temperature=0), dict(temperature=1.0, n_samples=3, seed=4)):
        fixed = sample_ids(model, tokenizer, prompt, max_new_tokens=120, fast=True, **options)
        reference = sample_ids(model, tokenizer, prompt, max_new_tokens=120, fast=False, **options)
        assert [type(r) for r in used[-2:]] == [GraphRunner, ModelRunner]
        assert [s.ids.tolist() for s in fixed] == [s.ids.tolist() for s in reference]
        assert all(len(s.ids) == 120 for s in fixed)  # past the 48-token window: it slid


def test_runner_for_decodes_a_cuda_model_with_graphs():
    model = random_model(SWITCHES["gpt2"])
    assert not isinstance(runner_for(model, 1), GraphRunner)  # on the CPU: FastRunner
    if torch.cuda.is_available():
        assert isinstance(runner_for(model.cuda(), 1), GraphRunner)
        assert isinstance(runner_for(model, 1, fast=False), ModelRunner)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
@pytest.mark.parametrize("batch, shared", [(1, False), (3, True)])
@pytest.mark.parametrize("switches", ["gpt2", "piano"])
def test_the_captured_graph_gives_model_runner_logits(switches, batch, shared):
    compare(random_model(SWITCHES[switches]), batch, shared, "cuda", capture=True)

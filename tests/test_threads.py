"""The thread choice of a generation (generation/threads.py)."""

import numpy as np
import pytest
import torch

from piano_gpt.generation import GenerationError, make_config, sample_ids
from piano_gpt.generation import threads as threads_module
from piano_gpt.generation.threads import ThreadChoice, threads_for
from piano_gpt.model import GPT, GPTConfig
from piano_gpt.tokenizers import ExponentialTimeTokenizer


def test_every_core_only_while_the_others_are_idle():
    assert threads_for(0.0, 2) == 2 and threads_for(0.2, 2) == 2
    assert threads_for(0.3, 2) == 1 and threads_for(1.0, 2) == 1 and threads_for(5.0, 2) == 1
    assert threads_for(1.0, 8) == 7 and threads_for(0.9, 8) == 7 and threads_for(0.0, 8) == 8


def test_the_choice_follows_the_measured_load(monkeypatch):
    saved = torch.get_num_threads()
    monkeypatch.setattr(threads_module, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads_module, "_runnable_others", lambda: 1)  # one busy process at the start
    clock = [100.0]
    cpu = [(50.0, 10.0)]  # (every CPU busy, this process) in seconds
    monkeypatch.setattr(threads_module.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(threads_module, "_cpu_seconds", lambda: cpu[0])
    try:
        torch.set_num_threads(2)
        choice = ThreadChoice()
        assert choice.current() == 1 and torch.get_num_threads() == 1
        clock[0] += 1.0
        cpu[0] = (50.9, 10.85)  # the rest of the machine used 0.05 s of 1 s: idle
        assert choice.current() == 2 and torch.get_num_threads() == 2
        clock[0] += 0.01  # too soon to look again
        cpu[0] = (52.0, 10.9)
        assert choice.current() == 2
        clock[0] += 1.0
        cpu[0] = (54.0, 11.9)  # others: 2.0 - 1.0 = 1 core busy
        assert choice.current() == 1
        choice.restore()
        assert torch.get_num_threads() == 2
        fixed = ThreadChoice(fixed=2)
        assert fixed.current() == 2
    finally:
        torch.set_num_threads(saved)


def test_generation_takes_fixed_threads_and_restores_torchs():
    tokenizer = ExponentialTimeTokenizer()
    torch.manual_seed(0)
    model = GPT(
        GPTConfig(block_size=32, vocab_size=tokenizer.vocab_size, n_layer=1, n_head=2, n_embd=16)
    ).eval()
    before = torch.get_num_threads()
    (one,) = sample_ids(
        model, tokenizer, tokenizer.encode_array(_prompt()), max_new_tokens=20, seed=1, threads=1
    )
    assert torch.get_num_threads() == before
    (default,) = sample_ids(model, tokenizer, tokenizer.encode_array(_prompt()), max_new_tokens=20, seed=1)
    assert (one.ids == default.ids).all()  # the thread count never changes what is drawn
    with pytest.raises(GenerationError, match="threads"):
        make_config(threads=0)


def _prompt():
    from piano_gpt.midi import make_notes

    return make_notes([60, 62, 64], [80, 80, 80], [0.0, 0.2, 0.4], [0.3, 0.5, 0.7])


def test_this_process_busy_threads_are_not_counted_as_load():
    """Worker threads a parallel region leaves spinning belong to this process: a generation that
    starts after one must not read them as a competing process (and fall back to one thread)."""
    import threading
    import time

    import numpy as np

    stop = threading.Event()

    def spin():  # numpy releases the GIL: this thread stays runnable, as an OpenMP worker does
        a = np.ones((256, 256))
        while not stop.is_set():
            a @ a

    worker = threading.Thread(target=spin)
    worker.start()
    try:
        deadline = time.monotonic() + 5
        seen = threads_module._own_running_threads()
        while seen < 2 and time.monotonic() < deadline:
            seen = max(seen, threads_module._own_running_threads())
    finally:
        stop.set()
        worker.join()
    assert seen >= 2  # the spinning thread and this one, both ours


def idle_two_cores(monkeypatch) -> list[float]:
    """Two cores and the rest of the machine idle, on a fake clock: ``clock[0]`` is the time."""
    monkeypatch.setattr(threads_module, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads_module, "_runnable_others", lambda: 0)
    clock = [100.0]
    monkeypatch.setattr(threads_module.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(threads_module, "_cpu_seconds", lambda: (50.0 + clock[0], clock[0]))  # others idle
    return clock


def test_every_core_only_while_it_times_faster(monkeypatch):
    """Contention the load cannot show (a virtual machine's host, memory bandwidth): with the machine
    looking idle, steps on two threads that take longer than on one make the choice one thread, and
    it comes back to two when two get faster, within a probe."""
    saved = torch.get_num_threads()
    clock = idle_two_cores(monkeypatch)
    seconds_a_step = {1: 0.001, 2: 0.003}  # two threads contended: 3x slower

    def run(steps: int) -> list[int]:
        counts = []
        for _ in range(steps):
            threads = choice.current()
            assert torch.get_num_threads() == threads
            counts.append(threads)
            clock[0] += seconds_a_step[threads]
        return counts

    try:
        torch.set_num_threads(2)
        choice = ThreadChoice()
        counts = run(2000)  # ~2.2 s of steps
        assert counts[0] == 2 and counts[-1] == 1
        assert counts[20:].count(1) > 0.95 * len(
            counts[20:]
        )  # the probes of two threads: a few steps a second
        seconds_a_step[2] = 0.0005  # the contention gone: two threads twice as fast
        counts = run(4000)
        assert counts[-1] == 2 and counts[-3000:].count(2) > 0.95 * 3000
        # A prompt is read on the count the load allows, even in the middle of a probe of one thread.
        seconds_a_step[2] = 0.003
        while choice.current() != 1:
            clock[0] += seconds_a_step[choice.threads]
        with choice.for_prompt():
            assert torch.get_num_threads() == 2
        assert torch.get_num_threads() == 1
        # Untimed (a step whose results the thread count may change): the load decides alone.
        choice.restore()
        choice = ThreadChoice(timed=False)
        assert set(run(2000)) == {2}
    finally:
        torch.set_num_threads(saved)


def test_probes_back_off_while_one_thread_stays_slower(monkeypatch):
    """Two threads steadily 3x faster than one: after the first probes, one-thread steps come half as
    often each time (up to MAX_PROBE_SECONDS apart); contention that then appears is still found within
    that, and the probes come every PROBE_SECONDS again."""
    saved = torch.get_num_threads()
    clock = idle_two_cores(monkeypatch)
    seconds_a_step = {1: 0.003, 2: 0.001}

    def run(seconds: float) -> list[tuple[float, int]]:
        steps, end = [], clock[0] + seconds
        while clock[0] < end:
            threads = choice.current()
            steps.append((clock[0], threads))
            clock[0] += seconds_a_step[threads]
        return steps

    try:
        torch.set_num_threads(2)
        choice = ThreadChoice()
        steps = run(12.0)
        one_thread = [t for t, n in steps if n == 1]
        probes = [t for i, t in enumerate(one_thread) if i == 0 or t - one_thread[i - 1] > 0.1]
        gaps = np.diff(probes)
        # every 0.5 s this would be 24 probes; backing off: 1, 2, 4, 4, ... seconds apart
        assert 4 <= len(probes) <= 7, probes
        assert gaps[-1] == pytest.approx(threads_module.MAX_PROBE_SECONDS, abs=0.05)
        assert all(b >= a - 0.05 for a, b in zip(gaps, gaps[1:]))  # never closer together
        seconds_a_step[2] = 0.006  # contention appears: two threads now 2x slower than one
        steps = run(threads_module.MAX_PROBE_SECONDS + 0.5)
        assert steps[-1][1] == 1  # found by the next probe
        assert choice.probe_seconds == threads_module.PROBE_SECONDS
    finally:
        torch.set_num_threads(saved)

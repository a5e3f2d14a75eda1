"""How many threads a generation runs on, chosen from how busy the machine is, and re-chosen as it goes.

A decoding step of a small model is a few hundred microseconds of work split between threads that
meet at a barrier many times a step (every layer, in the compiled step and in PyTorch's pool). When
another process holds a core, the thread that shares it waits for the scheduler at each barrier and a
step takes milliseconds instead: on 2 cores with one busy process, 2 threads ran 4-16x slower than 1
(bench/RESULTS.md). So a generation uses every core only while the others are idle: it starts from
the kernel's count of runnable tasks (``/proc/loadavg``) and, every ``CHECK_SECONDS``, measures what
the rest of the machine used since the last check (``/proc/stat`` minus this process's CPU time).
Without ``/proc`` (not Linux) it keeps torch's thread count.

Some contention never shows there: a virtual machine's cores shared with its host's other guests, or
memory bandwidth taken by them. So while the load allows every core, the steps themselves are timed
(the time between calls of :meth:`ThreadChoice.current`, once a step) and, every ``PROBE_SECONDS``, a
few steps run on the count not in use: one thread is kept until the next probe where its median step
is clearly faster (``ONE_THREAD_MARGIN``), every core otherwise. While every core is in use and the
probes keep finding one thread clearly slower, they come less often (up to ``MAX_PROBE_SECONDS``).
Only where the thread count cannot change a result (``timed``: the compiled step splits its work by
outputs; PyTorch's matrix products do not always sum in one order across thread counts), and the
prompt is always read on the count the load allows (:meth:`ThreadChoice.for_prompt`), so on a steady
machine a seed draws the same notes.
"""

from __future__ import annotations

import collections
import contextlib
import os
import statistics
import time

import torch

CHECK_SECONDS = 0.1  # how often the choice is revisited
# Use every core only when the rest of the machine keeps less than this share of one core busy: a
# thread that loses its core even briefly stalls every barrier of the step.
IDLE_OTHERS = 0.25
PROBE_SECONDS = 0.5  # how often the thread count not in use is timed again
# While every core is in use and each probe finds one thread clearly slower, probes come half as often
# each time, up to this: a probe's steps on one thread cost ~5% of a short batch-8 call (RESULTS).
MAX_PROBE_SECONDS = 4.0
CLEARLY_SLOWER = 1.25  # one thread's median step over every core's, for the probes to back off
PROBE_STEPS = 6  # steps a probe times (after one step that wakes the threads up, not counted)
# One thread replaces every core only when its steps are clearly faster: single steps vary by ~20%.
ONE_THREAD_MARGIN = 0.85


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _own_running_threads() -> int:
    """This process's threads the kernel counts as running (the caller included): the worker threads a
    previous parallel region left spinning are ours, not a competing process."""
    running = 0
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return 1
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/stat") as file:
                state = file.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        running += state == "R"
    return max(1, running)


def _runnable_others() -> float | None:
    """Tasks the kernel counts as runnable now, other than this process's (None without /proc)."""
    try:
        with open("/proc/loadavg") as file:
            running = int(file.read().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return None
    return max(0, running - _own_running_threads())


def _cpu_seconds() -> tuple[float, float] | None:
    """(seconds every CPU spent busy, seconds this process ran), both cumulative (None without /proc)."""
    try:
        with open("/proc/stat") as file:
            fields = [int(x) for x in file.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal: steal is busy
    own = os.times()
    return busy / ticks, own.user + own.system


def threads_for(others_busy: float, cores: int) -> int:
    """Threads to use when the rest of the machine keeps ``others_busy`` cores busy."""
    if others_busy < IDLE_OTHERS:
        return cores
    return max(1, min(cores, int(cores - others_busy + IDLE_OTHERS)))


class ThreadChoice:
    """The thread count of one generation: ``fixed`` when given, else chosen from the load (above).

    :meth:`current` is cheap enough to call every step; it sets torch's thread count (for the
    PyTorch step and the prompt) when the choice changes; :meth:`restore` puts torch's back.
    """

    def __init__(self, fixed: int | None = None, timed: bool = True):
        self.cores = usable_cores()
        self.saved = torch.get_num_threads()
        self.fixed = fixed
        self.last_check = time.monotonic()
        self.last_cpu = _cpu_seconds()
        if fixed is not None:
            self.threads = fixed
        else:
            others = _runnable_others()
            self.threads = self.saved if others is None else min(self.saved, threads_for(others, self.cores))
        self.allowed = self.threads  # what the load allows; self.threads may be fewer (timed faster)
        self.timed = timed
        self.step_seconds: dict[int, collections.deque] = {}  # the last steps' seconds, by thread count
        self.last_step: float | None = None
        self.warming = True  # the next step wakes this count's threads: not timed
        self.probing = 0  # steps left in a probe of the other count
        self.probe_seconds = PROBE_SECONDS  # the time between probes, longer while they find nothing
        self.probe_ended = False  # a probe ran its steps out and its verdict is not taken yet
        self.next_probe = self.last_check + PROBE_SECONDS
        self._apply()

    def _apply(self) -> None:
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)

    def current(self) -> int:
        """The thread count for the next step (called once a step)."""
        if self.fixed is not None or self.last_cpu is None:
            return self.threads
        now = time.monotonic()
        self._time_step(now)
        if now - self.last_check >= CHECK_SECONDS:
            cpu = _cpu_seconds()
            others = ((cpu[0] - self.last_cpu[0]) - (cpu[1] - self.last_cpu[1])) / (now - self.last_check)
            self.last_check, self.last_cpu = now, cpu
            self.allowed = min(self.saved, threads_for(max(others, 0.0), self.cores))
        self._choose(now)
        return self.threads

    def _time_step(self, now: float) -> None:
        """Count the step that just ended towards its thread count's recent step time."""
        last, self.last_step = self.last_step, now
        if last is None or self.warming:
            self.warming = False
            return
        self.step_seconds.setdefault(self.threads, collections.deque(maxlen=PROBE_STEPS)).append(now - last)
        if self.probing:
            self.probing -= 1
            self.probe_ended = self.probing == 0

    def _choose(self, now: float) -> None:
        """The allowed count, or one thread where that timed faster; the other is timed now and then."""
        if self.allowed == 1 or not self.timed:
            self._set(self.allowed)
            return
        if self.probing:  # a probe runs its steps out
            return
        candidates = (self.allowed, 1)
        untimed = [count for count in candidates if not self.step_seconds.get(count)]
        if untimed or now >= self.next_probe:
            # Time a count never timed, else the one not in use, afresh for the next few steps.
            self._set(untimed[0] if untimed else next(c for c in candidates if c != self.threads))
            self.step_seconds.pop(self.threads, None)
            self.probing = PROBE_STEPS
            self.next_probe = now + self.probe_seconds
            return
        median = {count: statistics.median(self.step_seconds[count]) for count in candidates}
        self._set(1 if median[1] < ONE_THREAD_MARGIN * median[self.allowed] else self.allowed)
        if self.probe_ended:
            self.probe_ended = False
            clearly_slower = (
                median[1] > CLEARLY_SLOWER * median[self.allowed] and self.threads == self.allowed
            )
            self.probe_seconds = (
                min(2 * self.probe_seconds, MAX_PROBE_SECONDS) if clearly_slower else PROBE_SECONDS
            )
            self.next_probe = now + self.probe_seconds

    @contextlib.contextmanager
    def for_prompt(self):
        """Read a prompt on the count the load allows (never a probe's), then go back to the step's."""
        threads = self.threads
        if self.fixed is None:
            self._set(self.allowed)
        try:
            yield
        finally:
            if self.fixed is None:
                self._set(threads)

    def not_a_step(self) -> None:
        """What ran since the last :meth:`current` was not one step (the prompt read again): untimed."""
        self.last_step = None

    def _set(self, threads: int) -> None:
        if threads != self.threads:
            self.threads = threads
            self.warming = True
            self._apply()

    def restore(self) -> None:
        if torch.get_num_threads() != self.saved:
            torch.set_num_threads(self.saved)

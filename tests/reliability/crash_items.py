"""Dataset items that crash, hang or misbehave in the worker process that parses them.

A ``Booby`` is a record dict (the ``record`` of a ``RecordItem``) whose ``notes`` lookup does its
``action`` when it happens in another process than the one that made it: the dataset builder reads
notes in worker processes, so the action stands in for a native parser that dies on a malformed file.
In the test process itself the lookup raises instead, so a builder that parses in-process fails the
test rather than killing pytest. Items are pickled to workers: this module must stay importable.
"""

from __future__ import annotations

import faulthandler
import json
import os
import signal
import time
from dataclasses import dataclass, field

import numpy as np

from piano_gpt.data.sources import MidiFileItem


def good_notes(n: int = 24, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    start = np.sort(rng.uniform(0, 10, n))
    end = start + rng.uniform(0.05, 0.5, n)
    return {
        "pitch": rng.integers(40, 90, n).tolist(),
        "velocity": rng.integers(30, 110, n).tolist(),
        "start": start.tolist(),
        "end": end.tolist(),
        "duration": (end - start).tolist(),
    }


class Booby(dict):
    def __init__(self, action: str, title: str, log: str | None = None, seed: int = 0):
        super().__init__(notes=good_notes(seed=seed), source=json.dumps({"title": title}))
        self.action, self.log, self.owner = action, log, os.getpid()

    def __getitem__(self, key):
        if key == "notes":
            if os.getpid() == self.owner:
                raise RuntimeError(f"{self.action} would have hit the test process: notes read in-process")
            if self.log:
                with open(self.log, "a") as handle:
                    handle.write(f"{os.getpid()}\n")
            if self.action in ("exit", "segfault"):
                _crash_here(self.action)
            if self.action == "hang":
                time.sleep(3600)
            if self.action == "sys.exit":
                raise SystemExit(1)
            if self.action == "memory":
                raise MemoryError("parser asked for too much")
        return super().__getitem__(key)


def _crash_here(action: str) -> None:
    faulthandler.disable()  # no "Fatal Python error" stack dump in the test output
    if action == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)
    os._exit(3)


@dataclass(frozen=True)
class CrashingFile(MidiFileItem):
    """A MIDI file item whose parsing segfaults its worker process (reading ``path`` outside the test
    process is what crashes: it stands in for a native parser dying on the file)."""

    owner: int = field(default_factory=os.getpid)

    def __getattribute__(self, name):
        if name == "path" and os.getpid() != object.__getattribute__(self, "owner"):
            _crash_here("segfault")
        return object.__getattribute__(self, name)

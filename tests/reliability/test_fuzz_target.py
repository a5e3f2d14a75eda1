"""bench/fuzz_midi.py keeps working: a short run finds nothing and the builder pass completes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_a_short_fuzz_run_is_clean(tmp_path):
    run = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "fuzz_midi.py"),
            "--max-inputs=600",
            "--seed=3",
            "--build-sample=60",
            f"--out={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["inputs"] == 600 and summary["findings"] == []
    # Both kinds of outcome are reached: files read, and files refused with our own error.
    assert summary["outcomes"]["ok"] > 50 and summary["outcomes"]["MidiReadError"] > 50
    assert summary["build"]["items"] == 60 and summary["build"]["errors_name_the_file"]

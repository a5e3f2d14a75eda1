import sys
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import settings

# Property tests: the same examples on every run (a red CI means the change broke something), no
# example database carried between runs. `--hypothesis-profile=explore` draws new random examples,
# many more of them (docs/reliability.md).
settings.register_profile("ci", derandomize=True, database=None, max_examples=120, print_blob=True)
settings.register_profile("explore", derandomize=False, database=None, max_examples=5000, print_blob=True)
settings.load_profile("ci")

REPO = Path(__file__).resolve().parents[1]
# tests/reliability's MIDI writer (midi_fabric) serves the other tests too, imported by name.
if str(REPO / "tests" / "reliability") not in sys.path:
    sys.path.insert(0, str(REPO / "tests" / "reliability"))
MAESTRO_DIR = REPO.parent / "shared" / "data" / "maestro"


@pytest.fixture(scope="session")
def maestro_dir() -> Path:
    if not (MAESTRO_DIR / "maestro-v3.0.0.csv").exists():
        pytest.skip(f"MAESTRO not found at {MAESTRO_DIR}")
    return MAESTRO_DIR


@pytest.fixture(scope="session")
def maestro_validation_files(maestro_dir) -> list[Path]:
    table = pd.read_csv(maestro_dir / "maestro-v3.0.0.csv")
    names = table[table["split"] == "validation"]["midi_filename"]
    files = [maestro_dir / name for name in names if (maestro_dir / name).exists()]
    if not files:
        pytest.skip("no MAESTRO validation files present")
    return files

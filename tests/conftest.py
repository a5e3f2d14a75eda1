import sys
from pathlib import Path

import pandas as pd
import pytest

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

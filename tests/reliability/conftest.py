import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
# The helper modules (midi_fabric, crash_items) are imported by name, also in worker processes.
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))


@pytest.fixture(scope="session")
def tokenizer():
    from piano_gpt.tokenizers import ExponentialTimeTokenizer

    return ExponentialTimeTokenizer()

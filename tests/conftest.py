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


# --- databases of the generation store (tests/test_store.py and the saved-generation tests) -------------

POSTGRES_ENV = "PIANO_GPT_TEST_POSTGRES_URL"


@pytest.fixture(scope="session")
def postgres_admin():
    """An engine on the test PostgreSQL database, or a skip saying why there is none.

    Get a URL with ``eval "$(bash .ci/postgres.sh)"``."""
    import os

    pytest.importorskip("sqlalchemy")
    from sqlalchemy import make_url
    from sqlalchemy.exc import OperationalError

    from piano_gpt.store import get_engine

    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(f'{POSTGRES_ENV} is not set (eval "$(bash .ci/postgres.sh)" provides one)')
    engine = get_engine(url, connect_args={"connect_timeout": 5})
    try:
        with engine.connect():
            pass
    except OperationalError as error:
        engine.dispose()
        shown = make_url(url).render_as_string(hide_password=True)
        pytest.skip(f"PostgreSQL at {shown} is unreachable: {str(error).splitlines()[0]}")
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:
    """URL of an empty database: a fresh SQLite file, or a fresh PostgreSQL schema (search_path)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.sqlite'}"
        return
    import uuid

    from sqlalchemy.schema import CreateSchema, DropSchema

    admin = request.getfixturevalue("postgres_admin")
    schema = f"test_store_{uuid.uuid4().hex[:12]}"
    with admin.begin() as connection:
        connection.execute(CreateSchema(schema))
    url = admin.url.update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(DropSchema(schema, cascade=True))

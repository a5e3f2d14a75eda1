"""Generation store (piano_gpt.store) on SQLite and, when $PIANO_GPT_TEST_POSTGRES_URL is set, PostgreSQL.

Get a PostgreSQL URL with ``eval "$(bash .ci/postgres.sh)"``. Each PostgreSQL test works in a schema of
its own (dropped afterwards), each SQLite test in a file under tmp_path (fixtures ``db_url`` and
``postgres_admin``: tests/conftest.py).
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("sqlalchemy")
pytest.importorskip("alembic")

from alembic.autogenerate import compare_metadata  # noqa: E402
from alembic.runtime.migration import MigrationContext  # noqa: E402
from sqlalchemy import func, inspect, select  # noqa: E402

from piano_gpt.midi import empty_notes, make_notes  # noqa: E402
from piano_gpt.store import (  # noqa: E402
    Base,
    GenerationSettingsTable,
    GenerationStore,
    NotesBlobError,
    Prompt,
    blob_to_notes,
    current_revision,
    get_engine,
    head_revision,
    notes_to_blob,
    resolve_url,
    upgrade_database,
)

STORE_TABLES = {"models", "generation_settings", "prompts", "generations"}


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture
def store(db_url):
    with GenerationStore(db_url) as opened:
        yield opened


def random_notes(rng: np.random.Generator, count: int) -> pd.DataFrame:
    start = np.sort(rng.random(count) * 30.0)
    return make_notes(
        rng.integers(21, 109, count), rng.integers(1, 128, count), start, start + rng.random(count) * 2 + 1e-3
    )


def schema_snapshot(url: str) -> dict:
    engine = get_engine(url)
    try:
        inspector = inspect(engine)
        return {
            table: (
                [
                    (column["name"], str(column["type"]), column["nullable"])
                    for column in inspector.get_columns(table)
                ],
                sorted(
                    (index["name"], tuple(index["column_names"])) for index in inspector.get_indexes(table)
                ),
                sorted(str(key["name"]) for key in inspector.get_foreign_keys(table)),
            )
            for table in sorted(inspector.get_table_names())
        }
    finally:
        engine.dispose()


# ---------------------------------------------------------------------------------------- migrations
def test_migrations_build_the_schema_from_an_empty_database(db_url):
    engine = get_engine(db_url)
    try:
        assert inspect(engine).get_table_names() == []
        assert current_revision(engine) is None

        assert upgrade_database(engine) == head_revision()

        assert set(inspect(engine).get_table_names()) == STORE_TABLES | {"alembic_version"}
        assert current_revision(engine) == head_revision()
        # The migrations and the ORM classes describe the same schema.
        with engine.connect() as connection:
            differences = compare_metadata(
                MigrationContext.configure(connection, opts={"compare_type": True}), Base.metadata
            )
        assert differences == []
    finally:
        engine.dispose()


def test_upgrade_twice_is_a_no_op(db_url):
    assert upgrade_database(db_url) == head_revision()
    with GenerationStore(db_url, upgrade=False) as store:
        kept = store.save_generation(
            model="m", settings={"mode": "sample"}, notes=random_notes(np.random.default_rng(0), 5)
        )
    before = schema_snapshot(db_url)

    assert upgrade_database(db_url) == head_revision()
    with GenerationStore(db_url) as store:  # opening upgrades too
        assert [row.id for row in store.browse()] == [kept]

    assert schema_snapshot(db_url) == before
    assert current_revision(db_url) == head_revision()


# ------------------------------------------------------------------------------------------ round trips
def test_bulk_save_and_browse_1000_generations(store):
    rng = np.random.default_rng(7)
    models = [
        {"name": "gpt2-10M", "parameter_count": 10_000_000, "training_tokens": 2_000_000_000},
        {"name": "gpt2-50M", "checkpoint_path": "checkpoints/50M.safetensors", "config": {"n_layer": 8}},
        {"name": "gpt2-200M"},
    ]
    tasks = ["next_token_prediction", "high_median_prediction", "denoising", "performance"]
    composers = [
        "Frédéric Chopin",
        "Johann Sebastian Bach",
        "Claude Debussy",
        "Franz Liszt",
        "Sergei Rachmaninoff",
    ]
    modes = ["sample", "greedy"]
    items, expected = [], []
    for k in range(1000):
        model, task = models[k % 3], tasks[(k // 3) % 4]
        composer, mode = composers[k % 5], modes[k % 7 == 0]
        items.append(
            {
                "model": model,
                "settings": {
                    "mode": mode,
                    "task": task,
                    "temperature": 1.0,
                    "top_k": None,
                    "top_p": 0.95,
                    "seed": k % 2,
                },
                "prompt": {
                    "title": f"Piece {k % 40}",
                    "composer": composer,
                    "dataset": "maestro",
                    "source": {"midi_filename": f"2018/piece_{k % 40}.midi"},
                    "notes": random_notes(rng, 8),
                },
                "notes": random_notes(rng, int(rng.integers(0, 40))),
                "metrics": {"f1": float(rng.random()), "k": k},
            }
        )
        expected.append((model["name"], task, composer, mode))

    ids = store.save_many(items, batch_size=128)

    assert len(ids) == 1000 and len(set(ids)) == 1000 and ids == sorted(ids)
    assert store.count() == 1000
    with store.engine.connect() as connection:  # settings and prompts are shared, not repeated
        settings_rows = connection.scalar(select(func.count()).select_from(GenerationSettingsTable))
        prompt_rows = connection.scalar(select(func.count()).select_from(Prompt))
    assert settings_rows == len({(task, mode, k % 2) for k, (_, task, _, mode) in enumerate(expected)})
    assert prompt_rows == 1000  # each prompt has its own random notes

    by_id = dict(zip(ids, expected))
    for field, position, values in [
        ("model_name", 0, [m["name"] for m in models]),
        ("task", 1, tasks),
        ("composer", 2, composers),
        ("mode", 3, modes),
    ]:
        for value in values:
            rows = store.browse(**{field: value}, limit=1000)
            wanted = [i for i in reversed(ids) if by_id[i][position] == value]
            assert [row.id for row in rows] == wanted, (field, value)
            assert store.count(**{field: value}) == len(wanted)
    combined = store.browse(model_name="gpt2-50M", task="denoising", composer="Claude Debussy", limit=1000)
    assert {row.id for row in combined} == {
        i for i, e in by_id.items() if e[:3] == ("gpt2-50M", "denoising", "Claude Debussy")
    }
    assert all((row.model_name, row.task, row.composer) == by_id[row.id][:3] for row in combined)

    # Pagination: pages are disjoint, newest first, and cover the filtered set exactly.
    seen = []
    for offset in range(0, 1000, 50):
        page = store.browse(model_name="gpt2-10M", limit=50, offset=offset)
        seen.extend(row.id for row in page)
        if len(page) < 50:
            break
    assert seen == [i for i in reversed(ids) if by_id[i][0] == "gpt2-10M"]
    assert store.browse(limit=0) == []
    assert store.browse(offset=1000) == []
    with pytest.raises(ValueError):
        store.browse(limit=-1)

    # Lightweight rows carry the metadata; full records carry the notes.
    first = store.browse(limit=1)[0]
    assert first.id == ids[-1] and first.metrics == {"f1": items[-1]["metrics"]["f1"], "k": 999}
    assert (
        first.note_count == len(items[-1]["notes"])
        and first.title == "Piece 39"
        and first.dataset == "maestro"
    )
    for position in (0, 1, 500, 999):
        record = store.get_generation(ids[position])
        pd.testing.assert_frame_equal(record.notes, items[position]["notes"], check_exact=True)
        pd.testing.assert_frame_equal(
            record.prompt.notes, items[position]["prompt"]["notes"], check_exact=True
        )
        assert record.settings == items[position]["settings"]
        assert record.prompt.source == items[position]["prompt"]["source"]

    listed = {model.name: model for model in store.list_models()}
    assert [model.name for model in store.list_models()] == sorted(listed)
    assert {name: model.generation_count for name, model in listed.items()} == Counter(e[0] for e in expected)
    assert listed["gpt2-10M"].parameter_count == 10_000_000
    assert listed["gpt2-50M"].config == {"n_layer": 8}
    assert listed["gpt2-50M"].checkpoint_path == "checkpoints/50M.safetensors"


def test_notes_blob_round_trips_exactly():
    rng = np.random.default_rng(3)
    start = np.sort(rng.random(500) * 1e3)
    tables = [
        random_notes(rng, 1000),
        empty_notes(),
        make_notes(
            [0, 127, 300, -5], [0, 127, 1, 64], [0.0, 1 / 3, 1e-300, 2.5], [math.pi, 1e300, 5e-324, 2.5]
        ),
        make_notes(rng.integers(0, 128, 500), rng.integers(0, 128, 500), start, np.nextafter(start, np.inf)),
        make_notes([60], [2**40], [np.inf], [np.nan]),
    ]
    for notes in tables:
        blob = notes_to_blob(notes)
        back = blob_to_notes(blob)
        pd.testing.assert_frame_equal(back, notes, check_exact=True)
        assert back["start"].to_numpy().tobytes() == notes["start"].to_numpy().tobytes()  # bit for bit
    assert len(notes_to_blob(tables[0])) == 12 + 18 * 1000  # one byte for pitch and velocity

    # Other columns are dropped; integer-valued floats are accepted; the order given is kept.
    extra = tables[0].iloc[::-1].reset_index(drop=True).assign(duration=1.0)
    extra["pitch"] = extra["pitch"].astype(float)
    pd.testing.assert_frame_equal(
        blob_to_notes(notes_to_blob(extra)), tables[0].iloc[::-1].reset_index(drop=True)
    )

    with pytest.raises(ValueError, match="integers"):
        notes_to_blob(tables[0].assign(pitch=60.5))
    with pytest.raises(ValueError, match="columns"):
        notes_to_blob(tables[0].drop(columns="end"))
    for broken in (b"", b"PGN0" + bytes(8), notes_to_blob(tables[0])[:-1]):
        with pytest.raises(NotesBlobError):
            blob_to_notes(broken)


def test_notes_round_trip_exactly_through_the_database(store):
    rng = np.random.default_rng(11)
    generated = make_notes(
        [21, 108, 60, 400], [1, 127, 64, 0], [0.1, 0.2, 1 / 7, 3.0], [0.3, 5e-324, 2.0, 1e9]
    )
    prompt_notes = random_notes(rng, 300)
    gid = store.save_generation(
        model="m",
        settings={"mode": "sample", "task": "t", "temperature": np.float32(0.75), "seed": np.int64(42)},
        prompt={"source": '{"title": "Ballade", "composer": "Chopin"}', "notes": prompt_notes},
        notes=generated,
        metrics={"f1": np.float64(0.5), "undefined": float("nan"), "per_step": np.arange(3)},
    )
    empty_id = store.save_generation(model="m", settings={}, notes=empty_notes())

    record = store.get_generation(gid)
    pd.testing.assert_frame_equal(record.notes, generated, check_exact=True)
    pd.testing.assert_frame_equal(record.prompt.notes, prompt_notes, check_exact=True)
    assert (record.prompt.title, record.prompt.composer) == ("Ballade", "Chopin")  # taken from the source
    assert record.settings == {"mode": "sample", "task": "t", "temperature": 0.75, "seed": 42}
    assert record.metrics == {"f1": 0.5, "undefined": None, "per_step": [0, 1, 2]}
    assert record.model.name == "m" and record.created_at.tzinfo is not None

    empty = store.get_generation(empty_id)
    pd.testing.assert_frame_equal(empty.notes, empty_notes(), check_exact=True)
    assert empty.prompt is None and empty.settings == {}
    assert store.browse(limit=1)[0].duration == 0.0
    with pytest.raises(KeyError):
        store.get_generation(empty_id + 1000)
    with pytest.raises(ValueError, match="unknown"):
        store.save_generation(model={"name": "m", "layers": 4}, settings={}, notes=generated)


# --------------------------------------------------------------------------------- hostile strings
HOSTILE_TITLES = [
    "Robert'); DROP TABLE generations;--",
    "100% Chopin",
    "%",
    "_",
    "a_b",
    "axb",
    'It\'s "quoted" \\ back\\slash; SELECT * FROM models --',
    "Études — 鋼琴 \u00a0 ' OR '1'='1",
]
HOSTILE_COMPOSERS = ["O'Brien; DELETE FROM models;--", "50%", "Bach_", "Bachx", "%_%", "Liszt"]


def test_hostile_titles_and_composers_are_stored_and_found_verbatim(store):
    notes = make_notes([60], [64], [0.0], [1.0])
    saved = {}
    for k, title in enumerate(HOSTILE_TITLES):
        composer = HOSTILE_COMPOSERS[k % len(HOSTILE_COMPOSERS)]
        gid = store.save_generation(
            model=f"model '{k % 2}'; --", settings={"task": "t'; DROP TABLE models;--"}, notes=notes,
            prompt={"title": title, "composer": composer, "dataset": "x%"},
        )  # fmt: skip
        saved[gid] = (title, composer)

    assert store.count() == len(HOSTILE_TITLES)
    for gid, (title, composer) in saved.items():
        record = store.get_generation(gid)
        assert (record.prompt.title, record.prompt.composer) == (title, composer)
        assert [row.id for row in store.browse(title=title)] == [gid]
        by_composer = {row.id for row in store.browse(composer=composer)}
        assert by_composer == {i for i, (_, c) in saved.items() if c == composer}
    # Wildcards are literal: "%" and "_" match only themselves, as filters and in substring search.
    assert {row.title for row in store.browse(composer="%")} == set()
    assert {row.title for row in store.browse(composer="Bach_")} == {"%"}
    assert {row.title for row in store.browse(search="%")} == {
        "100% Chopin",
        "%",
        "a_b",
        "Études — 鋼琴 \u00a0 ' OR '1'='1",
    }
    assert {row.title for row in store.browse(search="a_b")} == {"a_b"}
    assert {row.title for row in store.browse(search="drop table")} == {"Robert'); DROP TABLE generations;--"}
    assert {row.title for row in store.browse(search="' or '1'='1")} == {"Études — 鋼琴 \u00a0 ' OR '1'='1"}
    assert (
        store.browse(task="t'; DROP TABLE models;--", model_name="model '0'; --", limit=100)[0].title
        in HOSTILE_TITLES
    )
    assert store.count(dataset="x%") == len(HOSTILE_TITLES) and store.count(dataset="x_") == 0
    # Nothing was dropped or deleted.
    assert set(inspect(store.engine).get_table_names()) >= STORE_TABLES
    assert sorted(model.name for model in store.list_models()) == ["model '0'; --", "model '1'; --"]


# ------------------------------------------------------------------------------------------- engine
def test_default_url_is_a_sqlite_file_under_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PIANO_GPT_DATABASE_URL", raising=False)
    engine = get_engine()
    try:
        assert engine.url.get_backend_name() == "sqlite"
        assert Path(engine.url.database) == (tmp_path / "tmp" / "piano_gpt.sqlite").resolve()
        assert (tmp_path / "tmp").is_dir()
    finally:
        engine.dispose()

    monkeypatch.setenv("PIANO_GPT_DATABASE_URL", f"sqlite:///{tmp_path / 'deep' / 'er' / 'env.sqlite'}")
    with GenerationStore() as store:
        store.save_generation(model="m", settings={}, notes=empty_notes())
    assert (tmp_path / "deep" / "er" / "env.sqlite").is_file()

    url = resolve_url("postgresql://piano:secret@127.0.0.1:5432/db")
    assert url.drivername == "postgresql+psycopg" and url.password == "secret"
    monkeypatch.setenv("PIANO_GPT_DATABASE_URL", "postgres://u@h/d")
    assert resolve_url().drivername == "postgresql+psycopg"

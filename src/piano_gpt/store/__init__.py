"""Generation store: models, generation settings, prompts and generated notes in SQL (SQLAlchemy 2).

    from piano_gpt.store import GenerationStore
    store = GenerationStore()  # SQLite tmp/piano_gpt.sqlite, or $PIANO_GPT_DATABASE_URL
    gid = store.save_generation(model="gpt2-10M", settings={"mode": "sample", "task": "next_token",
                                "temperature": 1.0}, prompt={"title": ..., "composer": ..., "notes": df},
                                notes=generated_df, metrics={"f1": 0.7})
    store.browse(model_name="gpt2-10M", composer="Chopin", limit=20)
    store.get_generation(gid).notes

The schema is managed by the Alembic migrations shipped in ``store/migrations``;
``upgrade_database(url)`` (run by ``GenerationStore`` on opening) brings a database to head.
Needs the ``store`` extra (sqlalchemy, alembic, psycopg).
"""

from piano_gpt.store.api import (
    GenerationRow,
    GenerationStore,
    ModelInfo,
    PromptInfo,
    StoredGeneration,
    StoreOpenError,
    open_store,
)
from piano_gpt.store.blob import NotesBlobError, blob_to_notes, notes_to_blob
from piano_gpt.store.engine import (
    DATABASE_URL_ENV,
    current_revision,
    get_engine,
    head_revision,
    resolve_url,
    upgrade_database,
)
from piano_gpt.store.models import Base, GenerationSettingsTable, GenerationTable, Model, Prompt

__all__ = [
    "DATABASE_URL_ENV",
    "Base",
    "GenerationTable",
    "GenerationRow",
    "GenerationSettingsTable",
    "GenerationStore",
    "Model",
    "ModelInfo",
    "NotesBlobError",
    "Prompt",
    "PromptInfo",
    "StoredGeneration",
    "StoreOpenError",
    "open_store",
    "blob_to_notes",
    "current_revision",
    "get_engine",
    "head_revision",
    "notes_to_blob",
    "resolve_url",
    "upgrade_database",
]

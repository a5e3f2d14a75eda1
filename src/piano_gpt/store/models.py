"""ORM tables of the generation store.

``models`` (trained checkpoints), ``generation_settings`` (how a generation was sampled), ``prompts``
(the source piece and the notes the model was given), and ``generations`` (the notes a model produced,
with metrics). Settings and prompts are shared between generations: a row is found again by its
``fingerprint`` (sha256 of its canonical content), models by their unique ``name``.

The classes are named after their tables (``GenerationTable``, ``GenerationSettingsTable``), apart from
the engine's ``Generation`` and the dashboard's ``GenerationSettings``; the table names are unchanged.

The schema itself is created by the Alembic migrations in ``migrations/``, which must be kept in step
with these classes (``tests/test_store.py`` compares them).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Float, ForeignKey, Integer, LargeBinary, MetaData, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Deterministic constraint names on every backend (Alembic needs names to alter constraints later).
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# JSON everywhere, JSONB on PostgreSQL.
JSONType = JSON().with_variant(JSONB(), "postgresql")

NAME_LENGTH = 200
TEXT_LENGTH = 1000
FINGERPRINT_LENGTH = 64


def utc_now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Model(Base):
    __tablename__ = "models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    checkpoint_path: Mapped[str | None] = mapped_column(String(TEXT_LENGTH))
    config: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    parameter_count: Mapped[int | None] = mapped_column(BigInteger)
    training_tokens: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)

    generations: Mapped[list[GenerationTable]] = relationship(back_populates="model")


class GenerationSettingsTable(Base):
    __tablename__ = "generation_settings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(FINGERPRINT_LENGTH), unique=True)
    mode: Mapped[str | None] = mapped_column(String(NAME_LENGTH), index=True)
    task: Mapped[str | None] = mapped_column(String(NAME_LENGTH), index=True)
    temperature: Mapped[float | None] = mapped_column(Float)
    top_k: Mapped[int | None] = mapped_column(Integer)
    top_p: Mapped[float | None] = mapped_column(Float)
    seed: Mapped[int | None] = mapped_column(BigInteger)
    max_new_tokens: Mapped[int | None] = mapped_column(Integer)
    params: Mapped[dict[str, Any]] = mapped_column(JSONType)  # every setting, the columns above included
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)

    generations: Mapped[list[GenerationTable]] = relationship(back_populates="settings")


class Prompt(Base):
    __tablename__ = "prompts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(FINGERPRINT_LENGTH), unique=True)
    title: Mapped[str | None] = mapped_column(String(TEXT_LENGTH), index=True)
    composer: Mapped[str | None] = mapped_column(String(TEXT_LENGTH), index=True)
    dataset: Mapped[str | None] = mapped_column(String(NAME_LENGTH), index=True)
    source: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    notes: Mapped[bytes | None] = mapped_column(LargeBinary)  # store.blob format
    note_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)

    generations: Mapped[list[GenerationTable]] = relationship(back_populates="prompt")


class GenerationTable(Base):
    __tablename__ = "generations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), index=True)
    settings_id: Mapped[int] = mapped_column(ForeignKey("generation_settings.id"), index=True)
    prompt_id: Mapped[int | None] = mapped_column(ForeignKey("prompts.id"), index=True)
    notes: Mapped[bytes] = mapped_column(LargeBinary)  # store.blob format
    note_count: Mapped[int] = mapped_column(Integer)
    duration: Mapped[float] = mapped_column(Float)  # seconds: latest note end (0 when empty)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now, index=True)

    model: Mapped[Model] = relationship(back_populates="generations")
    settings: Mapped[GenerationSettingsTable] = relationship(back_populates="generations")
    prompt: Mapped[Prompt | None] = relationship(back_populates="generations")

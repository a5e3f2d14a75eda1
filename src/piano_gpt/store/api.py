"""``GenerationStore``: save generated performances with their model, settings and prompt; browse them.

Every query goes through the ORM / SQLAlchemy expressions with bound parameters; text filters
(``search``) escape ``%`` and ``_``, so user strings are matched verbatim.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import PurePath
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import URL, Select, func, insert, or_, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload, sessionmaker

from piano_gpt.midi import make_notes
from piano_gpt.store.blob import blob_to_notes, notes_to_blob
from piano_gpt.store.engine import get_engine, resolve_url, upgrade_database
from piano_gpt.store.models import GenerationSettingsTable, GenerationTable, Model, Prompt

MODEL_FIELDS = ("name", "checkpoint_path", "config", "parameter_count", "training_tokens")
PROMPT_FIELDS = ("title", "composer", "dataset", "source", "notes")
GENERATION_FIELDS = ("model", "settings", "prompt", "notes", "metrics")
# Settings copied into indexed columns (the whole mapping is kept in ``params``).
SETTINGS_COLUMNS = {
    "mode": str,
    "task": str,
    "temperature": float,
    "top_k": int,
    "top_p": float,
    "seed": int,
    "max_new_tokens": int,
}
SETTINGS_ALIASES = {"max_tokens": "max_new_tokens"}
MAX_BROWSE_LIMIT = 10_000


# ----------------------------------------------------------------------------------------------- rows
@dataclass(frozen=True)
class ModelInfo:
    id: int
    name: str
    checkpoint_path: str | None
    config: dict[str, Any] | None
    parameter_count: int | None
    training_tokens: int | None
    created_at: datetime
    generation_count: int | None = None  # filled by list_models


@dataclass(frozen=True)
class PromptInfo:
    id: int
    title: str | None
    composer: str | None
    dataset: str | None
    source: dict[str, Any] | None
    notes: pd.DataFrame | None


@dataclass(frozen=True)
class GenerationRow:
    """One line of :meth:`GenerationStore.browse` (no notes)."""

    id: int
    created_at: datetime
    model_name: str
    mode: str | None
    task: str | None
    title: str | None
    composer: str | None
    dataset: str | None
    note_count: int
    duration: float
    metrics: dict[str, Any] | None


@dataclass(frozen=True)
class StoredGeneration:
    """A generation with everything that belongs to it (:meth:`GenerationStore.get_generation`)."""

    id: int
    created_at: datetime
    model: ModelInfo
    settings: dict[str, Any]
    prompt: PromptInfo | None
    notes: pd.DataFrame
    metrics: dict[str, Any] | None


# ------------------------------------------------------------------------------------ normalisation
def unicode_text(value: str, what: str = "text") -> str:
    """``value`` if it can be stored (UTF-8): a lone surrogate (``"bad\\udc80"``, e.g. from a file name
    decoded with surrogateescape) is a ``ValueError`` in one line naming the field and the position."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(
            f"{what} {value[:60]!r} is not valid Unicode: a lone surrogate {value[error.start]!r} at "
            f"position {error.start} cannot be stored; fix the text (or decode its source as UTF-8)"
        ) from None
    return value


def to_json_value(value: Any) -> Any:
    """A JSON-ready copy: numpy scalars/arrays to Python, tuples to lists, paths to str, NaN/inf to None."""
    if isinstance(value, Mapping):
        return {unicode_text(str(key), "a key"): to_json_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [to_json_value(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return unicode_text(value)
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, PurePath):
        return unicode_text(str(value), "a path")
    raise TypeError(f"cannot store {type(value).__name__} as JSON: {value!r}")


def canonical_json(value: Any) -> str:
    return json.dumps(to_json_value(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _fingerprint(*parts: str | bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def _as_dict(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{what} must be a mapping or a dataclass, not {type(value).__name__}")


def _check_keys(spec: Mapping, allowed: Iterable[str], what: str) -> None:
    unknown = sorted(set(spec) - set(allowed))
    if unknown:
        raise ValueError(f"unknown {what} fields {unknown}; allowed: {', '.join(allowed)}")


def _model_spec(model: Any) -> dict[str, Any]:
    if isinstance(model, str):
        spec: dict[str, Any] = {"name": model}
    elif isinstance(model, ModelInfo):
        spec = {name: getattr(model, name) for name in MODEL_FIELDS}
    else:
        spec = _as_dict(model, "model")
    _check_keys(spec, MODEL_FIELDS, "model")
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError("a model needs a non-empty name")
    unicode_text(name, "model name")
    if spec.get("checkpoint_path") is not None:
        unicode_text(str(spec["checkpoint_path"]), "model checkpoint_path")
    return {
        "name": name,
        "checkpoint_path": None if spec.get("checkpoint_path") is None else str(spec["checkpoint_path"]),
        "config": None if spec.get("config") is None else to_json_value(_as_dict(spec["config"], "config")),
        "parameter_count": None if spec.get("parameter_count") is None else int(spec["parameter_count"]),
        "training_tokens": None if spec.get("training_tokens") is None else int(spec["training_tokens"]),
    }


def _settings_spec(settings: Any) -> dict[str, Any]:
    params = to_json_value(_as_dict(settings, "settings"))
    for alias, name in SETTINGS_ALIASES.items():
        if alias in params and name not in params:
            params[name] = params.pop(alias)
    row: dict[str, Any] = {"params": params, "fingerprint": _fingerprint(canonical_json(params))}
    for name, kind in SETTINGS_COLUMNS.items():
        value = params.get(name)
        row[name] = None if value is None else kind(value)
    return row


def _notes_frame(notes: Any, what: str) -> pd.DataFrame:
    if isinstance(notes, pd.DataFrame):
        return notes
    if isinstance(notes, Mapping):  # the "notes" of an epr-labs record: lists per column
        return make_notes(notes["pitch"], notes["velocity"], notes["start"], notes["end"])
    raise TypeError(f"{what} must be a note table (DataFrame), not {type(notes).__name__}")


def _prompt_spec(prompt: Any) -> dict[str, Any] | None:
    if prompt is None:
        return None
    spec = _as_dict(prompt, "prompt")
    _check_keys(spec, PROMPT_FIELDS, "prompt")
    source = spec.get("source")
    if isinstance(source, str):
        source = json.loads(source) if source.strip() else None
    source = None if source is None else to_json_value(_as_dict(source, "prompt source"))
    known = source or {}

    def text(name: str) -> str | None:
        value = spec.get(name, known.get(name))
        return None if value is None else unicode_text(str(value), f"prompt {name}")

    row: dict[str, Any] = {
        "title": text("title"),
        "composer": text("composer"),
        "dataset": text("dataset"),
        "source": source,
        "notes": None,
        "note_count": 0,
    }
    if spec.get("notes") is not None:
        notes = _notes_frame(spec["notes"], "prompt notes")
        row["notes"], row["note_count"] = notes_to_blob(notes), len(notes)
    identity = {name: row[name] for name in ("title", "composer", "dataset", "source")}
    row["fingerprint"] = _fingerprint(canonical_json(identity), row["notes"] or b"")
    return row


def _utc(moment: datetime) -> datetime:
    """SQLite gives naive datetimes (stored as UTC); PostgreSQL aware ones in the session's zone."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _model_info(model: Model, generation_count: int | None = None) -> ModelInfo:
    return ModelInfo(
        id=model.id,
        name=model.name,
        checkpoint_path=model.checkpoint_path,
        config=model.config,
        parameter_count=model.parameter_count,
        training_tokens=model.training_tokens,
        created_at=_utc(model.created_at),
        generation_count=generation_count,
    )


# ------------------------------------------------------------------------------------------- store
class GenerationStore:
    """Generations in a database (SQLite file by default, PostgreSQL via URL; see ``store.engine``).

    ``upgrade=True`` (default) runs the migrations to head on opening, which is a no-op when the
    schema is current.
    """

    def __init__(self, url: str | URL | None = None, *, upgrade: bool = True, **engine_kwargs):
        self.url = resolve_url(url)
        self.engine = get_engine(self.url, **engine_kwargs)
        if upgrade:
            upgrade_database(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def __repr__(self) -> str:
        return f"GenerationStore({self.url.render_as_string(hide_password=True)!r})"

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> GenerationStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------------------------- writing
    def register_model(
        self,
        name: str,
        checkpoint_path: str | PurePath | None = None,
        config: Mapping[str, Any] | None = None,
        parameter_count: int | None = None,
        training_tokens: int | None = None,
    ) -> int:
        """Create the model, or update the fields given (not None) of an existing one; returns its id."""
        spec = _model_spec(
            {
                "name": name,
                "checkpoint_path": checkpoint_path,
                "config": config,
                "parameter_count": parameter_count,
                "training_tokens": training_tokens,
            }
        )
        with self._sessions.begin() as session:
            model = session.get(Model, self._model_id(session, spec, {}))
            for field, value in spec.items():
                if value is not None:
                    setattr(model, field, value)
            return model.id

    def save_generation(
        self,
        *,
        model: str | Mapping[str, Any] | ModelInfo,
        settings: Mapping[str, Any] | Any,
        notes: pd.DataFrame,
        prompt: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
    ) -> int:
        """Store one generation; returns its id.

        ``model``: a name, or a mapping with ``name`` and optionally ``checkpoint_path, config,
        parameter_count, training_tokens`` (found by name; missing fields of a known model are filled).
        ``settings``: mapping or dataclass of generation settings (``mode, task, temperature, top_k, top_p,
        seed, max_new_tokens`` are also indexed columns; everything is kept as JSON).
        ``prompt``: mapping with ``title, composer, dataset, source`` (dict or JSON string; title, composer
        and dataset default to its keys) and ``notes`` (the prompt's note table).
        ``metrics``: JSON-like mapping (numpy values are converted; NaN and inf become null).
        """
        return self.save_many(
            [{"model": model, "settings": settings, "notes": notes, "prompt": prompt, "metrics": metrics}]
        )[0]

    def save_many(self, generations: Iterable[Mapping[str, Any]], batch_size: int = 500) -> list[int]:
        """Store many generations (mappings with the arguments of :meth:`save_generation`) in one
        transaction, inserting in batches; returns their ids in order."""
        if batch_size < 1:
            raise ValueError("batch_size must be positive")
        ids: list[int] = []
        cache: dict[tuple[str, str], int] = {}
        with self._sessions.begin() as session:
            batch: list[dict[str, Any]] = []
            for item in generations:
                batch.append(self._generation_row(session, item, cache))
                if len(batch) >= batch_size:
                    ids.extend(self._insert_generations(session, batch))
                    batch = []
            if batch:
                ids.extend(self._insert_generations(session, batch))
        return ids

    def _generation_row(self, session: Session, item: Mapping[str, Any], cache: dict) -> dict[str, Any]:
        _check_keys(item, GENERATION_FIELDS, "generation")
        for required in ("model", "notes"):
            if item.get(required) is None:
                raise ValueError(f"a generation needs {required!r}")
        notes = _notes_frame(item["notes"], "notes")
        blob = notes_to_blob(notes)
        prompt = _prompt_spec(item.get("prompt"))
        metrics = item.get("metrics")
        return {
            "model_id": self._model_id(session, _model_spec(item["model"]), cache),
            "settings_id": self._get_or_create(
                session, GenerationSettingsTable, _settings_spec(item.get("settings")), cache
            ),
            "prompt_id": None if prompt is None else self._get_or_create(session, Prompt, prompt, cache),
            "notes": blob,
            "note_count": len(notes),
            "duration": float(notes["end"].max()) if len(notes) else 0.0,
            "metrics": None if metrics is None else to_json_value(_as_dict(metrics, "metrics")),
        }

    @staticmethod
    def _insert_generations(session: Session, rows: list[dict[str, Any]]) -> list[int]:
        statement = insert(GenerationTable).returning(GenerationTable.id, sort_by_parameter_order=True)
        return list(session.scalars(statement, rows).all())

    @staticmethod
    def _insert_ignoring_duplicate(session: Session, cls: type, values: dict[str, Any], key: str) -> None:
        """INSERT unless a row with the same unique ``key`` exists (also when another writer races us)."""
        dialect = session.get_bind().dialect.name
        if dialect in ("postgresql", "sqlite"):
            make = postgresql_insert if dialect == "postgresql" else sqlite_insert
            session.execute(make(cls).values(**values).on_conflict_do_nothing(index_elements=[key]))
            return
        try:
            with session.begin_nested():
                session.execute(insert(cls).values(**values))
        except IntegrityError:
            pass

    def _get_or_create(self, session: Session, cls: type, values: dict[str, Any], cache: dict) -> int:
        """Id of the settings/prompt row with ``values["fingerprint"]``, inserted if new."""
        cache_key = (cls.__tablename__, values["fingerprint"])
        if cache_key not in cache:
            by_fingerprint = select(cls.id).where(cls.fingerprint == values["fingerprint"])
            found = session.scalar(by_fingerprint)
            if found is None:
                self._insert_ignoring_duplicate(session, cls, values, "fingerprint")
                found = session.scalar(by_fingerprint)
            cache[cache_key] = found
        return cache[cache_key]

    def _model_id(self, session: Session, spec: dict[str, Any], cache: dict) -> int:
        """Id of the model named ``spec["name"]``, inserted if new; fills its missing fields from spec."""
        cache_key = ("models", spec["name"])
        if cache_key in cache:
            return cache[cache_key]
        model = session.scalar(select(Model).where(Model.name == spec["name"]))
        if model is None:
            self._insert_ignoring_duplicate(session, Model, spec, "name")
            model = session.scalar(select(Model).where(Model.name == spec["name"]))
        for field, value in spec.items():
            if value is not None and getattr(model, field) is None:
                setattr(model, field, value)
        session.flush()
        cache[cache_key] = model.id
        return model.id

    # ------------------------------------------------------------------------------------- reading
    def get_generation(self, generation_id: int) -> StoredGeneration:
        """Everything about one generation; KeyError when there is none with that id."""
        with self._sessions() as session:
            options = [
                selectinload(GenerationTable.model),
                selectinload(GenerationTable.settings),
                selectinload(GenerationTable.prompt),
            ]
            row = session.get(GenerationTable, int(generation_id), options=options)
            if row is None:
                raise KeyError(f"no generation with id {generation_id}")
            prompt = row.prompt
            return StoredGeneration(
                id=row.id,
                created_at=_utc(row.created_at),
                model=_model_info(row.model),
                settings=dict(row.settings.params),
                prompt=None
                if prompt is None
                else PromptInfo(
                    id=prompt.id,
                    title=prompt.title,
                    composer=prompt.composer,
                    dataset=prompt.dataset,
                    source=prompt.source,
                    notes=None if prompt.notes is None else blob_to_notes(prompt.notes),
                ),
                notes=blob_to_notes(row.notes),
                metrics=row.metrics,
            )

    @staticmethod
    def _filtered(
        statement: Select,
        model_name: str | None,
        task: str | None,
        composer: str | None,
        mode: str | None,
        title: str | None,
        dataset: str | None,
        search: str | None,
    ) -> Select:
        statement = (
            statement.select_from(GenerationTable)
            .join(GenerationTable.model)
            .join(GenerationTable.settings)
            .outerjoin(GenerationTable.prompt)
        )
        exact = {
            Model.name: model_name,
            GenerationSettingsTable.task: task,
            GenerationSettingsTable.mode: mode,
            Prompt.composer: composer,
            Prompt.title: title,
            Prompt.dataset: dataset,
        }
        for column, value in exact.items():
            if value is not None:
                statement = statement.where(column == unicode_text(str(value), column.key))
        if search:
            unicode_text(search, "search")
            statement = statement.where(
                or_(
                    Prompt.title.icontains(search, autoescape=True),
                    Prompt.composer.icontains(search, autoescape=True),
                )
            )
        return statement

    def browse(
        self,
        model_name: str | None = None,
        task: str | None = None,
        composer: str | None = None,
        mode: str | None = None,
        limit: int = 50,
        offset: int = 0,
        *,
        title: str | None = None,
        dataset: str | None = None,
        search: str | None = None,
    ) -> list[GenerationRow]:
        """Generations, newest first, without their notes.

        ``model_name, task, composer, mode, title, dataset`` match exactly; ``search`` is a
        case-insensitive substring of the prompt's title or composer (``%`` and ``_`` are literal).
        """
        limit, offset = int(limit), int(offset)
        if not 0 <= limit <= MAX_BROWSE_LIMIT or offset < 0:
            raise ValueError(f"need 0 <= limit <= {MAX_BROWSE_LIMIT} and offset >= 0")
        columns = select(
            GenerationTable.id,
            GenerationTable.created_at,
            Model.name,
            GenerationSettingsTable.mode,
            GenerationSettingsTable.task,
            Prompt.title,
            Prompt.composer,
            Prompt.dataset,
            GenerationTable.note_count,
            GenerationTable.duration,
            GenerationTable.metrics,
        )
        statement = self._filtered(columns, model_name, task, composer, mode, title, dataset, search)
        statement = statement.order_by(GenerationTable.id.desc()).limit(limit).offset(offset)
        with self._sessions() as session:
            return [
                GenerationRow(
                    id=row[0],
                    created_at=_utc(row[1]),
                    model_name=row[2],
                    mode=row[3],
                    task=row[4],
                    title=row[5],
                    composer=row[6],
                    dataset=row[7],
                    note_count=row[8],
                    duration=row[9],
                    metrics=row[10],
                )
                for row in session.execute(statement)
            ]

    def count(
        self,
        model_name: str | None = None,
        task: str | None = None,
        composer: str | None = None,
        mode: str | None = None,
        *,
        title: str | None = None,
        dataset: str | None = None,
        search: str | None = None,
    ) -> int:
        """How many generations :meth:`browse` would page through with these filters."""
        statement = self._filtered(
            select(func.count(GenerationTable.id)), model_name, task, composer, mode, title, dataset, search
        )
        with self._sessions() as session:
            return int(session.scalar(statement) or 0)

    def list_models(self) -> list[ModelInfo]:
        """All models by name, with how many generations each has."""
        counts = (
            select(func.count(GenerationTable.id))
            .where(GenerationTable.model_id == Model.id)
            .scalar_subquery()
        )
        with self._sessions() as session:
            rows = session.execute(select(Model, counts).order_by(Model.name)).all()
            return [_model_info(model, int(count)) for model, count in rows]


class StoreOpenError(ValueError):
    """The store at a URL cannot be opened (not a database, no such driver, no server); one line."""


def open_store(database_url: str | URL | None = None) -> GenerationStore:
    """:class:`GenerationStore` at ``database_url`` (default: ``$PIANO_GPT_DATABASE_URL``, else SQLite
    tmp/piano_gpt.sqlite), or :class:`StoreOpenError` saying which store and why, in one line."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return GenerationStore(database_url or None)
    except (SQLAlchemyError, ValueError) as error:
        shown = str(database_url or "")
        try:
            shown = resolve_url(database_url or None).render_as_string(hide_password=True)
        except Exception:  # an unparsable URL: show it as given
            pass
        first_line = (str(error).splitlines() or [""])[0]
        raise StoreOpenError(f"cannot open the generation store {shown}: {first_line}") from error

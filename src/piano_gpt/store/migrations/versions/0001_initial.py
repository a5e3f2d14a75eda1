"""Initial schema: models, generation_settings, prompts, generations.

Revision ID: 0001
Revises:
Create Date: 2025-11-24

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the types at this revision (never import them from the live models).
JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
NAME = sa.String(200)
TEXT = sa.String(1000)
FINGERPRINT = sa.String(64)


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", NAME, nullable=False),
        sa.Column("checkpoint_path", TEXT, nullable=True),
        sa.Column("config", JSONType, nullable=True),
        sa.Column("parameter_count", sa.BigInteger(), nullable=True),
        sa.Column("training_tokens", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_models"),
        sa.UniqueConstraint("name", name="uq_models_name"),
    )
    op.create_table(
        "generation_settings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("fingerprint", FINGERPRINT, nullable=False),
        sa.Column("mode", NAME, nullable=True),
        sa.Column("task", NAME, nullable=True),
        sa.Column("temperature", sa.Float(), nullable=True),
        sa.Column("top_k", sa.Integer(), nullable=True),
        sa.Column("top_p", sa.Float(), nullable=True),
        sa.Column("seed", sa.BigInteger(), nullable=True),
        sa.Column("max_new_tokens", sa.Integer(), nullable=True),
        sa.Column("params", JSONType, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_generation_settings"),
        sa.UniqueConstraint("fingerprint", name="uq_generation_settings_fingerprint"),
    )
    op.create_index("ix_generation_settings_mode", "generation_settings", ["mode"])
    op.create_index("ix_generation_settings_task", "generation_settings", ["task"])
    op.create_table(
        "prompts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("fingerprint", FINGERPRINT, nullable=False),
        sa.Column("title", TEXT, nullable=True),
        sa.Column("composer", TEXT, nullable=True),
        sa.Column("dataset", NAME, nullable=True),
        sa.Column("source", JSONType, nullable=True),
        sa.Column("notes", sa.LargeBinary(), nullable=True),
        sa.Column("note_count", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_prompts"),
        sa.UniqueConstraint("fingerprint", name="uq_prompts_fingerprint"),
    )
    op.create_index("ix_prompts_title", "prompts", ["title"])
    op.create_index("ix_prompts_composer", "prompts", ["composer"])
    op.create_index("ix_prompts_dataset", "prompts", ["dataset"])
    op.create_table(
        "generations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("settings_id", sa.Integer(), nullable=False),
        sa.Column("prompt_id", sa.Integer(), nullable=True),
        sa.Column("notes", sa.LargeBinary(), nullable=False),
        sa.Column("note_count", sa.Integer(), nullable=False),
        sa.Column("duration", sa.Float(), nullable=False),
        sa.Column("metrics", JSONType, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_generations"),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name="fk_generations_model_id_models"),
        sa.ForeignKeyConstraint(
            ["settings_id"], ["generation_settings.id"], name="fk_generations_settings_id_generation_settings"
        ),
        sa.ForeignKeyConstraint(["prompt_id"], ["prompts.id"], name="fk_generations_prompt_id_prompts"),
    )
    op.create_index("ix_generations_model_id", "generations", ["model_id"])
    op.create_index("ix_generations_settings_id", "generations", ["settings_id"])
    op.create_index("ix_generations_prompt_id", "generations", ["prompt_id"])
    op.create_index("ix_generations_created_at", "generations", ["created_at"])


def downgrade() -> None:
    op.drop_table("generations")
    op.drop_table("prompts")
    op.drop_table("generation_settings")
    op.drop_table("models")

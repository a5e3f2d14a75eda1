"""Saved generations: browse the generation store, look at and listen to one generation again.

    PYTHONPATH=. streamlit run dashboards/saved_generations.py    (or: piano-gpt dashboard saved_generations)

What ``piano-gpt generate ... store=true`` and the prompt-practice dashboard saved. The database is
the sidebar's URL (default ``$PIANO_GPT_DATABASE_URL``, else the SQLite file tmp/piano_gpt.sqlite).
The logic lives in ``piano_gpt.dashboard_logic`` and ``piano_gpt.store.generations``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:  # a checkout that is not pip-installed
    sys.path.insert(0, str(ROOT / "src"))

import streamlit as st  # noqa: E402

from piano_gpt import dashboard_logic as dl  # noqa: E402
from piano_gpt.audio import midi_bytes  # noqa: E402
from piano_gpt.dashboard_widgets import cached_backend, cached_wav, guarded  # noqa: E402
from piano_gpt.plots import pianoroll_chart  # noqa: E402
from piano_gpt.store.generations import generation_piece  # noqa: E402

PAGE_SIZE = 200
ALL = "all"


def browse(store):
    left, right = st.columns([1, 2])
    models = [ALL, *(m.name for m in store.list_models() if m.generation_count)]
    model = left.selectbox("Model", models, key="model")
    search = right.text_input("Prompt title or composer contains", key="search")
    filters = {"model_name": None if model == ALL else model, "search": search or None}
    rows = store.browse(**filters, limit=PAGE_SIZE)
    if not rows:
        st.info(
            "No saved generation here yet: generate in the prompt-practice dashboard, or run "
            "`piano-gpt generate ... store=true`."
        )
        return None
    table = dl.saved_table(rows)
    st.caption(f"newest {len(rows)} of {store.count(**filters)}")
    st.dataframe(table.drop(columns="label"), hide_index=True, width="stretch")
    label = st.selectbox("Generation", table["label"].tolist(), key="generation")
    return int(table.loc[table["label"] == label, "id"].iloc[0])


def replay(store, generation_id: int):
    saved = store.get_generation(generation_id)
    st.header(f"Generation {saved.id}")
    st.caption(
        f"{saved.model.name}, saved {saved.created_at:%Y-%m-%d %H:%M} UTC, {len(saved.notes)} notes generated"
    )
    st.altair_chart(pianoroll_chart(dl.saved_parts(saved), height=300), width="stretch")
    piece = generation_piece(saved)
    st.audio(cached_wav(piece), format="audio/wav")
    left, right = st.columns(2)
    left.download_button(
        "Prompt + generation MIDI",
        midi_bytes(piece),
        f"generation-{saved.id}.mid",
        "audio/midi",
        key="dl_piece",
        on_click="ignore",
    )
    right.download_button(
        "Generation MIDI",
        midi_bytes(saved.notes),
        f"generation-{saved.id}-only.mid",
        "audio/midi",
        key="dl_generation",
        on_click="ignore",
    )
    with st.expander("Settings, prompt and metrics", expanded=False):
        prompt = saved.prompt
        st.code(
            json.dumps(
                {
                    "settings": saved.settings,
                    "prompt": None if prompt is None else {"title": prompt.title, "source": prompt.source},
                    "metrics": saved.metrics,
                    "checkpoint": saved.model.checkpoint_path,
                },
                indent=1,
            ),
            language="json",
        )


def main():
    st.set_page_config(page_title="Piano-GPT saved generations", layout="wide")
    st.title("Saved generations")
    st.sidebar.caption(f"Audio: {cached_backend()}")
    url = st.sidebar.text_input("Database URL (empty: the default)", value="", key="database_url")
    store = guarded(dl.open_store, url or None)
    if store is None:
        return
    with store:
        st.sidebar.caption(f"Store: {store.url.render_as_string(hide_password=True)}")
        generation_id = guarded(browse, store)
        if generation_id is not None:
            guarded(replay, store, generation_id)


main()

"""Piano dataset review: browse a dataset, look at and listen to a record, check its tokens.

    PYTHONPATH=. streamlit run dashboards/piano_dataset_review.py

Datasets: the embedded demo corpus (default), a MAESTRO-layout folder, or a local HF dataset in the
epr-labs schema (a ``save_to_disk`` folder or parquet files). For a record: pianoroll, statistics
and velocity histogram, audio, its ExponentialTimeTokenizer tokens, the detokenization check
(encode -> decode round trip) and the source/target split of any PIANO task.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:  # a checkout that is not pip-installed
    sys.path.insert(0, str(ROOT / "src"))

import altair as alt  # noqa: E402
import streamlit as st  # noqa: E402

from piano_gpt import dashboard_logic as dl  # noqa: E402
from piano_gpt.audio import midi_bytes  # noqa: E402
from piano_gpt.dashboard_widgets import cached_backend, cached_items, cached_wav, clamp_state, guarded  # noqa: E402
from piano_gpt.data.task_datasets import rebase  # noqa: E402
from piano_gpt.plots import pianoroll_chart, plot_comparison, plot_pianoroll  # noqa: E402

SPLITS = ("train", "validation", "test")
MAX_TOKENS_SHOWN = 2000


@st.cache_resource(show_spinner=False)
def tokenizer():
    from piano_gpt.tokenizers import ExponentialTimeTokenizer

    return ExponentialTimeTokenizer()


def choose_record():
    st.sidebar.header("Dataset")
    kind_default, path_default = dl.default_dataset()
    kind = st.sidebar.selectbox(
        "Type", dl.DATASET_KINDS, index=dl.DATASET_KINDS.index(kind_default), key="dataset_kind"
    )
    path = ""
    if kind != "demo":
        default = path_default if kind == "maestro" else ""
        path = st.sidebar.text_input(
            "Folder" if kind == "maestro" else "Local HF dataset (folder or parquet)",
            value=default or (dl.default_maestro_path() if kind == "maestro" else ""),
            key=f"dataset_path_{kind}",
        )
    split = st.sidebar.selectbox("Split", SPLITS, index=1, key="split")
    with st.spinner("Reading the dataset..."):
        items = cached_items(kind, split, path)
    table = dl.items_table(items)
    composers = ["all", *sorted(table["composer"].unique())]
    composer = st.sidebar.selectbox("Composer", composers, key="composer_filter")
    query = st.sidebar.text_input("Title contains", key="title_query")
    shown = dl.filter_items(table, composer, query)
    if len(shown) == 0:
        st.warning("No record matches this composer and title.")
        return None
    label = st.sidebar.selectbox(
        f"Record ({len(shown)} of {len(table)})", shown["label"].tolist(), key="record"
    )
    index = int(shown.loc[shown["label"] == label, "index"].iloc[0])
    with st.spinner("Reading the record..."):
        notes = dl.load_item_notes(items[index])
    return notes, dl.item_metadata(items[index]), label


def show_overview(notes, source, label):
    st.header(label.split(": ", 1)[-1])
    stats = dl.note_stats(notes)
    columns = st.columns(4)
    columns[0].metric("Notes", stats["notes"])
    columns[1].metric("Duration", f"{stats['duration_s']:.1f} s")
    columns[2].metric("Pitch range", f"{stats['pitch_min']}-{stats['pitch_max']}")
    columns[3].metric("Mean velocity", stats["velocity_mean"])
    left, right = st.columns([1, 2])
    with left:
        st.subheader("Source")
        st.json(source, expanded=True)
        st.caption(
            f"{stats['notes_per_s']} notes/s, mean note {stats['mean_note_s']} s, velocity sd {stats['velocity_std']}"
        )
    with right:
        st.subheader("Velocity histogram")
        histogram = dl.velocity_histogram(notes)
        chart = (
            alt.Chart(histogram)
            .mark_bar()
            .encode(
                x=alt.X("label:N", title="velocity", sort=None),
                y=alt.Y("count:Q", title="notes"),
                tooltip=["low", "high", "count"],
            )
            .properties(height=220)
        )
        st.altair_chart(chart, width="stretch")


def choose_fragment(notes, record: str):
    """The part of the record drawn, played and tokenized (long recitals are cut for speed)."""
    st.subheader("Pianoroll")
    left, right = st.columns(2)
    if st.session_state.get("fragment_record") != record:  # another record: from its start, default length
        for key in ("fragment_first", "fragment_count"):
            st.session_state.pop(key, None)
        st.session_state["fragment_record"] = record
    clamp_state("fragment_first", 0, max(len(notes) - 1, 0))
    clamp_state("fragment_count", 1, len(notes))
    first = left.number_input("First note", 0, max(len(notes) - 1, 0), 0, key="fragment_first")
    count = right.number_input("Notes shown", 1, len(notes), min(len(notes), 500), key="fragment_count")
    fragment = notes.iloc[int(first) : int(first) + int(count)]
    return rebase(fragment) if int(first) else fragment.reset_index(drop=True)


def show_fragment(fragment):
    st.altair_chart(
        pianoroll_chart(fragment, title=f"{len(fragment)} notes (velocity as colour)"), width="stretch"
    )
    left, right = st.columns([3, 1])
    with st.spinner("Rendering audio..."):
        left.audio(cached_wav(fragment), format="audio/wav")
    right.download_button(
        "MIDI", midi_bytes(fragment), "record.mid", "audio/midi", key="dl_record", on_click="ignore"
    )
    with st.expander("Static pianoroll (matplotlib)", expanded=False):
        ax = plot_pianoroll(fragment, title=f"{len(fragment)} notes")
        st.pyplot(ax.figure, clear_figure=True)


def show_tokens(fragment):
    st.subheader("Tokens (ExponentialTimeTokenizer)")
    tok = tokenizer()
    table, total = dl.token_table(tok, fragment, MAX_TOKENS_SHOWN)
    st.caption(
        f"{total} tokens for {len(fragment)} notes ({total / max(len(fragment), 1):.2f} per note)"
        + (f"; the first {MAX_TOKENS_SHOWN} shown" if total > MAX_TOKENS_SHOWN else "")
    )
    st.dataframe(table, hide_index=True, height=240)

    st.subheader("Detokenization check")
    check = dl.roundtrip_check(tok, fragment)
    columns = st.columns(4)
    columns[0].metric("Notes back", f"{check.n_decoded} / {check.n_notes}")
    columns[1].metric("Pitch multiset equal", "yes" if check.pitches_equal else "no")
    onset = "-" if check.max_onset_error_s is None else f"{check.max_onset_error_s * 1000:.1f} ms"
    offset = "-" if check.max_offset_error_s is None else f"{check.max_offset_error_s * 1000:.1f} ms"
    columns[2].metric("Max onset shift", onset)
    columns[3].metric("Max offset shift", offset)
    if check.ok:
        st.success(
            f"Round trip OK: every pitch comes back, onsets within half a time unit ({check.time_unit_s * 500:.0f} ms); "
            f"velocities are binned (max change {check.max_velocity_error})."
        )
    else:
        st.warning(
            "The round trip changed the notes beyond the tokenizer's time rounding (see the numbers above)."
        )


def show_task(fragment):
    st.subheader("PIANO task split")
    tasks, why_not = dl.available_tasks()
    if not tasks:
        st.info(why_not or "no PIANO tasks are registered")
        return
    left, right = st.columns([3, 1])
    name = left.selectbox("Task", tasks, key="task")
    seed = right.number_input("Seed", 0, 2**31 - 1, 0, key="task_seed")
    sample = dl.task_split(name, fragment, int(seed))
    st.caption(
        f"prefix tokens {' '.join(sample.prefix_tokens)}: {len(sample.source)} source notes (shown to the model), "
        f"{len(sample.target)} target notes (to generate)"
    )
    parts = {"source": sample.source, "target": sample.target}
    st.altair_chart(pianoroll_chart(parts, title=f"{name}: source and target"), width="stretch")
    with st.expander("Static figure (matplotlib)", expanded=False):
        st.pyplot(plot_comparison(parts, title=name), clear_figure=True)


def main():
    st.set_page_config(page_title="Piano-GPT dataset review", layout="wide")
    st.title("Piano dataset review")
    st.sidebar.caption(f"Audio: {cached_backend()}")
    chosen = guarded(choose_record)
    if not chosen:
        return
    notes, source, label = chosen
    guarded(show_overview, notes, source, label)
    fragment = guarded(choose_fragment, notes, label)
    if fragment is None or len(fragment) == 0:
        return
    guarded(show_fragment, fragment)
    guarded(show_tokens, fragment)
    guarded(show_task, fragment)


main()

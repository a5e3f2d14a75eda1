"""Prompt practice: pick a checkpoint and a prompt, generate with a few seeds, look and listen.

    PYTHONPATH=. streamlit run dashboards/prompt_practice.py

Checkpoints are the directories holding ``manifest.json`` under the checkpoints folder (sidebar; default
``$PIANO_GPT_RUNS`` or ``tmp``: what ``piano-gpt models`` lists, the demo's included), newest first. The prompt is a record of a dataset (the
embedded demo corpus by default) or an uploaded MIDI file (at most 5 MB, parsed in memory), cut by
note index or seconds, transposed and re-timed. What it generates is saved in the generation store
(``$PIANO_GPT_DATABASE_URL``, else tmp/piano_gpt.sqlite; browse it with
``dashboards/saved_generations.py``). The logic lives in ``piano_gpt.dashboard_logic``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:  # a checkout that is not pip-installed
    sys.path.insert(0, str(ROOT / "src"))

import streamlit as st  # noqa: E402
from streamlit.errors import StreamlitAPIException  # noqa: E402

from piano_gpt import dashboard_logic as dl  # noqa: E402
from piano_gpt.audio import midi_bytes  # noqa: E402
from piano_gpt.dashboard_widgets import (  # noqa: E402
    cached_backend,
    cached_items,
    cached_model,
    cached_wav,
    clamp_state,
    guarded,
)
from piano_gpt.plots import pianoroll_chart, plot_comparison  # noqa: E402

SPLITS = ("validation", "test", "train")
UPLOAD = "upload a MIDI file"
RECORD = "dataset record"
NO_COMPOSER = "(none)"


# --- sections ------------------------------------------------------------------------------------


def choose_checkpoint():
    st.sidebar.header("Checkpoint")
    root = st.sidebar.text_input("Checkpoints folder", value=dl.default_runs_root(), key="runs_root")
    checkpoints = dl.list_checkpoints(root)
    if not checkpoints:
        st.sidebar.warning(
            f"No checkpoint (a folder with manifest.json) under {root!r}. Train one, e.g. "
            "`python -m piano_gpt.train dataset=demo model=gpt2_demo`, or point the checkpoints folder elsewhere."
        )
        return None
    labels = [c.label for c in checkpoints]
    label = st.sidebar.selectbox("Checkpoint (newest first)", labels, key="checkpoint")
    info = checkpoints[labels.index(label)]
    st.sidebar.caption(info.summary)
    return info


def choose_record():
    kind_default, path_default = dl.default_dataset()
    left, middle, right = st.columns([1, 2, 1])
    kind = left.selectbox(
        "Dataset", dl.DATASET_KINDS, index=dl.DATASET_KINDS.index(kind_default), key="dataset_kind"
    )
    path = ""
    if kind != "demo":
        default = path_default if kind == "maestro" else ""
        path = middle.text_input(
            f"{kind} folder", value=default or dl.default_maestro_path(), key=f"dataset_path_{kind}"
        )
    split = right.selectbox("Split", SPLITS, key="split")
    with st.spinner("Reading the dataset..."):
        items = cached_items(kind, split, path)
    table = dl.items_table(items)
    left, right = st.columns([1, 2])
    composers = ["all", *sorted(table["composer"].unique())]
    composer = left.selectbox("Composer", composers, key="composer_filter")
    query = right.text_input("Title contains", key="title_query")
    shown = dl.filter_items(table, composer, query)
    if len(shown) == 0:
        st.warning("No record matches this composer and title.")
        return None
    label = st.selectbox(f"Record ({len(shown)} of {len(table)})", shown["label"].tolist(), key="record")
    index = int(shown.loc[shown["label"] == label, "index"].iloc[0])
    with st.spinner("Reading the record..."):
        notes = dl.load_item_notes(items[index])
    return notes, label


def choose_upload():
    try:
        uploaded = st.file_uploader(
            f"MIDI file (.mid, .midi; at most {dl.MAX_UPLOAD_BYTES // 2**20} MB)",
            # A MIME type in the list makes streamlit leave the name check to us (its own check
            # raises before the page runs, a traceback page); the browser still filters by these.
            type=[".mid", ".midi", "audio/midi", "audio/x-midi"],
            key="upload",
            max_upload_size=dl.MAX_UPLOAD_BYTES // 2**20,
        )
    except StreamlitAPIException as error:  # e.g. a file of another type got through
        raise dl.DashboardError(f"upload refused: {error}") from error
    if uploaded is None:
        st.info("Upload a MIDI file to use it as the prompt.")
        return None
    # The bytes are parsed in memory; the uploaded name is only ever displayed.
    notes = dl.read_uploaded_midi(uploaded.getvalue(), uploaded.name)
    return notes, dl.display_name(uploaded.name)


def edit(notes, label):
    st.caption(f"{label}: {len(notes)} notes, {float(notes['end'].max()):.1f} s")
    left, middle, right, last = st.columns(4)
    by = left.radio("Cut by", ["notes", "seconds"], horizontal=True, key="cut_by")
    if by == "notes":
        clamp_state("first_note", 0, max(len(notes) - 1, 0))
        clamp_state("n_notes", 1, len(notes))
        first = middle.number_input("First note", 0, max(len(notes) - 1, 0), 0, key="first_note")
        count = right.number_input("Notes", 1, len(notes), min(32, len(notes)), key="n_notes")
        window = {"first_note": int(first), "last_note": int(first) + int(count)}
    else:
        duration = float(notes["end"].max())
        clamp_state("start_s", 0.0, duration)
        clamp_state("end_s", 0.0, duration)
        start = middle.number_input("From [s]", 0.0, duration, 0.0, step=1.0, key="start_s")
        end = right.number_input("To [s]", 0.0, duration, min(10.0, duration), step=1.0, key="end_s")
        window = {"start_s": float(start), "end_s": float(end)}
    shift = last.slider("Pitch shift", -12, 12, 0, key="pitch_shift")
    speed = last.select_slider("Speed", [0.5, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0], 1.0, key="speed")
    prompt, messages = dl.edit_prompt(notes, shift=int(shift), speed=float(speed), **window)
    for message in messages:
        st.warning(message)
    return prompt


def show_prompt(prompt):
    st.altair_chart(pianoroll_chart(prompt, title=f"prompt: {len(prompt)} notes"), width="stretch")
    left, right = st.columns([3, 1])
    with st.spinner("Rendering audio..."):
        left.audio(cached_wav(prompt), format="audio/wav")
    right.download_button(
        "Prompt MIDI", midi_bytes(prompt), "prompt.mid", "audio/midi", key="dl_prompt", on_click="ignore"
    )


def settings_form(tokenizer) -> dl.GenerationSettings:
    tasks, why_not = dl.tasks_for(tokenizer) if tokenizer is not None else dl.available_tasks()
    left, middle, right = st.columns(3)
    modes = list(dl.GENERATION_MODES) if tasks else ["continuation"]
    mode = left.radio(
        "Mode", modes, horizontal=True, key="mode", help="continue the prompt, or solve a PIANO task on it"
    )
    if why_not:
        left.caption(why_not)
    task, task_seed = None, 0
    if mode == "task":
        task = left.selectbox("Task", tasks, key="task")
        task_seed = left.number_input("Task split seed", 0, 2**31 - 1, 0, key="task_seed")
    composers = [NO_COMPOSER, *(dl.composer_tokens(tokenizer) if tokenizer is not None else [])]
    composer = left.selectbox("Composer token", composers, key="composer")
    temperature = middle.slider("Temperature", 0.0, 2.0, 1.0, 0.05, key="temperature", help="0 = greedy")
    top_k = middle.number_input("Top-k (0 = off)", 0, 5000, 0, key="top_k")
    top_p = middle.slider("Top-p (1 = off)", 0.05, 1.0, 1.0, 0.05, key="top_p")
    seeds = right.text_input("Seeds", "0, 1, 2", key="seeds", help="e.g. 0, 1, 2 or 0-3: one column each")
    budget = right.number_input("Budget (new tokens)", 8, 8192, 256, step=8, key="budget")
    return dl.GenerationSettings(
        mode=mode,
        task=task,
        temperature=float(temperature),
        top_k=int(top_k) or None,
        top_p=float(top_p) if top_p < 1.0 else None,
        seeds=dl.parse_seeds(seeds),
        max_new_tokens=int(budget),
        composer=None if composer == NO_COMPOSER else composer,
        task_seed=int(task_seed),
    )


def generate(info, prompt, settings, prompt_title=None):
    with st.spinner(f"Loading {info.label}..."):
        model, tokenizer, _ = cached_model(str(info.path), info.modified)
    bar = st.progress(0.0, text="generating...")
    live = st.empty()  # the pianoroll growing while a continuation streams

    def show_live(seed, notes):
        parts = {"prompt": prompt, f"seed {seed}: {len(notes)} notes so far": notes}
        live.altair_chart(pianoroll_chart(parts, height=260), width="stretch")

    results = dl.run_generation(
        model,
        tokenizer,
        prompt,
        settings,
        progress=lambda f, text: bar.progress(min(f, 1.0), text=text),
        on_notes=show_live,
    )
    live.empty()
    bar.progress(1.0, text=f"done: {len(results)} generation(s)")
    st.session_state["results"] = {"checkpoint": info.label, "settings": settings, "results": results}
    saved = guarded(dl.save_results, info.path, settings, results, prompt_title)  # the generation store
    if saved:
        st.caption(saved)


def show_results():
    stored = st.session_state.get("results")
    if not stored:
        return
    results = stored["results"]
    settings = stored["settings"]
    st.header("3. Results")
    what = settings.mode if settings.mode == "continuation" else f"task {settings.task}"
    st.caption(
        f"{stored['checkpoint']}, {what}, temperature {settings.temperature}, top-k {settings.top_k or 'off'}, "
        f"top-p {settings.top_p or 'off'}, budget {settings.max_new_tokens} tokens"
    )
    per_row = 3
    for row in range(0, len(results), per_row):
        columns = st.columns(per_row)
        for column, result in zip(columns, results[row : row + per_row]):
            with column:
                st.subheader(f"seed {result.seed}")
                details = [f"{result.n_tokens} tokens"] if result.n_tokens else []
                details += [f"stopped by {result.stop_reason}"] if result.stop_reason else []
                st.caption(
                    f"{len(result.notes)} notes generated" + (f" ({', '.join(details)})" if details else "")
                )
                st.altair_chart(pianoroll_chart(result.parts(), height=260), width="stretch")
                st.audio(cached_wav(result.combined()), format="audio/wav")
                st.download_button(
                    "Generation MIDI",
                    midi_bytes(result.notes),
                    f"generation-seed{result.seed}.mid",
                    "audio/midi",
                    key=f"dl_gen_{result.seed}",
                    on_click="ignore",
                )
                st.download_button(
                    "Prompt + generation MIDI",
                    midi_bytes(result.combined()),
                    f"prompt-and-generation-seed{result.seed}.mid",
                    "audio/midi",
                    key=f"dl_all_{result.seed}",
                    on_click="ignore",
                )
    with st.expander("Static figure (matplotlib)", expanded=False):
        parts = results[0].parts()
        parts.pop("generation")
        for result in results:
            parts[f"seed {result.seed}"] = result.notes
        figure = plot_comparison(parts, title="prompt and generations")
        st.pyplot(figure, clear_figure=True)


def main():
    st.set_page_config(page_title="Piano-GPT prompt practice", layout="wide")
    st.title("Prompt practice")
    st.sidebar.caption(f"Audio: {cached_backend()}")
    info = guarded(choose_checkpoint)

    st.header("1. Prompt")
    source = st.radio("Prompt from", [RECORD, UPLOAD], horizontal=True, key="prompt_source")
    chosen = guarded(choose_upload if source == UPLOAD else choose_record)
    prompt = guarded(edit, *chosen) if chosen else None
    if prompt is not None:
        guarded(show_prompt, prompt)

    st.header("2. Generation settings")
    tokenizer = None
    if info is not None:
        loaded = guarded(cached_model, str(info.path), info.modified)
        tokenizer = loaded[1] if loaded else None
    settings = guarded(settings_form, tokenizer)
    ready = info is not None and tokenizer is not None and prompt is not None and settings is not None
    if st.button("Generate", type="primary", disabled=not ready, key="generate"):
        guarded(generate, info, prompt, settings, chosen[1] if chosen else None)
    if info is None:
        st.info("Choose a checkpoint in the sidebar to generate.")
    guarded(show_results)


main()

"""The two Streamlit dashboards, driven by streamlit's AppTest, and the logic behind them."""

import json
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from piano_gpt import dashboard_logic as dl  # noqa: E402
from piano_gpt.audio import midi_bytes  # noqa: E402
from piano_gpt.midi import make_notes  # noqa: E402
from piano_gpt.model import GPT, GPTConfig  # noqa: E402
from piano_gpt.tokenizers import ExponentialTimeTokenizer  # noqa: E402
from piano_gpt.train.checkpoint import save_checkpoint  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PROMPT_PRACTICE = str(REPO / "dashboards" / "prompt_practice.py")
DATASET_REVIEW = str(REPO / "dashboards" / "piano_dataset_review.py")
TIMEOUT = 180


def tiny_checkpoint(root: Path, name: str = "tiny-last", task_tokens: bool = False) -> Path:
    tokenizer = ExponentialTimeTokenizer()
    if task_tokens:
        from piano_gpt.tasks import add_task_tokens

        add_task_tokens(tokenizer)
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=64, vocab_size=tokenizer.vocab_size, n_layer=2, n_head=2, n_embd=32))
    return save_checkpoint(root / name, model, tokenizer)


@pytest.fixture(autouse=True)
def store_in_tmp(tmp_path, monkeypatch):
    """Prompt practice saves what it generates: into a database of the test's own, not tmp/ of the checkout."""
    monkeypatch.setenv("PIANO_GPT_DATABASE_URL", f"sqlite:///{tmp_path / 'generations.sqlite'}")


@pytest.fixture(scope="module")
def dataset():
    """(kind, path) the dashboards open with; skipped when neither the demo corpus nor MAESTRO is here."""
    kind, path = dl.default_dataset()
    if kind == "maestro" and not (Path(path) / "maestro-v3.0.0.csv").exists():
        pytest.skip(f"no demo corpus and no MAESTRO at {path}")
    return kind, path


@pytest.fixture
def runs(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    tiny_checkpoint(root)
    monkeypatch.setenv(dl.RUNS_ENV, str(root))
    monkeypatch.setenv("PIANO_GPT_SOUNDFONT", "none")  # the numpy synth: fast and the same everywhere
    return root


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def element_count(at: AppTest, kind: str) -> int:
    return len(at.get(kind))


# --- prompt practice -----------------------------------------------------------------------------


def test_prompt_practice_generates_with_several_seeds(runs, dataset):
    at = AppTest.from_file(PROMPT_PRACTICE, default_timeout=TIMEOUT).run()
    assert_clean(at)
    assert at.selectbox(key="checkpoint").value == "tiny-last"
    records = at.selectbox(key="record").options
    assert len(records) > 1
    at.selectbox(key="record").set_value(records[1]).run()
    at.number_input(key="n_notes").set_value(12).run()
    assert_clean(at)
    assert element_count(at, "vega_lite_chart") == 1 and element_count(at, "audio") == 1  # the prompt
    at.text_input(key="seeds").set_value("0, 1").run()
    at.number_input(key="budget").set_value(24)
    at.button(key="generate").click().run()
    assert_clean(at)
    assert [s.value for s in at.subheader] == ["seed 0", "seed 1"]
    assert element_count(at, "vega_lite_chart") == 3  # prompt + one per seed
    assert element_count(at, "audio") == 3
    assert element_count(at, "image") == 1  # the matplotlib figure (st.pyplot)
    assert {b.label for b in at.get("download_button")} >= {"Generation MIDI", "Prompt + generation MIDI"}
    results = at.session_state["results"]["results"]
    assert [r.seed for r in results] == [0, 1]
    assert all(r.n_tokens > 0 for r in results)
    assert len(results[0].prompt) == 12


def test_prompt_practice_task_mode(tmp_path, monkeypatch, dataset):
    monkeypatch.setenv(dl.RUNS_ENV, str(tmp_path))
    monkeypatch.setenv("PIANO_GPT_SOUNDFONT", "none")
    tiny_checkpoint(tmp_path, "tasks-last", task_tokens=True)
    at = AppTest.from_file(PROMPT_PRACTICE, default_timeout=TIMEOUT).run()
    assert "task" in at.radio(key="mode").options
    at.number_input(key="n_notes").set_value(6).run()
    at.radio(key="mode").set_value("task").run()
    at.selectbox(key="task").set_value("above_median_prediction").run()
    at.text_input(key="seeds").set_value("3, 4").run()
    at.number_input(key="budget").set_value(16)
    at.button(key="generate").click().run()
    assert_clean(at)
    results = at.session_state["results"]["results"]
    assert [r.seed for r in results] == [3, 4]
    for result in results:
        assert result.target is not None and len(result.prompt) + len(result.target) == 6
        assert list(result.parts()) == ["source", "target", "generation"]
    # The task split does not depend on the sampling seed: the columns compare like with like.
    pd.testing.assert_frame_equal(results[0].target, results[1].target)
    assert [s.value for s in at.subheader] == ["seed 3", "seed 4"]


def test_prompt_practice_offers_tasks_only_to_checkpoints_trained_on_them(runs, dataset):
    at = AppTest.from_file(PROMPT_PRACTICE, default_timeout=TIMEOUT).run()
    assert_clean(at)
    assert at.radio(key="mode").options == ["continuation"]
    assert any("not trained on PIANO tasks" in c.value for c in at.caption)


def test_prompt_practice_uploads(runs, dataset):
    at = AppTest.from_file(PROMPT_PRACTICE, default_timeout=TIMEOUT).run()
    at.radio(key="prompt_source").set_value("upload a MIDI file").run()
    assert_clean(at)
    upload = at.file_uploader(key="upload")
    upload.set_value(("broken.mid", b"MThd\x00\x00\x00\x06not really midi", "audio/midi")).run()
    assert not at.exception
    assert any("broken.mid" in e.value and "malformed" in e.value for e in at.error)
    assert at.button(key="generate").disabled

    at.file_uploader(key="upload").set_value(("notes.txt", b"hello", "text/plain")).run()
    assert not at.exception
    assert any("only MIDI files" in e.value for e in at.error)

    good = midi_bytes(
        make_notes([60, 64, 67, 72], [70, 80, 90, 100], [0.0, 0.5, 1.0, 1.5], [0.5, 1.0, 1.5, 2.0])
    )
    at.file_uploader(key="upload").set_value(("../../tmp/../my song.mid", good, "audio/midi")).run()
    assert_clean(at)
    assert any(c.value.startswith("my song.mid: 4 notes") for c in at.caption)
    assert not at.button(key="generate").disabled
    at.text_input(key="seeds").set_value("0").run()
    at.number_input(key="budget").set_value(8)
    at.button(key="generate").click().run()
    assert_clean(at)
    assert [s.value for s in at.subheader] == ["seed 0"]


def test_prompt_practice_without_checkpoints(tmp_path, monkeypatch, dataset):
    monkeypatch.setenv(dl.RUNS_ENV, str(tmp_path / "nothing-here"))
    at = AppTest.from_file(PROMPT_PRACTICE, default_timeout=TIMEOUT).run()
    assert not at.exception
    assert any("No checkpoint" in w.value for w in at.sidebar.warning)
    assert at.button(key="generate").disabled


def test_prompt_practice_reports_a_corrupt_checkpoint(runs, dataset):
    weights = runs / "tiny-last" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\x00" * 8)
    at = AppTest.from_file(PROMPT_PRACTICE, default_timeout=TIMEOUT).run()
    assert not at.exception
    assert any("corrupt" in e.value for e in at.error)
    assert at.button(key="generate").disabled


def test_prompt_practice_refuses_bad_seeds(runs, dataset):
    at = AppTest.from_file(PROMPT_PRACTICE, default_timeout=TIMEOUT).run()
    at.text_input(key="seeds").set_value("one, two").run()
    assert not at.exception
    assert any("seeds" in e.value for e in at.error)
    assert at.button(key="generate").disabled


# --- dataset review ------------------------------------------------------------------------------


def test_dataset_review_shows_a_record(dataset, monkeypatch):
    monkeypatch.setenv("PIANO_GPT_SOUNDFONT", "none")
    at = AppTest.from_file(DATASET_REVIEW, default_timeout=TIMEOUT).run()
    assert_clean(at)
    records = at.selectbox(key="record").options
    at.selectbox(key="record").set_value(records[-1]).run()
    assert_clean(at)
    assert at.header[0].value == records[-1].split(": ", 1)[1]
    metrics = {m.label: m.value for m in at.metric}
    assert int(metrics["Notes"]) > 0
    assert metrics["Pitch multiset equal"] == "yes"
    assert float(metrics["Max onset shift"].split()[0]) <= 5.0 + 1e-6
    assert any("Round trip OK" in s.value for s in at.success)
    assert element_count(at, "vega_lite_chart") >= 2  # velocity histogram and pianoroll
    assert element_count(at, "audio") == 1
    assert element_count(at, "image") >= 1
    tokens = at.dataframe[0].value
    assert list(tokens.columns) == ["position", "id", "token", "time_s"] and len(tokens) > 0
    assert {"Pianoroll", "Tokens (ExponentialTimeTokenizer)", "Detokenization check"} <= {
        s.value for s in at.subheader
    }


def test_dataset_review_task_split(dataset, monkeypatch):
    monkeypatch.setenv("PIANO_GPT_SOUNDFONT", "none")
    at = AppTest.from_file(DATASET_REVIEW, default_timeout=TIMEOUT).run()
    at.number_input(key="fragment_count").set_value(40).run()
    at.selectbox(key="task").set_value("above_median_prediction").run()
    assert_clean(at)
    caption = next(c.value for c in at.caption if c.value.startswith("prefix tokens"))
    assert "<ABOVE_MEDIAN_PREDICTION>" in caption
    n_source = int(caption.split(": ", 1)[1].split(" source")[0])
    n_target = int(caption.split(", ")[-1].split(" target")[0])
    assert n_source + n_target == 40 and n_target > 0


def test_dataset_review_bad_folder_is_a_message(dataset, tmp_path):
    at = AppTest.from_file(DATASET_REVIEW, default_timeout=TIMEOUT).run()
    at.selectbox(key="dataset_kind").set_value("maestro").run()
    at.text_input(key="dataset_path_maestro").set_value(str(tmp_path / "no-such-folder")).run()
    assert not at.exception
    assert any("no-such-folder" in e.value for e in at.error)


def test_dataset_review_reads_maestro(maestro_dir, monkeypatch):
    monkeypatch.setenv("PIANO_GPT_SOUNDFONT", "none")
    at = AppTest.from_file(DATASET_REVIEW, default_timeout=TIMEOUT).run()
    at.selectbox(key="dataset_kind").set_value("maestro").run()
    at.text_input(key="dataset_path_maestro").set_value(str(maestro_dir)).run()
    at.number_input(key="fragment_count").set_value(200).run()
    assert_clean(at)
    assert len(at.selectbox(key="record").options) > 0
    assert int({m.label: m.value for m in at.metric}["Notes"]) > 200


# --- logic ---------------------------------------------------------------------------------------


def test_read_uploaded_midi_refuses_what_is_not_a_small_midi_file():
    good = midi_bytes(make_notes([60, 62], [80, 90], [0.0, 0.5], [0.5, 1.0]))
    notes = dl.read_uploaded_midi(good, "C:\\Users\\me\\tune.MID")
    assert notes["pitch"].tolist() == [60, 62]
    with pytest.raises(dl.DashboardError, match="only MIDI files"):
        dl.read_uploaded_midi(good, "tune.exe")
    with pytest.raises(dl.DashboardError, match="empty"):
        dl.read_uploaded_midi(b"", "a.mid")
    with pytest.raises(dl.DashboardError, match="upload limit"):
        dl.read_uploaded_midi(good + b"\x00" * 100, "a.mid", max_bytes=len(good))
    with pytest.raises(dl.DashboardError, match="not a MIDI file"):
        dl.read_uploaded_midi(b"%PDF-1.4 ...", "a.mid")
    with pytest.raises(dl.DashboardError, match="malformed"):
        dl.read_uploaded_midi(good[: len(good) // 2] + b"\xff" * 5, "a.mid")
    empty = midi_bytes(make_notes([], [], [], []))
    with pytest.raises(dl.DashboardError, match="no notes"):
        dl.read_uploaded_midi(empty, "a.mid")


def test_display_name_is_a_bare_printable_name():
    assert dl.display_name("../../etc/passwd\x00.mid") == "passwd.mid"
    assert dl.display_name("a\\b\\c.mid") == "c.mid"
    assert dl.display_name("") == "upload"
    assert len(dl.display_name("x" * 500 + ".mid")) == 80


def test_list_checkpoints_newest_first_and_complete_only(tmp_path):
    import os

    older = tiny_checkpoint(tmp_path, "a/older")
    newer = tiny_checkpoint(tmp_path, "b/newer")
    os.utime(older / "manifest.json", (1_000_000, 1_000_000))
    (tmp_path / "c.tmp").mkdir()
    (tmp_path / "c.tmp" / "manifest.json").write_text("{}")
    (tmp_path / "unfinished").mkdir()
    (tmp_path / "unfinished" / "config.json").write_text("{}")
    found = dl.list_checkpoints(tmp_path)  # the registry's listing (its order is tested there)
    assert sorted(c.path for c in found) == [older, newer]
    assert {c.label for c in found} == {"a/older", "b/newer"}
    assert "parameters" in found[0].summary
    assert dl.list_checkpoints(tmp_path / "missing") == []
    with pytest.raises(dl.DashboardError):
        dl.load_model(tmp_path / "unfinished")


def test_edit_prompt_cuts_shifts_and_retimes():
    notes = make_notes([60, 62, 64, 105], [80] * 4, [1.0, 2.0, 3.0, 4.0], [1.5, 2.5, 3.5, 4.5])
    by_index, _ = dl.edit_prompt(notes, first_note=1, last_note=3)
    assert by_index["pitch"].tolist() == [62, 64] and by_index["start"].tolist() == [0.0, 1.0]
    by_time, _ = dl.edit_prompt(notes, start_s=2.0, end_s=4.0)
    assert by_time["pitch"].tolist() == [62, 64]
    shifted, messages = dl.edit_prompt(notes, shift=5, speed=2.0)
    assert shifted["pitch"].tolist() == [63, 65, 67, 108]  # limited to +3: the top note is B7+
    assert messages and "+3" in messages[0]
    assert shifted["start"].tolist() == [0.0, 0.5, 1.0, 1.5]
    with pytest.raises(dl.DashboardError):
        dl.edit_prompt(notes, start_s=10.0)


def test_parse_seeds():
    assert dl.parse_seeds("0, 1, 2") == (0, 1, 2)
    assert dl.parse_seeds("3-5; 3") == (3, 4, 5)
    with pytest.raises(dl.DashboardError):
        dl.parse_seeds("0-100")
    with pytest.raises(dl.DashboardError):
        dl.parse_seeds(" , ")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    model, tokenizer, _ = dl.load_model(tiny_checkpoint(tmp_path_factory.mktemp("ckpt")), device="cpu")
    return model, tokenizer


def test_run_generation_is_seeded_and_continues_the_prompt(tiny_model):
    model, tokenizer = tiny_model
    prompt = make_notes([60, 64, 67] * 4, [80] * 12, np.arange(12) * 0.25, np.arange(12) * 0.25 + 0.2)
    settings = dl.GenerationSettings(seeds=(0, 1, 0), max_new_tokens=40, top_k=50)
    calls = []
    results = dl.run_generation(model, tokenizer, prompt, settings, progress=lambda f, t: calls.append(f))
    assert [r.seed for r in results] == [0, 1, 0]
    assert all(r.n_tokens == 40 for r in results)
    pd.testing.assert_frame_equal(results[0].notes, results[2].notes)
    prompt_end = float(prompt["end"].max())
    for result in results:
        assert (result.notes["start"] >= prompt_end - 0.01).all()
        assert len(result.combined()) == len(prompt) + len(result.notes)
    assert calls[-1] == pytest.approx(1.0) and calls == sorted(calls)


def test_run_generation_shows_the_continuation_growing(tiny_model):
    model, tokenizer = tiny_model
    prompt = make_notes([60, 64, 67] * 4, [80] * 12, np.arange(12) * 0.25, np.arange(12) * 0.25 + 0.2)
    settings = dl.GenerationSettings(seeds=(3,), max_new_tokens=80, top_k=50)
    shown = []
    (result,) = dl.run_generation(
        model,
        tokenizer,
        prompt,
        settings,
        on_notes=lambda seed, notes: shown.append((seed, notes)),
        redraw_seconds=0,
    )
    assert len(shown) > 2 and all(seed == 3 for seed, _ in shown)
    sizes = [len(notes) for _, notes in shown]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    pd.testing.assert_frame_equal(shown[-1][1], result.notes)  # the last picture is the result
    final = set(map(tuple, result.notes.itertuples(index=False)))
    assert all(set(map(tuple, notes.itertuples(index=False))) <= final for _, notes in shown)


def test_generation_through_piano_gpt_generation(tiny_model):
    model, tokenizer = tiny_model
    prompt = make_notes([60, 64, 67] * 4, [80] * 12, np.arange(12) * 0.25, np.arange(12) * 0.25 + 0.2)
    settings = dl.GenerationSettings(seeds=(5, 6, 5), max_new_tokens=30, temperature=0.9, top_p=0.95)
    results = dl.run_generation(model, tokenizer, prompt, settings)
    assert all(0 < r.n_tokens <= 30 for r in results)
    assert all(r.stop_reason for r in results)
    pd.testing.assert_frame_equal(results[0].notes, results[2].notes)
    for result in results:
        assert (result.notes["start"] >= float(prompt["end"].max()) - 0.01).all()
    # What the library refuses comes back as a message, not an exception of another kind.
    with pytest.raises(dl.DashboardError, match="COMPOSER"):
        dl.run_generation(model, tokenizer, prompt, dl.GenerationSettings(composer="<COMPOSER_NOBODY>"))


def test_tasks_for_a_tokenizer():
    plain = ExponentialTimeTokenizer()
    assert dl.tasks_for(plain)[0] == []
    assert "not trained on PIANO tasks" in dl.tasks_for(plain)[1]
    from piano_gpt.tasks import add_task_tokens

    add_task_tokens(plain)
    usable, why_not = dl.tasks_for(plain)
    assert why_not is None and "above_median_prediction" in usable


def test_task_generation(tmp_path):
    model, tokenizer, _ = dl.load_model(tiny_checkpoint(tmp_path, task_tokens=True), device="cpu")
    prompt = make_notes([48, 60, 64, 67, 52, 72], [80] * 6, np.arange(6) * 0.5, np.arange(6) * 0.5 + 0.4)
    settings = dl.GenerationSettings(
        mode="task", task="above_median_prediction", seeds=(0, 1), max_new_tokens=12
    )
    results = dl.run_generation(model, tokenizer, prompt, settings)
    assert all(r.n_tokens <= 12 for r in results)
    assert sorted(results[0].prompt["pitch"]) == [48, 52, 60]
    assert sorted(results[0].target["pitch"]) == [64, 67, 72]
    # A checkpoint without the task's tokens cannot do the task: a message says so.
    plain_model, plain_tokenizer, _ = dl.load_model(tiny_checkpoint(tmp_path, "plain"), device="cpu")
    with pytest.raises(dl.DashboardError, match="cannot do task"):
        dl.run_generation(plain_model, plain_tokenizer, prompt, settings)


def test_roundtrip_and_stats_on_a_record(dataset):
    items = dl.load_dataset_items(dataset[0], "validation", dataset[1])
    notes = dl.load_item_notes(items[0]).iloc[:300]
    tokenizer = ExponentialTimeTokenizer()
    check = dl.roundtrip_check(tokenizer, notes)
    assert check.ok and check.n_decoded == check.n_notes == len(notes)
    assert check.max_velocity_error <= 2
    stats = dl.note_stats(notes)
    assert stats["notes"] == len(notes)
    assert dl.velocity_histogram(notes)["count"].sum() == len(notes)
    table, total = dl.token_table(tokenizer, notes, limit=10)
    assert len(table) == 10 and total == len(tokenizer.encode(notes))
    assert table["time_s"].is_monotonic_increasing
    # A broken round trip is noticed: a tokenizer that loses the last note.
    lossy = types.SimpleNamespace(
        encode=tokenizer.encode,
        decode=lambda ids: tokenizer.decode(ids).iloc[:-1],
        time_unit=tokenizer.time_unit,
    )
    assert not dl.roundtrip_check(lossy, notes).ok


def test_items_table_and_filters(dataset):
    items = dl.load_dataset_items(dataset[0], "validation", dataset[1])
    table = dl.items_table(items)
    assert len(table) == len(items) and table["label"].is_unique
    composer = table["composer"].iloc[0]
    assert (dl.filter_items(table, composer)["composer"] == composer).all()
    word = table["title"].iloc[0].split()[0]
    assert len(dl.filter_items(table, "all", word.upper())) >= 1
    assert len(dl.filter_items(table, None, "no title has this text")) == 0
    source = dl.item_metadata(items[0])
    assert isinstance(source, dict) and json.dumps(source)
    with pytest.raises(dl.DashboardError):
        dl.load_dataset_items("hf", "validation", "/no/such/dataset")
    with pytest.raises(dl.DashboardError):
        dl.load_dataset_items("s3", "validation")


def test_dataset_review_notes_shown_follows_the_record(dataset, monkeypatch):
    """Notes shown is the new record's default after a switch, not the last record's value."""
    monkeypatch.setenv("PIANO_GPT_SOUNDFONT", "none")
    at = AppTest.from_file(DATASET_REVIEW, default_timeout=TIMEOUT).run()
    records = at.selectbox(key="record").options
    lengths = {}
    for label in records[:12]:  # find two records of different lengths
        at.selectbox(key="record").set_value(label).run()
        lengths[label] = int({m.label: m.value for m in at.metric}["Notes"])
        if len(set(lengths.values())) > 1 and max(lengths.values()) > 30:
            break
    longer = max(lengths, key=lengths.get)
    shorter = min(lengths, key=lengths.get)
    at.selectbox(key="record").set_value(shorter).run()
    at.number_input(key="fragment_count").set_value(min(lengths[shorter], 20)).run()
    at.number_input(key="fragment_first").set_value(1).run()
    at.selectbox(key="record").set_value(longer).run()
    assert_clean(at)
    assert at.number_input(key="fragment_count").value == min(lengths[longer], 500)
    assert at.number_input(key="fragment_first").value == 0

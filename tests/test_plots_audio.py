"""Pianoroll pictures (matplotlib and altair) and offline audio rendering."""

import io
import wave

import matplotlib
import numpy as np
import pytest
import symusic

matplotlib.use("Agg")

from piano_gpt import audio  # noqa: E402
from piano_gpt.audio import audio_backend, find_soundfont, midi_bytes, render_wav  # noqa: E402
from piano_gpt.midi import empty_notes, make_notes, score_to_notes  # noqa: E402
from piano_gpt.plots import chart_table, pianoroll_chart, plot_comparison, plot_pianoroll, save_figure  # noqa: E402


@pytest.fixture
def notes():
    return make_notes(
        [60, 64, 67, 72, 48], [20, 60, 100, 127, 80], [0.0, 0.5, 1.0, 1.5, 0.0], [0.5, 1.0, 1.5, 2.5, 2.0]
    )


def read_wav(data: bytes) -> tuple[np.ndarray, int]:
    with wave.open(io.BytesIO(data)) as handle:
        assert handle.getsampwidth() == 2
        frames = np.frombuffer(handle.readframes(handle.getnframes()), "<i2").astype(np.float64) / 32767
        return frames.reshape(-1, handle.getnchannels()).T, handle.getframerate()


# --- matplotlib ----------------------------------------------------------------------------------


def test_pianoroll_draws_one_bar_per_note_coloured_by_velocity(notes):
    from matplotlib.collections import PolyCollection

    ax = plot_pianoroll(notes, title="five notes")
    bars = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bars) == 1
    paths = bars[0].get_paths()
    assert len(paths) == len(notes)
    # The bar of the first note spans its start..end and sits on its pitch.
    corners = paths[0].vertices
    first = notes.iloc[0]
    assert corners[:, 0].min() == pytest.approx(first["start"]) and corners[:, 0].max() == pytest.approx(
        first["end"]
    )
    assert corners[:, 1].mean() == pytest.approx(first["pitch"], abs=0.5)
    assert list(bars[0].get_array()) == notes["velocity"].tolist()
    colours = bars[0].to_rgba(bars[0].get_array())
    soft, loud = notes["velocity"].argmin(), notes["velocity"].argmax()
    assert not np.allclose(colours[soft], colours[loud])  # soft and loud notes differ in colour
    assert ax.get_title() == "five notes"
    assert ax.get_xlim()[1] >= 2.5
    lo, hi = ax.get_ylim()
    assert lo < 48 and hi > 72
    matplotlib.pyplot.close(ax.figure)


def test_pianoroll_of_nothing_is_an_empty_axis():
    ax = plot_pianoroll(empty_notes())
    assert len(ax.collections[0].get_paths()) == 0
    matplotlib.pyplot.close(ax.figure)


def test_comparison_figure_has_an_overlay_and_a_panel_per_part(notes, tmp_path):
    source, target = notes.iloc[:3], notes.iloc[3:]
    generation = make_notes([62, 65], [70, 90], [2.5, 3.0], [3.0, 3.5])
    figure = plot_comparison({"source": source, "target": target, "generation": generation}, title="t")
    panels = [ax for ax in figure.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == 4
    titles = [ax.get_title() for ax in panels]
    assert titles[1:] == ["source: 3 notes", "target: 2 notes", "generation: 2 notes"]
    legend = [text.get_text() for text in panels[0].get_legend().get_texts()]
    assert legend == ["source (3)", "target (2)", "generation (2)"]
    # The overlay gives each part its own hue.
    hues = {tuple(np.round(c.get_facecolor()[0][:3], 3)) for c in panels[0].collections}
    assert len(hues) == 3
    path = save_figure(figure, tmp_path / "figs" / "comparison.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.pyplot.imread(path)
    assert image.shape[0] > 300 and image[..., :3].std() > 0.05  # a picture, not a blank page


def test_plot_comparison_needs_parts():
    with pytest.raises(ValueError):
        plot_comparison({})


# --- altair --------------------------------------------------------------------------------------


def test_interactive_chart_holds_every_note(notes):
    spec = pianoroll_chart(notes, title="roll").to_dict()
    values = next(iter(spec["datasets"].values()))
    assert len(values) == len(notes)
    assert {row["pitch"] for row in values} == set(notes["pitch"])
    assert spec["encoding"]["color"]["field"] == "velocity"
    assert spec["mark"]["type"] == "rect"


def test_interactive_comparison_colours_parts_and_cuts_long_tables(notes):
    spec = pianoroll_chart({"prompt": notes, "generation": notes.iloc[:2]}).to_dict()
    assert spec["encoding"]["color"]["field"] == "part"
    assert spec["encoding"]["opacity"]["field"] == "velocity"
    table, cut = chart_table({"a": notes, "b": notes}, max_notes=7)
    assert cut and len(table) == 7 and list(table["part"]).count("b") == 2
    assert "first 7 notes" in pianoroll_chart({"a": notes, "b": notes}, max_notes=7).to_dict()["title"]


# --- audio ---------------------------------------------------------------------------------------


def test_numpy_synth_renders_pitch_velocity_and_length(tmp_path):
    a4 = make_notes([69], [100], [0.0], [1.0])
    data = render_wav(a4, path=tmp_path / "a4.wav", backend="numpy", sample_rate=22050)
    assert (tmp_path / "a4.wav").read_bytes() == data
    samples, rate = read_wav(data)
    assert rate == 22050 and samples.shape[0] == 1
    assert samples.shape[1] / rate == pytest.approx(1.0 + audio.RELEASE_SECONDS + 0.05, abs=0.02)
    spectrum = np.abs(np.fft.rfft(samples[0][: rate // 2]))
    peak = np.fft.rfftfreq(rate // 2, 1 / rate)[np.argmax(spectrum)]
    assert peak == pytest.approx(440, abs=5)
    # Silence after the damper release.
    assert np.abs(samples[0][int((1.0 + audio.RELEASE_SECONDS + 0.005) * rate) :]).max() < 1e-3


def test_numpy_synth_louder_with_velocity_and_starts_on_time():
    def rms(velocity):
        samples, rate = read_wav(
            render_wav(make_notes([60, 60], [velocity, 127], [0.5, 3.0], [1.5, 3.1]), backend="numpy")
        )
        return np.sqrt((samples[0][int(0.5 * rate) : int(1.5 * rate)] ** 2).mean()), samples[0], rate

    soft, quiet_samples, rate = rms(30)
    loud, _, _ = rms(110)
    assert loud > 2 * soft > 0
    assert np.abs(quiet_samples[: int(0.49 * rate)]).max() == 0  # nothing before the first onset


def test_render_wav_always_works_offline(notes, monkeypatch):
    monkeypatch.setenv(audio.SOUNDFONT_ENV, "none")
    assert find_soundfont() is None
    assert audio_backend()[0] == "numpy"
    samples, _ = read_wav(render_wav(notes))
    assert np.abs(samples).max() > 0.1
    samples, _ = read_wav(render_wav(empty_notes()))
    assert np.abs(samples).max() == 0
    with pytest.raises(RuntimeError, match="SoundFont"):
        render_wav(notes, backend="soundfont")
    with pytest.raises(ValueError):
        render_wav(notes, backend="fluidsynth")


def test_soundfont_search_honours_the_environment(tmp_path, monkeypatch):
    font = tmp_path / "piano.sf2"
    font.write_bytes(b"RIFF")
    monkeypatch.setenv(audio.SOUNDFONT_ENV, str(font))
    assert find_soundfont() == font
    monkeypatch.setenv(audio.SOUNDFONT_ENV, str(tmp_path / "missing.sf2"))
    assert find_soundfont() is None
    # A file that is not a SoundFont cannot be rendered with; auto falls back to numpy.
    assert audio.soundfont_problem(font) is not None
    samples, _ = read_wav(render_wav(make_notes([60], [90], [0.0], [0.5]), soundfont=font))
    assert samples.shape[0] == 1


def test_soundfont_backend_when_available(notes):
    backend, why = audio_backend()
    if backend != "soundfont":
        pytest.skip(f"SoundFont rendering unavailable here: {why}")
    samples, rate = read_wav(render_wav(notes, backend="soundfont"))
    assert samples.shape[0] == 2 and samples.shape[1] / rate > 2.5
    assert np.abs(samples).max() > 0.05


def test_midi_bytes_round_trip(notes):
    data = midi_bytes(notes)
    assert data[:4] == b"MThd"
    back = score_to_notes(symusic.Score.from_midi(data, ttype="second"))
    assert back["pitch"].tolist() == notes["pitch"].tolist()
    assert back["velocity"].tolist() == notes["velocity"].tolist()
    np.testing.assert_allclose(back["start"], notes["start"], atol=2e-3)
    np.testing.assert_allclose(back["end"], notes["end"], atol=2e-3)

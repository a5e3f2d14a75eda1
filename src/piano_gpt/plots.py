"""Pianoroll pictures of note tables: one bar per note (time across, pitch up), velocity as colour.

Two renderers:

- matplotlib, for files and static pages: :func:`plot_pianoroll` draws one note table on an axis,
  :func:`plot_comparison` stacks several (prompt vs generation, source vs target vs generation) on a
  shared time axis, with an overlay of all of them on top, each part in its own hue;
  :func:`save_figure` writes a figure to PNG/SVG/PDF.
- altair (Vega-Lite, shipped with streamlit), for the dashboards: :func:`pianoroll_chart` gives an
  interactive chart (zoom, pan, a tooltip per note). altair is imported only when called.

Every function accepts an empty note table and draws an empty roll.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from piano_gpt.midi import PIANO_PITCH_RANGE

VELOCITY_CMAP = "viridis"
# One hue per part of a comparison, in order (colour-blind safe: Okabe-Ito).
PART_COLORS = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442", "#000000"]
BAR_HEIGHT = 0.8
MAX_CHART_NOTES = 5000  # altair embeds the data in the page: larger tables are cut (and said so)


def _check_notes(notes: pd.DataFrame) -> pd.DataFrame:
    missing = {"pitch", "velocity", "start", "end"} - set(notes.columns)
    if missing:
        raise ValueError(
            f"a note table needs columns pitch, velocity, start, end (missing {sorted(missing)})"
        )
    return notes


def _bar_vertices(notes: pd.DataFrame) -> np.ndarray:
    """(n, 4, 2) rectangle corners, one per note, centred on the pitch."""
    start = notes["start"].to_numpy(np.float64)
    end = np.maximum(notes["end"].to_numpy(np.float64), start + 1e-3)
    low = notes["pitch"].to_numpy(np.float64) - BAR_HEIGHT / 2
    high = low + BAR_HEIGHT
    return np.stack(
        [
            np.stack([start, low], 1),
            np.stack([start, high], 1),
            np.stack([end, high], 1),
            np.stack([end, low], 1),
        ],
        axis=1,
    )


def _pitch_limits(tables: list[pd.DataFrame]) -> tuple[float, float]:
    pitches = [t["pitch"].to_numpy() for t in tables if len(t)]
    if not pitches:
        return PIANO_PITCH_RANGE[0] - 0.5, PIANO_PITCH_RANGE[1] + 0.5
    values = np.concatenate(pitches)
    return float(values.min()) - 2, float(values.max()) + 2


def _time_limits(tables: list[pd.DataFrame]) -> tuple[float, float]:
    ends = [float(t["end"].max()) for t in tables if len(t)]
    starts = [float(t["start"].min()) for t in tables if len(t)]
    if not ends:
        return 0.0, 1.0
    low, high = min(min(starts), 0.0), max(ends)
    return low, high + max(0.02 * (high - low), 1e-2)


def plot_pianoroll(
    notes: pd.DataFrame,
    ax=None,
    title: str | None = None,
    color: str | None = None,
    cmap: str = VELOCITY_CMAP,
    colorbar: bool = True,
    label: str | None = None,
    alpha: float = 1.0,
):
    """Draw ``notes`` as bars on ``ax`` (a new figure when None); returns the axis.

    Velocity is the colour: through ``cmap`` (0..127, with a colour bar), or, when ``color`` is
    given, as the opacity of that one colour (so several tables can share an axis, see
    :func:`plot_comparison`).
    """
    import matplotlib.pyplot as plt
    from matplotlib.collections import PolyCollection
    from matplotlib.colors import Normalize, to_rgba

    notes = _check_notes(notes)
    if ax is None:
        width = float(np.clip(4 + (notes["end"].max() if len(notes) else 0) / 4, 8, 16))
        _, ax = plt.subplots(figsize=(width, 4), layout="constrained")
    velocity = notes["velocity"].to_numpy(np.float64)
    if color is None:
        norm = Normalize(0, 127)
        bars = PolyCollection(
            _bar_vertices(notes), array=velocity, cmap=cmap, norm=norm, edgecolors="none", alpha=alpha
        )
    else:
        faces = np.tile(to_rgba(color), (len(notes), 1))
        faces[:, 3] = alpha * (0.25 + 0.75 * np.clip(velocity, 0, 127) / 127)
        bars = PolyCollection(_bar_vertices(notes), facecolors=faces, edgecolors="none")
    if label is not None:
        bars.set_label(label)
    ax.add_collection(bars)
    if color is None and colorbar:
        ax.figure.colorbar(bars, ax=ax, label="velocity", pad=0.01)
    ax.set_xlim(*_time_limits([notes]))
    ax.set_ylim(*_pitch_limits([notes]))
    ax.set_xlabel("time [s]")
    ax.set_ylabel("pitch")
    ax.grid(True, axis="y", alpha=0.2)
    if title:
        ax.set_title(title)
    return ax


def plot_comparison(
    parts: Mapping[str, pd.DataFrame],
    title: str | None = None,
    overlay: bool = True,
    width: float = 12.0,
):
    """A figure comparing note tables on one time axis: ``{"prompt": df, "generation": df}`` or
    ``{"source": df, "target": df, "generation": df}``.

    With ``overlay`` the first panel draws every part together, each in its own hue (velocity as
    opacity); then one panel per part with velocity as colour. Returns the matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    if not parts:
        raise ValueError("plot_comparison needs at least one note table")
    tables = [_check_notes(df) for df in parts.values()]
    n_panels = len(parts) + int(overlay)
    fig, axes = plt.subplots(
        n_panels,
        1,
        figsize=(width, 1.2 + 2.4 * n_panels),
        sharex=True,
        sharey=True,
        squeeze=False,
        layout="constrained",
    )
    axes = list(axes[:, 0])
    if overlay:
        ax = axes.pop(0)
        for index, (name, notes) in enumerate(parts.items()):
            plot_pianoroll(
                notes, ax=ax, color=PART_COLORS[index % len(PART_COLORS)], label=f"{name} ({len(notes)})"
            )
        ax.legend(loc="upper right", fontsize="small", framealpha=0.8)
        ax.set_title("all parts (opacity = velocity)")
        ax.set_xlabel("")
    for ax, (name, notes) in zip(axes, parts.items()):
        plot_pianoroll(notes, ax=ax, title=f"{name}: {len(notes)} notes", colorbar=True)
        ax.set_xlabel("")
    axes[-1].set_xlabel("time [s]")
    limits = _pitch_limits(tables)
    fig.axes[0].set_ylim(*limits)
    fig.axes[0].set_xlim(*_time_limits(tables))
    if title:
        fig.suptitle(title)
    return fig


def save_figure(fig, path: str | os.PathLike, dpi: int = 120, close: bool = True) -> Path:
    """Write ``fig`` to ``path`` (format from the suffix; parent folders made); closes it by default."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    if close:
        plt.close(fig)
    return path


# --- interactive (altair) ------------------------------------------------------------------------


def chart_table(
    parts: Mapping[str, pd.DataFrame], max_notes: int = MAX_CHART_NOTES
) -> tuple[pd.DataFrame, bool]:
    """The long table an altair pianoroll draws: one row per note with its part; True if cut."""
    frames, total = [], 0
    cut = False
    for name, notes in parts.items():
        notes = _check_notes(notes)
        room = max_notes - total
        if len(notes) > room:
            notes, cut = notes.iloc[: max(room, 0)], True
        total += len(notes)
        frames.append(
            pd.DataFrame(
                {
                    "part": name,
                    "pitch": notes["pitch"].to_numpy(np.int64),
                    "velocity": notes["velocity"].to_numpy(np.int64),
                    "start": notes["start"].to_numpy(np.float64).round(4),
                    "end": np.maximum(
                        notes["end"].to_numpy(np.float64), notes["start"].to_numpy(np.float64) + 1e-3
                    ).round(4),
                    "low": notes["pitch"].to_numpy(np.float64) - BAR_HEIGHT / 2,
                    "high": notes["pitch"].to_numpy(np.float64) + BAR_HEIGHT / 2,
                }
            )
        )
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["part", "pitch"])
    return table, cut


def pianoroll_chart(
    notes: pd.DataFrame | Mapping[str, pd.DataFrame],
    title: str | None = None,
    height: int = 320,
    max_notes: int = MAX_CHART_NOTES,
):
    """An interactive altair pianoroll (scroll to zoom, drag to pan, tooltips).

    One table: velocity as colour. Several (a mapping name -> table): each part in its own colour,
    velocity as opacity. At most ``max_notes`` notes are drawn (the chart title says when cut).
    """
    import altair as alt

    parts = {"notes": notes} if isinstance(notes, pd.DataFrame) else dict(notes)
    table, cut = chart_table(parts, max_notes)
    if cut:
        title = f"{title or ''} (first {max_notes} notes shown)".strip()
    tooltip = ["part:N", "pitch:Q", "velocity:Q", "start:Q", "end:Q"]
    base = alt.Chart(table).mark_rect()
    if len(parts) == 1:
        color = alt.Color("velocity:Q", scale=alt.Scale(scheme="viridis", domain=[0, 127]), title="velocity")
        encoded = base.encode(color=color)
    else:
        names = list(parts)
        color = alt.Color(
            "part:N",
            scale=alt.Scale(
                domain=names, range=[PART_COLORS[i % len(PART_COLORS)] for i in range(len(names))]
            ),
            title=None,
            legend=alt.Legend(orient="top", direction="horizontal"),
        )
        opacity = alt.Opacity("velocity:Q", scale=alt.Scale(domain=[0, 127], range=[0.25, 1.0]), legend=None)
        encoded = base.encode(color=color, opacity=opacity)
    chart = (
        encoded.encode(
            x=alt.X("start:Q", title="time [s]"),
            x2="end:Q",
            y=alt.Y("low:Q", title="pitch", scale=alt.Scale(zero=False)),
            y2="high:Q",
            tooltip=tooltip,
        )
        .properties(height=height, title=title or "")
        .interactive()
    )
    return chart


__all__ = [
    "MAX_CHART_NOTES",
    "PART_COLORS",
    "chart_table",
    "pianoroll_chart",
    "plot_comparison",
    "plot_pianoroll",
    "save_figure",
]

"""Streamlit pieces both dashboards share: cached loaders, the section guard, widget-state clamping.

dashboard_logic holds what the pages compute and is tested without Streamlit; this module holds the
few Streamlit-bound helpers that would otherwise be written once per page.
"""

from __future__ import annotations

import logging

import streamlit as st

from piano_gpt import dashboard_logic as dl
from piano_gpt.audio import audio_backend, render_wav

logger = logging.getLogger("piano_gpt.dashboards")


@st.cache_resource(show_spinner=False, max_entries=8)
def cached_items(kind: str, split: str, path: str) -> list:
    return dl.load_dataset_items(kind, split, path)


@st.cache_resource(show_spinner=False, max_entries=2)
def cached_model(path: str, stamp: float):
    """The model of a checkpoint; ``stamp`` (its modification time) reloads it when it is rewritten."""
    return dl.load_model(path)


@st.cache_data(show_spinner=False, max_entries=64)
def cached_wav(notes) -> bytes:
    return render_wav(notes)


@st.cache_data(show_spinner=False)
def cached_backend() -> str:
    return audio_backend()[1]


def guarded(section, *args):
    """Run a page section; problems become st.error messages, never a traceback page."""
    name = getattr(section, "__name__", "this section")
    try:
        return section(*args)
    except dl.DashboardError as error:
        st.error(str(error))
    except Exception as error:  # the page must stay usable: log it, say it
        logger.exception("dashboard section %s failed", name)
        st.error(f"Something went wrong in {name}: {type(error).__name__}: {error}")
    return None


def clamp_state(key: str, low, high) -> None:
    """Forget a number widget's remembered value when it falls outside its new range (new record)."""
    if key in st.session_state:
        value = st.session_state[key]
        if not low <= value <= high:
            del st.session_state[key]  # the widget starts again from its default

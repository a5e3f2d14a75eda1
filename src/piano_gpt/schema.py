"""Declarative value checks: one small rule (type + range) per key, one line per problem.

A rule table is read at a glance and checked in one place; the model config, the tokenizers, the
training config, a checkpoint's training state and the generation options all use it. A value that
breaks its rule gives ``ValueError("<key>=<value>: must be <what>")``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    """What one key accepts. ``kind``: "int", "float" (ints accepted), "bool", "str" or "list";
    ``low`` / ``high``: inclusive bounds (``low_open``: ``low`` itself excluded); ``optional``: None
    allowed; ``finite``: floats must be finite (not nan/inf); ``choices``: the allowed values."""

    kind: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    optional: bool = False
    finite: bool = True
    choices: tuple | None = None
    meaning: str = ""

    def describe(self) -> str:
        what = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}
        what = what.get(self.kind, "a list")
        if self.choices is not None:
            return f"one of {', '.join(map(str, self.choices))}"
        bounds = []
        if self.low is not None:
            bounds.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            bounds.append(f"<= {self.high:g}")
        text = f"{what} {' and '.join(bounds)}".strip()
        return f"{self.meaning} ({text})" if self.meaning else text

    def problem(self, value) -> str | None:
        """None when ``value`` is allowed, else what it must be."""
        if value is None:
            return None if self.optional else self.describe()
        if self.choices is not None:
            return None if value in self.choices else self.describe()
        if self.kind == "bool":
            return None if isinstance(value, bool) else self.describe()
        if self.kind == "str":
            return None if isinstance(value, str) else self.describe()
        if self.kind == "list":
            return None if isinstance(value, list | tuple) else self.describe()
        if isinstance(value, bool):
            return self.describe()
        # numbers.Integral / Real: numpy scalars count too (bool is refused above).
        if self.kind == "int" and not isinstance(value, numbers.Integral):
            return self.describe()
        if self.kind == "float" and not isinstance(value, numbers.Real):
            return self.describe()
        if math.isnan(value) or (self.finite and not math.isfinite(value)):
            return self.describe()
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return self.describe()
        if self.high is not None and value > self.high:
            return self.describe()
        return None


def check_values(values: Mapping, rules: Mapping[str, Rule], prefix: str = "") -> None:
    """Raise ``ValueError`` naming the first key of ``rules`` whose value in ``values`` (a mapping,
    dotted keys reaching into nested mappings) breaks its rule. Missing keys read as None."""
    for key, rule in rules.items():
        value = lookup(values, key)
        problem = rule.problem(value)
        if problem is not None:
            raise ValueError(f"{prefix}{key}={value}: must be {problem}")


def lookup(values, dotted: str):
    """``values["a"]["b"]`` for ``"a.b"``; None when a level is missing or not a mapping."""
    for part in dotted.split("."):
        if not isinstance(values, Mapping) or part not in values:
            return None
        values = values[part]
    return values

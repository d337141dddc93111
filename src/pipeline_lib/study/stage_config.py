"""One way to turn a ``params.yaml`` section into a stage's config.

Every stage's config is a frozen dataclass deriving from ``StageConfig``, built by the one
``from_params`` (unknown and missing keys name themselves; a field whose type is another
``StageConfig`` is built from the nested mapping) and validated: each value against its
field's annotation (:func:`check_types`), the ranges in ``__post_init__`` or ``check``. The
library receives the object whole, and the resume fingerprint and the lineage record take the
same object, so adding a setting touches the schema, the dataclass and ``params.yaml`` only.
"""

from __future__ import annotations

import numbers
import types
import typing
from dataclasses import MISSING, asdict, fields
from typing import Any, Mapping, TypeVar

from ..io.errors import PipelineError

C = TypeVar("C", bound="StageConfig")


def is_int(value: Any) -> bool:
    """An integer that is not a bool (YAML's true must not mean 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _matches(value: Any, hint: Any) -> bool:
    """Whether ``value`` fits the annotation ``hint`` (the shapes a params.yaml value can take).

    int: an integer, numpy's too, never a bool; float: any such number; a sequence: a list
    or tuple whose items fit; a mapping: a dict; anything else (``Any``, a class) is not checked.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (tuple, list) or hint in (tuple, list):
        if not isinstance(value, (tuple, list)):
            return False
        items = [a for a in args if a is not Ellipsis]
        if origin is tuple and items and Ellipsis not in args:
            return len(value) == len(items) and all(_matches(v, a) for v, a in zip(value, items))
        return not items or all(_matches(v, items[0]) for v in value)
    if origin is dict or hint is dict or origin is typing.Mapping or hint is typing.Mapping:
        return isinstance(value, Mapping)
    if isinstance(hint, type) and issubclass(hint, StageConfig):
        return isinstance(value, hint)
    return True


def _describe(hint: Any) -> str:
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in args)
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if hint in names:
        return names[hint]
    if typing.get_origin(hint) in (tuple, list) or hint in (tuple, list):
        return "a list"
    return "a mapping" if typing.get_origin(hint) is dict or hint is dict else getattr(hint, "__name__", str(hint))


def check_types(config: "StageConfig", where: str) -> None:
    """One-line PipelineError naming ``where.<field>`` for the first value that does not fit its annotation."""
    hints = typing.get_type_hints(type(config))
    for f in fields(config):
        value = getattr(config, f.name)
        if f.name in hints and not _matches(value, hints[f.name]):
            raise PipelineError(f"{where}.{f.name}: {value!r} is invalid; expected {_describe(hints[f.name])}")


class StageConfig:
    """Base of every stage's config (each a dataclass, frozen or not, per ``params.yaml`` section).

    ``WHERE`` names the section in error messages; ``check(where)`` (optional) validates with it.
    """

    WHERE = "params.yaml"

    @classmethod
    def from_params(cls: type[C], section: Mapping[str, Any] | None, *, where: str | None = None) -> C:
        """Build from a params.yaml section; an unknown or missing key is a one-line PipelineError."""
        where = where or cls.WHERE
        section = dict(section or {})
        declared = {f.name: f for f in fields(cls)}
        unknown = sorted(set(section) - set(declared))
        if unknown:
            raise PipelineError(f"{where}.{unknown[0]}: unknown key (allowed: {', '.join(sorted(declared))})")
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for name, f in declared.items():
            if name not in section:
                if f.default is MISSING and f.default_factory is MISSING:
                    raise PipelineError(f"{where}.{name}: missing key")
                continue
            nested = hints.get(name)
            if isinstance(nested, type) and issubclass(nested, StageConfig):
                if not isinstance(section[name], Mapping):
                    raise PipelineError(f"{where}.{name}: {section[name]!r} is invalid; expected a mapping")
                values[name] = nested.from_params(section[name], where=f"{where}.{name}")
            else:
                values[name] = section[name]
        config = cls(**values)
        config.check(where)
        check_types(config, where)
        return config

    def check(self, where: str) -> None:
        """Validate with ``where`` in the messages (dataclasses may validate in __post_init__ instead)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

"""One way to turn a ``params.yaml`` section into a stage's config.

Every stage's config is a frozen dataclass deriving from ``StageConfig``, built by the one
``from_params`` (unknown and missing keys name themselves; a field whose type is another
``StageConfig`` is built from the nested mapping) and validated in its ``__post_init__``. The
library receives the object whole, and the resume fingerprint and the lineage record take the
same object, so adding a setting touches the schema, the dataclass and ``params.yaml`` only.
"""

from __future__ import annotations

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
                values[name] = nested.from_params(section[name], where=f"{where}.{name}")
            else:
                values[name] = section[name]
        config = cls(**values)
        config.check(where)
        return config

    def check(self, where: str) -> None:
        """Validate with ``where`` in the messages (dataclasses may validate in __post_init__ instead)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

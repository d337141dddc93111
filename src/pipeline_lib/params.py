"""Validation of params.yaml against its JSON schema, with errors that name the key.

One rule for every integer parameter: an integer is written as one (``16``). JSON Schema
counts ``16.0`` as an integer (a number with a zero fractional part), but YAML reads it as a
float, which ``range()``, torch's batch sizes and the like refuse later with a traceback;
so the schema's ``integer`` type is narrowed here to Python ``int`` (not ``bool``), and
``16.0`` is reported at load time like any other wrong type.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import yaml

from .io.atomic import write_text
from .io.errors import PipelineError

if TYPE_CHECKING:
    import jsonschema

# This module's bytes: a kept verdict holds for the validator that reached it.
_THIS_CODE = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def _is_int(checker: Any, instance: Any) -> bool:
    return isinstance(instance, int) and not isinstance(instance, bool)


@lru_cache(maxsize=1)
def _validator_class() -> type:
    import jsonschema  # ~0.1 s: imported only when a config is really checked (see validate_params)

    return jsonschema.validators.extend(
        jsonschema.Draft202012Validator,
        type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_int),
    )


def load_schema(schema_path: str | Path) -> dict:
    # libyaml's loader when PyYAML has it: every Snakemake start (a no-op `snakemake -n` too)
    # loads the schema, ~5x faster than the pure-Python SafeLoader.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(Path(schema_path).read_text(encoding="utf-8"), Loader=loader)


def _key_of(error: jsonschema.ValidationError) -> str:
    path = ".".join(str(p) for p in error.absolute_path)
    if error.validator == "additionalProperties":
        # jsonschema reports the parent; name the offending key itself.
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        path = ".".join(filter(None, [path, extra[0] if extra else ""]))
    elif error.validator == "required":
        missing = [k for k in error.validator_value if k not in error.instance]
        path = ".".join(filter(None, [path, missing[0] if missing else ""]))
    return path or "<top level>"


def validate_params(config: Mapping[str, Any], schema: Mapping[str, Any], *, source: str = "params.yaml",
                    cache_dir: str | os.PathLike | None = None) -> None:
    """Raise PipelineError for the first violation, e.g. ``params.yaml: features.batch_size: 'x' is not of type 'integer'``.

    ``cache_dir``: a config found valid leaves a marker named by the sha256 of (config, schema, this
    module, the jsonschema installed), and the same check again returns at once: every Snakemake
    start (a no-op ``snakemake -n``, each cluster job) validates the same params.yaml."""
    marker = Path(cache_dir) / _verdict_key(config, schema) if cache_dir else None
    if marker is not None and marker.is_file():
        return
    validator = _validator_class()(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    if not errors:
        if marker is not None:
            try:
                write_text(marker, "valid\n")
            except OSError:
                pass  # a read-only checkout is still checked, only every time
        return
    error = errors[0]
    key = _key_of(error)
    if error.validator == "additionalProperties":
        message = f"unknown key (allowed: {', '.join(sorted(error.schema.get('properties', {})))})"
    elif error.validator == "required":
        message = "missing key"
    else:
        message = error.message
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    raise PipelineError(f"{source}: {key}: {message}{more}")


def _verdict_key(config: Mapping[str, Any], schema: Mapping[str, Any]) -> str:
    spec = importlib.util.find_spec("jsonschema")
    origin = Path(spec.origin) if spec and spec.origin else None
    installed = f"{origin}:{origin.stat().st_mtime_ns}" if origin else "none"  # a reinstall rewrites it
    blob = json.dumps([config, schema], sort_keys=True, default=repr)
    return hashlib.sha256(f"{blob}\0{_THIS_CODE}\0{installed}".encode()).hexdigest()[:32]


def lookup(config: Mapping[str, Any], dotted_key: str) -> Any:
    """``lookup(config, "classical.lda")`` → ``config["classical"]["lda"]``, naming a missing key."""
    node: Any = config
    for part in dotted_key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise PipelineError(f"params.yaml: {dotted_key}: missing key")
        node = node[part]
    return node

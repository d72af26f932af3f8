"""Typed stage settings whose defaults come from the config schema, so that every default is written once.

The schema (``schema/config.schema.yaml``) declares each config key's type, bounds, description and default;
validation fills those defaults into the config. A stage's settings dataclass takes its field defaults from
the same schema (:func:`default`), and :func:`from_section` builds it from a config section (validated or
not: a test passes ``{}``). A field whose config key sits deeper than the section names it in its metadata
(``field(default=..., metadata={"key": "judge.max_tokens"})``).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

SCHEMA_PATH = Path(__file__).resolve().parent / "schema" / "config.schema.yaml"

T = TypeVar("T")


@cache
def _schema() -> dict[str, Any]:
    import yaml

    return yaml.safe_load(SCHEMA_PATH.read_text())


def _resolve(node: Mapping[str, Any]) -> dict[str, Any]:
    """A schema node with a local ``$ref`` merged in (the node's own keys win)."""
    ref = node.get("$ref", "")
    if not ref.startswith("#/"):
        return dict(node)
    target: Any = _schema()
    for part in ref[2:].split("/"):
        target = target[part]
    return {**target, **node}


def schema_node(key: str) -> dict[str, Any]:
    """The schema of a dotted config key, e.g. ``guard.max_words`` or ``pair_filter.judge``."""
    node: dict[str, Any] = _schema()
    for part in key.split("."):
        props = node.get("properties") or {}
        if part not in props:
            raise KeyError(f"config key {key}: not in {SCHEMA_PATH.name} (at {part!r})")
        node = _resolve(props[part])
    return node


def default(key: str) -> Any:
    """The schema's default for a dotted config key; lists come back as tuples (dataclass defaults are frozen)."""
    node = schema_node(key)
    if "default" not in node:
        raise KeyError(f"config key {key}: the schema declares no default")
    value = copy.deepcopy(node["default"])
    return tuple(value) if isinstance(value, list) else value


def lookup(config: Mapping[str, Any], key: str) -> Any:
    """The config's value at a dotted key, or the schema's default where the config lacks it (a config that was
    not validated, e.g. a test's): code never writes a default of its own beside the schema's."""
    found, value = _get(config, key)
    return value if found else default(key)


def _get(section: Mapping[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = section
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


class FromSection:
    """Base of a settings dataclass: ``from_config(section)`` builds it with :func:`from_section`."""

    @classmethod
    def from_config(cls: type[T], section: Mapping[str, Any] | None) -> T:
        return from_section(cls, section)


def from_section(cls: type[T], section: Mapping[str, Any] | None) -> T:
    """``cls`` (a settings dataclass) from a config section: given values win, field defaults fill the rest.

    A field reads the key named in its metadata (``"key"``), else its own name; list values become tuples.
    Keys of the section that no field names belong to other code (e.g. ``enabled``) and are ignored.
    """
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        found, value = _get(section or {}, f.metadata.get("key", f.name))
        if found and value is not None:
            values[f.name] = tuple(value) if isinstance(value, list) else value
    return cls(**values)

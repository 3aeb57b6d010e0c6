"""YAML with positions: every mapping remembers the line:column of itself, its keys and values,
so a policy or cases error can point at the place in the file. Duplicate keys are refused."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import yaml


class MarkedMapping(dict[Any, Any]):
    """A YAML mapping that remembers where it and each of its values start in the file."""

    def __init__(self) -> None:
        super().__init__()
        self.start: Any = None
        self.value_marks: dict[Any, Any] = {}
        self.key_marks: dict[Any, Any] = {}


class MarkedLoader(yaml.SafeLoader):
    """SafeLoader whose mappings carry positions and which refuses duplicate keys (PyYAML
    silently keeps the last one, so `when` written twice would hide a rule's real condition)."""


def _construct_mapping(loader: MarkedLoader, node: Any) -> MarkedMapping:
    loader.flatten_mapping(node)
    mapping = MarkedMapping()
    mapping.start = node.start_mark
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, Hashable):
            raise yaml.constructor.ConstructorError(
                None, None, "unhashable mapping key", key_node.start_mark
            )
        if key in mapping:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.key_marks[key] = key_node.start_mark
        mapping.value_marks[key] = value_node.start_mark
    return mapping


MarkedLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def pos(mapping: MarkedMapping, key: Any = None, *, of_key: bool = False) -> str:
    """'line:column' (1-based) of a mapping's value for `key`, of the key, or of the mapping."""
    marks = mapping.key_marks if of_key else mapping.value_marks
    mark = marks.get(key) if key is not None else None
    mark = mark or mapping.start
    return f"{mark.line + 1}:{mark.column + 1}" if mark is not None else "?:?"

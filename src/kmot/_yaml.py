"""The one way kmot reads YAML: safe types only, and a repeated key is an error.

`yaml.safe_load` keeps the last of two equal keys without a word, so a budgets
file with ``max_accuracy_drop: 0.01`` and, further down, ``max_accuracy_drop: 0.5``
gates at 0.5. Every YAML file kmot reads (budgets, recipes) goes through `load`.
"""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["DuplicateKeyError", "describe", "load"]


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping names the same key twice (``problem_mark`` is the second one)."""


class _Loader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses a mapping with a repeated key."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Node] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # a key written here may override a merged (<<) one
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node)
                except TypeError:  # an unhashable key: the base class reports it
                    continue
                if first is not key_node:
                    raise DuplicateKeyError(
                        "while constructing a mapping", node.start_mark,
                        f"found duplicate key {key!r} (first at line "
                        f"{first.start_mark.line + 1}); keep one of them",
                        key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def load(text: str) -> Any:
    """Parses YAML ``text`` like `yaml.safe_load`, refusing repeated mapping keys.

    Raises:
        yaml.YAMLError: invalid YAML; a `DuplicateKeyError` (a subclass) for a
            repeated key, whose ``problem_mark`` points at the repeat.
    """
    return yaml.load(text, Loader=_Loader)  # a SafeLoader: plain types only, no objects


def describe(err: Exception) -> str:
    """A one-line account of a YAML (or decoding) error: where, then what."""
    where = getattr(err, "problem_mark", None)
    line = f"at line {where.line + 1}, column {where.column + 1}: " if where else ""
    return f"a parse error {line}{getattr(err, 'problem', None) or err}"

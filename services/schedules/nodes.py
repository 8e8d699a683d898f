"""YAML nodes read as plain values: the tags allowed, numbers, aliases, JSON-safe args.

Shared by the walker (services/schedules/loader.py) and the value parsers
(services/schedules/values.py). A node that is not what is expected raises
:class:`Invalid` with a message that shows the value as the user wrote it: shortened,
control characters escaped, secrets masked, and never a URL (a webhook URL pasted under
the wrong key must not be printed back by ``cronwork check``).
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from services.redact import printable, redact
from services.schedules.limits import MAX_ALIAS_VALUES, MAX_DEPTH, MAX_INT_CHARS
from services.schedules.yaml_reader import line_of

#: Values shown in messages are cut to this many characters.
SHOWN_CHARS = 80
_INT_RANGE = range(-(2**63), 2**63)
#: Characters Postgres's JSON cannot store (NUL; a surrogate without its pair). args are
#: stored with the schedule: one such string failed every leader's sync, stopping all.
_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")
_UNSTORABLE_MESSAGE = (
    "strings in args and kwargs cannot hold a NUL or an unpaired surrogate character "
    "(\\0, \\ud800-\\udfff): the database cannot store them"
)

_YAML = "tag:yaml.org,2002:"
STR_TAG, INT_TAG, NULL_TAG = _YAML + "str", _YAML + "int", _YAML + "null"
MAP_TAG, SEQ_TAG = _YAML + "map", _YAML + "seq"
#: The only tags a node may carry: plain values, lists and mappings. Everything else
#: (!!python/..., !!binary, !!set, !!timestamp, local !tags) is refused where it is.
_SCALAR_TAGS = frozenset(_YAML + t for t in ("str", "int", "float", "bool", "null"))
_CONSTRUCTOR = SafeConstructor()


class Invalid(Exception):
    """A value is wrong; raised by parsers, turned into a Problem by the walker."""

    def __init__(self, message: str, node: Node | None = None) -> None:
        super().__init__(message)
        self.message = message
        #: A more precise node than the value's own (e.g. one element of args).
        self.node = node


# ------------------------------------------------------------------ showing values


def show_text(text: str) -> str:
    """A user's text as messages show it: no URL, secrets masked, short, one line."""
    if "://" in text:
        return "<a URL, not shown>"
    text = printable(redact(text))
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."


def show(node: Node) -> str:
    """How the user wrote a value, for messages (never a Python repr)."""
    if isinstance(node, ScalarNode):
        return show_text(str(node.value)) if node.value != "" else "nothing"
    return "a list" if isinstance(node, SequenceNode) else "a mapping"


def about(key: str, message: str) -> str:
    """Name the key in a message unless it already does (``every: duration '0s' ...``)."""
    return message if key in message else f"{key}: {message}"


def hint(word: str, choices: Iterable[str]) -> str:
    if len(word) > 64:
        return ""  # difflib is quadratic; nobody mistypes a name that long
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _tag_name(tag: str) -> str:
    return "!!" + tag[len(_YAML) :] if tag.startswith(_YAML) else tag


def refuse_tag(node: Node) -> Invalid:
    return Invalid(
        f"YAML tag '{show_text(_tag_name(node.tag))}' is not allowed: "
        "use plain values, lists and mappings",
        node,
    )


# ------------------------------------------------------------------ nodes to values


def scalar(node: Node) -> Any:
    """The Python value of a scalar node (str, int, float, bool or None)."""
    if not isinstance(node, ScalarNode):
        raise Invalid("expected a single value, not a list or mapping")
    tag = node.tag
    if tag == STR_TAG:
        return node.value
    if tag not in _SCALAR_TAGS:
        raise refuse_tag(node)
    text = node.value
    if tag == INT_TAG and len(text) > MAX_INT_CHARS:
        raise Invalid(f"number '{show_text(text)}' is too long for a 64-bit integer", node)
    try:
        # The tag's constructor itself: construct_object would keep every node in a cache.
        value = _CONSTRUCTOR.yaml_constructors[tag](_CONSTRUCTOR, node)
    except Exception:  # !!int abc, !!float x: a value its explicit tag cannot read
        raise Invalid(f"'{show_text(text)}' is not a valid {_tag_name(tag)}", node) from None
    if isinstance(value, int) and not isinstance(value, bool) and value not in _INT_RANGE:
        raise Invalid(f"number '{show_text(text)}' is too large for a 64-bit integer", node)
    return value


def mapping(node: Node) -> MappingNode | None:
    """The node if it is a plain mapping; None if it is a plain anything else.

    A tagged list or mapping (``!!omap``, ``!!python/dict``) is refused for its tag,
    whatever was expected: the tag is what is wrong with it.
    """
    _refuse_collection_tag(node)
    return node if isinstance(node, MappingNode) else None


def sequence(node: Node) -> SequenceNode | None:
    """The node if it is a plain list; None if it is a plain anything else."""
    _refuse_collection_tag(node)
    return node if isinstance(node, SequenceNode) else None


_PLAIN_COLLECTION_TAGS: dict[type, str] = {MappingNode: MAP_TAG, SequenceNode: SEQ_TAG}


def _refuse_collection_tag(node: Node) -> None:
    plain = _PLAIN_COLLECTION_TAGS.get(type(node))
    if plain is not None and node.tag != plain:
        raise refuse_tag(node)


def is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == NULL_TAG


@dataclass
class Expansion:
    """What args and kwargs of one file may still take from aliases (MAX_ALIAS_VALUES).

    An alias is the same node object a second time in the tree; expanding it copies it.
    Seen nodes are counted, so nine aliases nine levels deep are refused after 100,000
    copies instead of built 387 million times.
    """

    seen: set[int]
    left: int = MAX_ALIAS_VALUES


def plain(node: Node, depth: int, expansion: Expansion) -> Any:
    """A JSON-safe value: it travels in a Dramatiq message, so nothing else will do.

    ``depth`` is the node's nesting level in the file (the root mapping is 1), the same
    count the YAML reader holds to MAX_DEPTH.
    """
    return _plain(node, depth, expansion, set())


def _plain(
    node: Node, depth: int, expansion: Expansion, open_nodes: set[int], what: str = "mapping"
) -> Any:
    if depth > MAX_DEPTH:
        raise Invalid(f"nesting deeper than {MAX_DEPTH} levels", node)
    key = id(node)
    if key in expansion.seen:
        expansion.left -= 1
        if expansion.left < 0:
            raise Invalid(
                f"YAML aliases expand to more than {MAX_ALIAS_VALUES:,} values "
                "(the alias's anchor is here)",
                node,
            )
    else:
        expansion.seen.add(key)
    if isinstance(node, ScalarNode):
        value = scalar(node)
        if isinstance(value, float) and not math.isfinite(value):
            raise Invalid(f"'{show(node)}' is not a plain JSON number", node)
        if isinstance(value, str) and _UNSTORABLE.search(value):
            raise Invalid(_UNSTORABLE_MESSAGE, node)
        return value
    if key in open_nodes:
        raise Invalid("a YAML alias here refers to a value that contains it", node)
    open_nodes.add(key)
    try:
        if sequence(node) is not None:
            return [_plain(item, depth + 1, expansion, open_nodes) for item in node.value]
        if mapping(node) is not None:
            return _plain_mapping(node, what, depth, expansion, open_nodes)
        raise Invalid(f"'{show(node)}' is not plain JSON", node)
    finally:
        open_nodes.discard(key)


def _plain_mapping(
    node: Node, what: str, depth: int, expansion: Expansion, open_nodes: set[int]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    first_line: dict[str, int] = {}
    for key_node, value_node in node.value:
        key = scalar(key_node) if isinstance(key_node, ScalarNode) else None
        if not isinstance(key, str):
            raise Invalid(f"{what} keys must be strings, got {show(key_node)}", key_node)
        if _UNSTORABLE.search(key):
            raise Invalid(_UNSTORABLE_MESSAGE, key_node)
        if key in first_line:
            raise Invalid(
                f"duplicate key '{show_text(key)}' (first at line {first_line[key]})", key_node
            )
        first_line[key] = line_of(key_node)
        out[key] = _plain(value_node, depth + 1, expansion, open_nodes)
    return out


def plain_args(node: Node, depth: int, expansion: Expansion) -> tuple[Any, ...]:
    if sequence(node) is None:
        raise Invalid(f'args must be a list, e.g. [1, "x"], got {show(node)}')
    return tuple(plain(node, depth, expansion))


def plain_kwargs(node: Node, depth: int, expansion: Expansion) -> dict[str, Any]:
    if mapping(node) is None:
        raise Invalid(f"kwargs must be a mapping, e.g. {{limit: 10}}, got {show(node)}")
    value: dict[str, Any] = _plain(node, depth, expansion, set(), what="kwargs")
    return value

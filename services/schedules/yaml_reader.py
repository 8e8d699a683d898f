"""Read schedules.yaml into a YAML node tree, within bounds, at libyaml's speed.

The node tree (not ``yaml.safe_load``) is what the loader walks: it keeps line numbers
and shows duplicate keys, which ``safe_load`` silently collapses to the last one.

Bounds, each refused with a line rather than exhausting the process:

- the file: a regular file (never a FIFO that blocks or ``/dev/zero`` that never ends)
  of at most MAX_FILE_BYTES, in UTF-8 (a bad byte is reported at its own line);
- values: at most MAX_NODES, counted as the composer builds them (the tree costs about
  300 bytes a value);
- nesting: at most MAX_DEPTH levels (PyYAML's composer recurses, and libyaml stops at
  1,000);
- aliases and tags: the tree keeps an alias as the same node object twice, so nothing
  is expanded here; ``services.schedules.nodes`` counts expansions and refuses tags.

libyaml's parser (``yaml.CSafeLoader``) is used when PyYAML was built with it, with the
same line numbers as the pure-Python one. When libyaml refuses a file, the pure-Python
parser reads it again for its more precise message (files up to DIAGNOSE_MAX_CHARS).
"""

from __future__ import annotations

import codecs
import gc
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode
from yaml.resolver import Resolver

from services.errors import ConfigError, Problem
from services.schedules.limits import MAX_DEPTH, MAX_FILE_BYTES, MAX_NODES

#: A file libyaml refuses is parsed again by PyYAML for its message up to this size;
#: larger ones get libyaml's message (PyYAML reads about 0.5 MB a second).
DIAGNOSE_MAX_CHARS = 2 * 1024 * 1024

#: PyYAML's implicit resolvers without the timestamp one: times stay strings, parsed
#: by the loader (datetime.fromisoformat) so a naive time can be put in the schedule's
#: zone; PyYAML would make it naive, or UTC if it had an offset, losing what was written.
_RESOLVERS = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
#: _FastResolve's shortcut reads a first character without resolvers as "a plain
#: string"; a wildcard entry (key None) would apply to every value and rule it out.
_SHORTCUT = None not in _RESOLVERS


_STR_TAG = "tag:yaml.org,2002:str"
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
#: Distinct plain values remembered (names are not: each is seen once).
_MEMO_SIZE = 10_000


class _FastResolve:
    """PyYAML's tag resolution, with its answers remembered, and no path resolvers.

    The composer asks for every node's tag; PyYAML answers by trying the resolvers'
    regular expressions each time: a third of composing a large file, for a few hundred
    distinct values (``tick``, ``5m``) repeated a hundred thousand times, and names that
    start with a character no resolver starts with (a plain string, at once).
    """

    _memo: dict[str, str] = {}  # one per process: the resolvers are fixed

    def resolve(self, kind: type, value: Any, implicit: tuple[bool, bool]) -> str:
        if kind is ScalarNode:
            if not implicit[0]:
                return _STR_TAG  # quoted: always a string
            tag = self._memo.get(value)
            if tag is None:
                if _SHORTCUT and value and value[0] not in _RESOLVERS:
                    return _STR_TAG  # no resolver starts with this character
                tag = Resolver.resolve(self, kind, value, implicit)  # type: ignore[arg-type]
                if len(self._memo) < _MEMO_SIZE:
                    self._memo[value] = tag
            return tag
        return _MAP_TAG if kind is MappingNode else _SEQ_TAG

    def descend_resolver(self, parent: Node | None, index: Any) -> None:
        """Called by the composer before each node it builds: count them.

        The tree costs about 300 bytes a node, so a file of "1," items within the size
        limit would take gigabytes; the count stops it at MAX_NODES (PyYAML's path
        resolvers, which this hook served, are not used).
        """
        self._nodes: int = getattr(self, "_nodes", 0) + 1
        if self._nodes > MAX_NODES:
            mark = parent.start_mark if parent is not None else None
            raise _TooMany(None, None, f"more than {MAX_NODES:,} values in one file", mark)

    # The composer calls this after each node; with no path resolvers there is nothing
    # to undo, and a built-in taking no arguments costs no Python frame.
    ascend_resolver = staticmethod(tuple)


def line_of(node: Node) -> int:
    return int(node.start_mark.line) + 1


class _TooDeep(yaml.MarkedYAMLError):
    pass


class _TooMany(yaml.MarkedYAMLError):
    pass


# (ignore[misc]: the built-in standing in for ascend_resolver is typed unlike the method)
class _Loader(_FastResolve, yaml.SafeLoader):  # type: ignore[misc]
    """PyYAML's pure-Python loader, holding nesting to MAX_DEPTH."""

    yaml_implicit_resolvers = _RESOLVERS

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise _TooDeep(None, None, f"nesting deeper than {MAX_DEPTH} levels", mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


_FastLoader: type | None = None
if getattr(yaml, "__with_libyaml__", False):

    class _CLoader(_FastResolve, yaml.CSafeLoader):  # type: ignore[misc]
        yaml_implicit_resolvers = _RESOLVERS

    _FastLoader = _CLoader


# ------------------------------------------------------------------ the file


def read_file(path: str) -> str:
    """The text of a schedules file; a ConfigError if it cannot be what we parse."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0)
    try:
        # Non-blocking: opening a FIFO for reading would otherwise wait for a writer.
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise _refused(path, 1, "file not found") from None
    except OSError as exc:
        raise _refused(path, 1, f"cannot read file: {exc.strerror or type(exc).__name__}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = _kind(info.st_mode)
            raise _refused(path, 1, f"cannot read file: it is {kind}, not a regular file")
        if info.st_size > MAX_FILE_BYTES:
            raise _too_large(path)
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise _refused(path, 1, f"cannot read file: {exc.strerror or type(exc).__name__}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:  # it grew while we read
        raise _too_large(path)
    return decode(data, path)


def _too_large(path: str) -> ConfigError:
    size = MAX_FILE_BYTES // (1024 * 1024)
    return _refused(path, 1, f"file is larger than {size} MB, the most cronwork reads")


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a socket" if stat.S_ISSOCK(mode) else "not a file"


def decode(data: bytes, file: str) -> str:
    """UTF-8 text (a leading byte order mark dropped); a bad byte is named at its line."""
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - data.rfind(b"\n", 0, exc.start)
        raise _refused(
            file,
            line,
            f"cannot read file: not valid UTF-8 (byte 0x{data[exc.start]:02x} at column "
            f"{column}); save it as UTF-8",
        ) from None


def _refused(file: str, line: int, message: str) -> ConfigError:
    return ConfigError([Problem(file, line, None, message)])


# ------------------------------------------------------------------ the node tree


@contextmanager
def no_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while building a large tree.

    A tree of a million nodes triggers collection after collection, each walking every
    object built so far: a 6 MB file took 14 s to compose instead of 3. Nothing built
    here holds a reference cycle that must be collected early.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def compose(text: str, file: str) -> Node | None:
    """The node tree of ``text`` (None for an empty file); invalid YAML is a ConfigError."""
    if _FastLoader is not None:
        try:
            return _compose_with(_FastLoader, text)
        except yaml.YAMLError as exc:
            if len(text) > DIAGNOSE_MAX_CHARS:
                raise ConfigError([_yaml_problem(exc, text, file)]) from None
    try:
        return _compose_with(_Loader, text)
    except yaml.YAMLError as exc:
        raise ConfigError([_yaml_problem(exc, text, file)]) from None


def _compose_with(loader_class: type, text: str) -> Node | None:
    loader = loader_class(text)
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()


#: Syntax errors that are about something opened earlier: the opening is the news.
_OPENERS = {
    "while scanning a quoted scalar": "a quoted value",
    "while scanning a double-quoted scalar": "a quoted value",
    "while scanning a single-quoted scalar": "a quoted value",
    "while parsing a flow sequence": "a '[' list",
    "while parsing a flow mapping": "a '{' mapping",
}


def _yaml_problem(exc: yaml.YAMLError, text: str, file: str) -> Problem:
    if isinstance(exc, yaml.reader.ReaderError):
        # A character YAML does not allow (NUL, most control characters): no mark, a position.
        position = exc.position if isinstance(exc.position, int) else 0
        line = text.count("\n", 0, position) + 1
        code = exc.character if isinstance(exc.character, int) else 0
        return Problem(
            file,
            line,
            None,
            f"invalid YAML: character #x{code:04x} is not allowed ({exc.reason}); "
            'write it as an escape in a double-quoted string, e.g. "\\t"',
        )
    if not isinstance(exc, yaml.MarkedYAMLError):
        return Problem(file, 1, None, f"invalid YAML: {exc}")
    if isinstance(exc, _TooDeep | _TooMany):
        # Our limits, not a syntax error: said as the walker says them.
        line = exc.problem_mark.line + 1 if exc.problem_mark is not None else 1
        return Problem(file, line, None, exc.problem or "")
    start, found = exc.context_mark, exc.problem_mark
    opened = _OPENERS.get(exc.context or "")
    at_end = "end of stream" in (exc.problem or "") or "<stream end>" in (exc.problem or "")
    if at_end:
        # An unclosed quote or bracket is found where the file ends; the line to fix is
        # where it was opened.
        if opened == "a quoted value" and start is not None:
            unclosed: tuple[int, str] | None = (start.line, opened)
        else:
            unclosed = _unclosed_flow(text)
        if unclosed is not None:
            message = f"invalid YAML: {unclosed[1]} starts here and is never closed"
            return Problem(file, unclosed[0] + 1, None, message)
    if opened and start is not None and found is not None and found.line > start.line:
        return Problem(
            file,
            start.line + 1,
            None,
            f"invalid YAML: {opened} starts here and is not closed where expected "
            f"({exc.problem} at line {found.line + 1})",
        )
    mark = found or start
    line = mark.line + 1 if mark is not None else 1
    parts = [p for p in (exc.context, exc.problem) if p]
    message = "invalid YAML: " + ", ".join(parts) if parts else "invalid YAML"
    if "alias" in message:
        # `cron: */5 * * * *` unquoted reads as a YAML alias; the raw error is baffling.
        message += " (a value starting with '*' must be quoted, e.g. cron: \"*/5 * * * *\")"
    return Problem(file, line, None, message)


def _unclosed_flow(text: str) -> tuple[int, str] | None:
    """(line, what) of the innermost '[' or '{' still open at the end of ``text``."""
    if len(text) > DIAGNOSE_MAX_CHARS:
        return None  # PyYAML's scanner is too slow to ask about a large file
    stack: list[yaml.Token] = []
    try:
        for token in yaml.scan(text, Loader=yaml.SafeLoader):
            if isinstance(token, yaml.FlowSequenceStartToken | yaml.FlowMappingStartToken):
                stack.append(token)
            elif isinstance(token, yaml.FlowSequenceEndToken | yaml.FlowMappingEndToken) and stack:
                stack.pop()
    except yaml.YAMLError:
        pass  # the tokens before the error are what matters
    if not stack:
        return None
    token = stack[-1]
    what = "a '[' list" if isinstance(token, yaml.FlowSequenceStartToken) else "a '{' mapping"
    return token.start_mark.line, what

"""YAML nodes with file, line and field path, for the scenario loader's error messages.

Private helper of :mod:`livemig.core.scenario`. Documents are *composed* (never
constructed) with PyYAML's safe loader, so every key and value keeps its line,
and scalars are turned into Python values here, by tag, for the plain YAML types
only (str, int, float, bool, null). Any other tag (``!!python/...``,
``!!timestamp``, ``!!binary``, custom ``!tags``) is an error.

Composing is fast: libyaml (PyYAML's ``CSafeLoader``) does it when PyYAML has it,
with the cyclic garbage collector paused (the node tree of a 20,000-VM file is some
300,000 objects that it would otherwise scan again and again) and the tags of plain
scalars resolved once per distinct text. libyaml and PyYAML's own parser disagree on
some inputs (libyaml accepts a tab after ``key:`` or ``{a: b?c}``; their
error messages differ), so text that libyaml rejects, or that holds what they may read
differently (:func:`_libyaml_may_differ`, :func:`_differs_in_tree`: tabs, ``?``,
explicit tags, nesting deeper than :data:`FAST_MAX_DEPTH`, ...), is composed by
PyYAML's ``SafeLoader`` as before, and its messages and limits (``nested too deeply``)
are the ones reported. Nodes are the same either way (tests/test_yaml_fast.py compares
them), except that libyaml gives a plain scalar the style ``''`` where PyYAML gives
``None`` (test ``not style``) and may end a collection on another line (end marks are
not used).
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import gc
import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NoReturn

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .units import (
    UnitError,
    format_bytes,
    format_duration,
    parse_bytes,
    parse_duration,
    parse_rate,
)

TAG = "tag:yaml.org,2002:"
_STR = TAG + "str"
_SCALAR_TYPES = {TAG + "str", TAG + "int", TAG + "float", TAG + "bool", TAG + "null"}
_CONSTRUCT = SafeConstructor()  # stateless use: only its scalar construct_yaml_* methods
_SHOW_MAX = 40
_EXPONENT = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+")
_QUANTITY_KINDS = {"parse_bytes": "size", "parse_rate": "rate", "parse_duration": "duration"}
MAX_SECONDS = 1e9
"""The largest time or duration of a scenario (about 31.7 years): beyond it, float
seconds no longer resolve the microseconds a migration's timings need."""


class ScenarioError(ValueError):
    """A scenario that cannot be loaded.

    ``str(err)`` is one line, ``FILE:LINE: FIELD.PATH: problem; expected ...``; the parts
    are kept as ``source``, ``line`` (1-based), ``path`` ('' for the document) and ``problem``.
    """

    def __init__(self, source: str, line: int, path: str, problem: str) -> None:
        self.source, self.line, self.path, self.problem = source, line, path, problem
        where = f"{source}:{line}: " + (f"{path}: " if path else "")
        text = where + problem
        super().__init__(" ".join(part.strip() for part in text.splitlines()))


def decode_yaml_text(data: bytes, source: str,
                     error: type[ScenarioError] = ScenarioError) -> str:
    """A YAML file's bytes as text; ``error`` at the line of the first byte that is not UTF-8.

    >>> decode_yaml_text(b"a: 1\\n", "x.yaml")
    'a: 1\\n'
    >>> try:
    ...     decode_yaml_text(b"a: 1\\nb: \\xff\\n", "x.yaml")
    ... except ScenarioError as err:
    ...     print(err)
    x.yaml:2: not UTF-8 text; expected a YAML file
    """
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise error(source, line, "", "not UTF-8 text; expected a YAML file") from None


def show(value: object) -> str:
    """A value for a message: ``repr`` of strings (shortened), plain text of the rest."""
    if isinstance(value, str):
        if len(value) > _SHOW_MAX:
            value = value[: _SHOW_MAX - 3] + "..."
        return repr(value)
    return str(value).lower() if isinstance(value, bool) else str(value)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``" (did you mean 'RamFilter'?)"`` when a choice is close to ``word``, else ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {show(close[0])}?)" if close else ""


FAST_MAX_DEPTH = 100
"""Documents with collections nested deeper are composed by PyYAML's pure-Python parser,
which reports ``nested too deeply`` where Python's recursion limit stops it (some 300 to
500 levels; libyaml itself stops at 1,000)."""
_EMPTY = object()  # the fast path's "no document" (None means: use the slow path)


def compose(text: str, source: str) -> Node | None:
    """Compose one YAML document; syntax errors become :class:`ScenarioError` with a line."""
    node = _compose_fast(text)
    if node is not None:
        return None if node is _EMPTY else node
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark is not None else 1
        what = str(err.problem or err.context or "invalid YAML")
        if err.context and err.problem:
            what += f" ({err.context})"
        raise ScenarioError(source, line, "", f"YAML syntax error: {what}") from None
    except yaml.reader.ReaderError as err:
        line = text.count("\n", 0, max(err.position, 0)) + 1
        code = ord(err.character) if isinstance(err.character, str) else err.character
        problem = f"YAML cannot read this text: {err.reason} (character #x{code:02x})"
        raise ScenarioError(source, line, "", problem) from None
    except yaml.YAMLError as err:  # pragma: no cover - PyYAML marks all its errors today
        raise ScenarioError(source, 1, "", f"YAML error: {err}") from None
    except RecursionError:
        raise ScenarioError(source, 1, "", "YAML nested too deeply") from None


_CLoader: type | None = getattr(yaml, "CSafeLoader", None)


if _CLoader is not None:

    class _FastLoader(_CLoader):  # type: ignore[misc,valid-type]
        """libyaml's composer, the tags of plain scalars cached (see the module doc)."""

        def __init__(self, text: str) -> None:
            super().__init__(text)
            self.tags: dict[str, str] = {}

        def resolve(self, kind: type, value: str, implicit: tuple[bool, bool]) -> str:
            """As PyYAML's: a plain scalar's tag depends on its text alone (no path
            resolvers), so each distinct text is resolved once. A scalar tagged ``!``
            (libyaml: neither implicit flag) is resolved as a plain one, as PyYAML does."""
            if kind is not ScalarNode or not (implicit[0] or not implicit[1]):
                return super().resolve(kind, value, implicit)
            tag = self.tags.get(value)
            if tag is None:
                tag = self.tags[value] = super().resolve(kind, value, (True, False))
            return tag


def _differs_in_tree(root: Node) -> bool:
    """Is the tree deeper than :data:`FAST_MAX_DEPTH` collections, or does a ``[...]``
    or ``{...}`` hold an empty value (libyaml may give it the line of the next token) or
    a plain scalar with a ``?`` (libyaml lets it hold one; PyYAML ends it there)?

    One pass over the nodes, in document order, each collection once (an alias is
    met after its anchor, so a collection's depth is where it is written).
    """
    seen: set[int] = set()
    stack = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if type(node) is ScalarNode or id(node) in seen:
            continue
        seen.add(id(node))
        if depth > FAST_MAX_DEPTH:
            return True
        below = depth + 1
        children = node.value if type(node) is SequenceNode else \
            [child for pair in node.value for child in pair]
        if node.flow_style and any(type(c) is ScalarNode and not c.style
                                   and (not c.value or "?" in c.value) for c in children):
            return True
        stack.extend((child, below) for child in reversed(children)
                     if type(child) is not ScalarNode)
    return False


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector (reference counting still frees everything).

    While a big document is read, the collector would scan its node tree, which only
    grows, over and over (more than half of the loading time of a 20,000-VM file).
    Nodes and scenario records hold no reference cycles; with aliases a node may refer
    to itself, and such a tree waits for the next collection after the pause.
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


_BLOCK_HEADER_COMMENT = re.compile(r"[|>][-+0-9]*#")  # `key: |#`: PyYAML wants a space
_TAG_START = re.compile(r"(?:^|[\s\[\]{},:?-])!", re.MULTILINE)


def _libyaml_may_differ(text: str) -> bool:
    """Does ``text`` hold something libyaml reads otherwise than PyYAML's own parser?

    Found by composing random YAML-like text with both (tests/test_yaml_fast.py):
    tabs, the line breaks NEL/LS/PS and a lone CR, a byte-order mark after the start,
    a block scalar header followed by ``#``, explicit tags (libyaml accepts tag
    characters PyYAML refuses), and text without a final newline (at its end libyaml
    puts an empty node on the next line). Checked in C-speed scans; after composing,
    :func:`_differs_in_tree` looks for the rest.
    """
    if not text.endswith("\n") or text.find("\ufeff", 1) != -1:
        return True
    if any(char in text for char in "\t\x85\u2028\u2029"):
        return True
    if "\r" in text and text.count("\r") != text.count("\r\n"):
        return True
    if ("|" in text or ">" in text) and _BLOCK_HEADER_COMMENT.search(text):
        return True
    return "!" in text and _TAG_START.search(text) is not None


def _compose_fast(text: str) -> Node | object | None:
    """The document composed by libyaml (:data:`_EMPTY` for none), or None when the
    pure-Python composer must do it: no libyaml, text or a tree where they may differ
    (:func:`_libyaml_may_differ`, :func:`_differs_in_tree`), any error."""
    if _CLoader is None or _libyaml_may_differ(text):
        return None
    with gc_paused():
        loader = _FastLoader(text)
        try:
            node = loader.get_single_node()
        except Exception:  # noqa: BLE001 - a syntax error...: the slow path says which
            return None
        finally:
            loader.dispose()
        if node is None:
            return _EMPTY
        return None if _differs_in_tree(node) else node


class Field:
    """A node, the field path that leads to it and the file it is in."""

    __slots__ = ("node", "path", "source")

    def __init__(self, node: Node, path: str, source: str) -> None:
        self.node, self.path, self.source = node, path, source

    @property
    def line(self) -> int:
        return self.node.start_mark.line + 1

    def at(self, key: str | int, node: Node) -> Field:
        """The field ``key`` (a mapping key or a list index) below this one."""
        if isinstance(key, int):
            return Field(node, f"{self.path}[{key}]", self.source)
        return Field(node, f"{self.path}.{key}" if self.path else key, self.source)

    def fail(self, problem: str) -> NoReturn:
        raise ScenarioError(self.source, self.line, self.path, problem)

    def wrong(self, expected: str) -> NoReturn:
        """Fail with ``<value> is not valid here; expected <expected>``."""
        self.fail(f"{self.describe()} is not valid here; expected {expected}")

    def describe(self) -> str:
        if isinstance(self.node, MappingNode):
            return "a mapping"
        if isinstance(self.node, SequenceNode):
            return "a list"
        value = self.node.value
        if self.node.tag == TAG + "str":
            return show(value)
        if not value:
            return "an empty value"  # `key:` with nothing after it (null)
        return value if len(value) <= _SHOW_MAX else value[: _SHOW_MAX - 3] + "..."

    # -- scalars -----------------------------------------------------------------------

    def check_tag(self, expected: str) -> None:
        """Only the plain YAML types are accepted: no ``!!python/...``, ``!!set``, ``!custom``."""
        tag = self.node.tag
        if tag not in _SCALAR_TYPES and tag not in (TAG + "seq", TAG + "map"):
            self.fail(f"unsupported YAML tag {show(tag)}; expected {expected}")

    def scalar(self, expected: str) -> object:
        """The Python value of a plain scalar (str, int, float, bool or None)."""
        node = self.node
        if node.tag == _STR and type(node) is ScalarNode:
            return node.value  # what construct_yaml_str returns, without its two calls
        self.check_tag(expected)
        if not isinstance(node, ScalarNode):
            self.wrong(expected)
        builder = getattr(_CONSTRUCT, "construct_yaml_" + node.tag.removeprefix(TAG))
        try:
            return builder(node)
        except (ValueError, TypeError, OverflowError):
            self.wrong(expected)

    def text(self, expected: str = "a string", *, null: bool = False) -> str | None:
        value = self.scalar(expected)
        if value is None and null:
            return None
        if not isinstance(value, str):
            hint = f" (quote it: '{self.node.value}')" if isinstance(self.node, ScalarNode) else ""
            self.fail(f"{self.describe()} is not a string; expected {expected}{hint}")
        if not value.strip():
            self.fail(f"empty string; expected {expected}")
        return value

    def boolean(self) -> bool:
        value = self.scalar("true or false")
        if not isinstance(value, bool):
            self.wrong("true or false")
        return value

    def integer(self, minimum: int | None = None, maximum: int | None = None) -> int:
        expected = "an integer" + (f" >= {minimum}" if minimum is not None else "")
        if maximum is not None:
            expected += f" and <= {maximum}"
        value = self.scalar(expected)
        if isinstance(value, bool) or not isinstance(value, int):
            self.wrong(expected)
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            self.fail(f"{value} is out of range; expected {expected}")
        return value

    def number(self, *, positive: bool = False, limit: float | None = None) -> float:
        """A finite number (> 0 when ``positive``; ``|x| <= limit`` when given)."""
        expected = "a number" + (" > 0" if positive else "")
        if limit is not None:
            expected += f" and <= {limit:g}" if positive else f" from {-limit:g} to {limit:g}"
        value = self.scalar(expected)
        if isinstance(value, str) and not self.node.style and _EXPONENT.fullmatch(value):
            value = float(value)  # 1e3, 2.5e-1: YAML 1.1 reads them as text, not floats
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.wrong(expected)
        try:
            result = float(value)
        except OverflowError:
            self.wrong(expected)
        too_large = limit is not None and abs(result) > limit
        if not math.isfinite(result) or (positive and result <= 0) or too_large:
            self.fail(f"{self.describe()} is out of range; expected {expected}")
        return result

    def quantity(self, parse: Callable[..., float], **sign: bool) -> float:
        """A unit string through one of :mod:`units`' parsers (``positive=True`` etc.)."""
        value = self.scalar("a quantity with a unit")
        try:
            return parse(value, **sign)
        except UnitError as err:
            expected = err.expected
            if not expected:  # a sign error: say what is expected instead
                kind = _QUANTITY_KINDS.get(getattr(parse, "__name__", ""), "quantity")
                bound = " > 0" if sign.get("positive") else " >= 0" if sign else ""
                expected = f"a {kind}{bound}"
            self.fail(f"{self.describe()} {err.problem}; expected {expected}")

    # -- collections -------------------------------------------------------------------

    def items(self, expected: str = "a list") -> Iterator[tuple[int, Field]]:
        """``(index, field)`` for each entry of a list."""
        self.check_tag(expected)
        if not isinstance(self.node, SequenceNode):
            self.wrong(expected)
        for index, child in enumerate(self.node.value):
            yield index, self.at(index, child)

    def mapping(
        self, allowed: Iterable[str], expected: str = "", hints: dict[str, str] | None = None
    ) -> Mapping:
        return Mapping(self, tuple(allowed), expected, hints or {})


Reader = Callable[[Field], Any]


def size(maximum: int | None = None, **sign: bool) -> Reader:
    """A reader of byte sizes (``positive=True`` / ``non_negative=True`` as in :mod:`units`),
    at most ``maximum`` bytes when given."""

    def read(f: Field) -> int:
        value = int(f.quantity(parse_bytes, **sign))
        if maximum is not None and value > maximum:
            f.fail(f"{f.describe()} is too large; expected a size <= {format_bytes(maximum)}")
        return value

    return read


def rate(**sign: bool) -> Reader:
    return lambda f: f.quantity(parse_rate, **sign)


def duration(minimum: float | None = None, **sign: bool) -> Reader:
    """A reader of durations in seconds, at most :data:`MAX_SECONDS`, at least
    ``minimum`` when given."""

    def read(f: Field) -> float:
        value = f.quantity(parse_duration, **sign)
        if value > MAX_SECONDS:
            limit = f"{MAX_SECONDS:.0e}".replace("e+0", "e")  # 1e9
            f.fail(f"{f.describe()} is too large; expected a duration <= {limit}s "
                   "(about 31 years)")
        if minimum is not None and value < minimum:
            f.fail(f"{f.describe()} is too small; expected a duration >= "
                   f"{format_duration(minimum)}")
        return value

    return read


def integer(minimum: int | None = None, maximum: int | None = None) -> Reader:
    return lambda f: f.integer(minimum, maximum)


def number(*, positive: bool = False, limit: float | None = None) -> Reader:
    return lambda f: f.number(positive=positive, limit=limit)


def string(expected: str) -> Reader:
    return lambda f: f.text(expected)


def boolean(f: Field) -> bool:
    return f.boolean()


def choice(choices: Iterable[str], what: str, convert: Callable[[str], Any] = str) -> Reader:
    """A reader of one of ``choices`` ("unknown heuristic 'bestfit' (did you mean ...)")."""
    names = tuple(choices)

    def read(f: Field) -> Any:
        value = f.text(f"one of {', '.join(names)}")
        if value not in names:
            f.fail(
                f"unknown {what} {show(value)}{did_you_mean(value, names)}; "
                f"expected one of {', '.join(names)}"
            )
        return convert(value)

    return read


@functools.lru_cache(maxsize=256)
def _known_keys(allowed: tuple[str, ...]) -> frozenset[str]:
    return frozenset(allowed)


class Mapping:
    """The keys of a YAML mapping, checked: strings, no duplicates, none unknown.

    Merge keys (``<<: *anchor`` or ``<<: [*a, *b]``) are applied as YAML 1.1 says:
    keys written in the mapping win over merged ones. ``hints`` maps a wrong key to
    advice used instead of the "did you mean" guess.
    """

    def __init__(
        self, field: Field, allowed: tuple[str, ...], expected: str, hints: dict[str, str]
    ) -> None:
        self.field = field
        node = field.node
        expected = expected or "a mapping with keys " + ", ".join(a for a in allowed if a != "x-*")
        field.check_tag(expected)
        if not isinstance(node, MappingNode):
            field.wrong(expected)
        self.entries: dict[str, tuple[Node, Node]] = {}
        self._collect(node, set())
        known = _known_keys(allowed)
        for key, (key_node, _) in self.entries.items():
            if key not in known and not (key.startswith("x-") and "x-*" in known):
                hint = hints.get(key) or did_you_mean(key, allowed).strip()
                hint = f" {hint}" if hint else ""
                shown = ", ".join(name for name in allowed if name != "x-*")
                Field(key_node, field.path, field.source).fail(
                    f"unknown key {show(key)}{hint}; expected one of {shown}"
                )

    def _collect(self, node: MappingNode, seen: set[int]) -> None:
        """Add the keys of ``node`` then those it merges; the first one added wins."""
        if id(node) in seen:
            return  # merged twice, or an anchor merged into itself
        seen.add(id(node))
        own: dict[str, tuple[Node, Node]] = {}
        merges: list[Node] = []
        for key_node, value_node in node.value:
            if key_node.tag != _STR or type(key_node) is not ScalarNode:
                if key_node.tag == TAG + "merge":
                    merges.append(value_node)
                    continue
                key_field = Field(key_node, self.field.path, self.field.source)
                key_field.fail(f"key {key_field.describe()} is not a string; expected a name")
            key = key_node.value
            if key in own:
                first = own[key][0].start_mark.line + 1
                Field(key_node, self.field.path, self.field.source).fail(
                    f"duplicate key {show(key)} (first at line {first})")
            own[key] = (key_node, value_node)
        for key, entry in own.items():
            self.entries.setdefault(key, entry)
        for value_node in merges:
            sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
            for source in sources:
                if not isinstance(source, MappingNode):
                    Field(source, self.field.path, self.field.source).wrong(
                        "a mapping (or a list of mappings) to merge with <<"
                    )
                self._collect(source, seen)

    def read(self, readers: dict[str, Reader]) -> dict[str, Any]:
        """``{key: read(field)}`` for the keys of ``readers`` that are present."""
        entries, field = self.entries, self.field
        return {key: read(field.at(key, entries[key][1]))
                for key, read in readers.items() if key in entries}

    def value(self, key: str, read: Reader, default: Any) -> Any:
        """``read`` the field ``key``, or ``default`` when it is absent."""
        f = self.get(key)
        return default if f is None else read(f)

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def get(self, key: str) -> Field | None:
        entry = self.entries.get(key)
        return None if entry is None else self.field.at(key, entry[1])

    def key_field(self, key: str) -> Field:
        """The field of the key itself (its line), for errors about the key's presence."""
        return self.field.at(key, self.entries[key][0])

    def require(self, key: str, expected: str) -> Field:
        value = self.get(key)
        if value is None:
            self.field.fail(f"missing key {key!r}; expected {expected}")
        return value

    def only_one_of(self, *keys: str) -> str | None:
        """The single key of ``keys`` present, None if none; an error if several are."""
        present = [key for key in keys if key in self.entries]
        if len(present) > 1:
            Field(self.entries[present[1]][0], self.field.path, self.field.source).fail(
                f"{' and '.join(map(repr, present))} cannot be used together; expected one of them"
            )
        return present[0] if present else None


_NAME_CHARS = re.compile(r"[^\s/%]+")
_INVISIBLE = frozenset(("Cc", "Cf", "Zl", "Zp"))  # controls, format (bidi overrides), separators


def check_visible(field: Field, value: str, what: str) -> str:
    """Names hold no control, format or line-separator characters (NUL, ESC, U+202E ...).

    They would garble terminals, files and plots, or show a name other than the real one.
    """
    if value.isprintable():  # no character of those categories (nor Cs, Co, Cn, Zs)
        return value
    for char in value:
        if unicodedata.category(char) in _INVISIBLE:
            field.fail(f"{show(value)} contains the invisible character U+{ord(char):04X} "
                       f"({unicodedata.name(char, 'a control character')}); expected a {what} "
                       "name of visible characters")
    return value


def check_name(field: Field, value: str, what: str) -> str:
    """Names of hosts, VMs and racks: no whitespace, '/' or '%' (they go into URIs and paths),
    nor invisible characters (:func:`check_visible`)."""
    check_visible(field, value, what)
    if not _NAME_CHARS.fullmatch(value):
        field.fail(f"{show(value)} is not a valid {what} name; expected no spaces, '/' or '%'")
    return value

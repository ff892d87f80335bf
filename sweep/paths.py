"""Field paths of a scenario file, set on its YAML nodes.

A sweep's axis names a field by its path in the scenario file:
``policy.scheduler.heuristic``, ``network.host_link``, ``until``. A list is entered
with a selector: ``vms[0]`` (by index), ``vms[web-]`` (the entries whose ``name`` or
``prefix`` is ``web-``) or ``vms[*]`` (every entry): ``vms[*].dirty_rate``.

:func:`set_path` returns a new document in which the field holds the given node; the
nodes on the way are copied, never changed in place, so a node shared through a YAML
alias (``<<: *small``) keeps its value elsewhere. A key that is not written is added
(a field left to its default, or a mapping such as ``policy.scheduler`` not written
at all); whether it is a field of the schema is the scenario loader's to say.

>>> import yaml
>>> doc = yaml.compose("policy: {migration: {bandwidth: 0}}\\nvms: [{name: a}, {name: b}]")
>>> new = set_path(doc, "vms[b].ram", yaml.compose("4GiB"))
>>> new = set_path(new, "policy.scheduler.heuristic", yaml.compose("first_fit"))
>>> print(yaml.serialize(new).strip())
policy: {migration: {bandwidth: 0}, scheduler: {heuristic: first_fit}}
vms: [{name: a}, {name: b, ram: 4GiB}]
>>> print(yaml.serialize(doc).strip())  # the original is unchanged
policy: {migration: {bandwidth: 0}}
vms: [{name: a}, {name: b}]
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

TAG = "tag:yaml.org,2002:"
_SEGMENT = re.compile(r"([^.\[\]]+)((?:\[[^\[\]]*\])*)")
_SELECTOR = re.compile(r"\[([^\[\]]*)\]")
ENTRY_NAME_KEYS = ("name", "prefix")


class PathError(ValueError):
    """A path that is not well formed, or does not lead to a field of this document."""


@dataclass(frozen=True)
class Step:
    """One key of a path and the list selectors after it (``vms[0]``: ``vms``, ``('0',)``)."""

    key: str
    selectors: tuple[str, ...] = ()


def parse_path(path: str) -> tuple[Step, ...]:
    """``"vms[web-].dirty_rate"`` -> its steps; a ``PathError`` if it is not well formed.

    >>> [(s.key, s.selectors) for s in parse_path("vms[web-].dirty_rate")]
    [('vms', ('web-',)), ('dirty_rate', ())]
    >>> try:
    ...     parse_path("policy..heuristic")
    ... except PathError as err:
    ...     print(err)
    'policy..heuristic' is not a field path; expected KEY.KEY... with [INDEX], [NAME] or [*] \
after a list's key, e.g. vms[*].dirty_rate
    """
    steps: list[Step] = []
    position = 0
    while True:
        match = _SEGMENT.match(path, position)
        if match is None or any(not s.strip() for s in _SELECTOR.findall(match.group(2))):
            raise PathError(f"{path!r} is not a field path; expected KEY.KEY... with [INDEX], "
                            "[NAME] or [*] after a list's key, e.g. vms[*].dirty_rate")
        key = match.group(1)
        if key != key.strip():
            raise PathError(f"{path!r}: the key {key!r} has spaces around it; expected "
                            "KEY.KEY...")
        steps.append(Step(key, tuple(_SELECTOR.findall(match.group(2)))))
        position = match.end()
        if position == len(path):
            return tuple(steps)
        if path[position] != "." or position + 1 == len(path):
            raise PathError(f"{path!r} is not a field path; expected KEY.KEY... with [INDEX], "
                            "[NAME] or [*] after a list's key, e.g. vms[*].dirty_rate")
        position += 1


def overlap(a: str, b: str) -> bool:
    """Does one path lead into (or to) the other's field?

    >>> overlap("policy.migration", "policy.migration.bandwidth"), overlap("vms", "vms_x")
    (True, False)
    """
    return a == b or b.startswith(a + ".") or b.startswith(a + "[") or a.startswith(b + ".") \
        or a.startswith(b + "[")


def set_path(root: Node, path: str, value: Node) -> Node:
    """A copy of the document ``root`` whose field ``path`` holds ``value``."""
    steps = parse_path(path)
    return _set(root, steps, value, "")


def _set(node: Node, steps: tuple[Step, ...], value: Node, where: str) -> Node:
    step, rest = steps[0], steps[1:]
    if not isinstance(node, MappingNode):
        raise PathError(f"{where or 'the document'} is {_kind(node)}, not a mapping; expected "
                        f"a mapping with the key {step.key!r}")
    here = f"{where}.{step.key}" if where else step.key
    copy = MappingNode(node.tag, list(node.value), node.start_mark, node.end_mark,
                       node.flow_style)
    index, current = _find(node, step.key)
    if not step.selectors and not rest:
        new = value
    else:
        if current is None:
            if step.selectors:
                raise PathError(f"{here} is not written in this scenario; expected a list to "
                                f"select [{step.selectors[0]}] from")
            current = MappingNode(TAG + "map", [], node.start_mark, node.end_mark, True)
        new = _select(current, step.selectors, rest, value, here)
    if index is None:
        key_node = ScalarNode(TAG + "str", step.key, node.start_mark, node.end_mark)
        copy.value.append((key_node, new))
    else:
        copy.value[index] = (copy.value[index][0], new)
    return copy


def _select(node: Node, selectors: tuple[str, ...], rest: tuple[Step, ...], value: Node,
            where: str) -> Node:
    if not selectors:
        return _set(node, rest, value, where) if rest else value
    selector = selectors[0]
    if not isinstance(node, SequenceNode):
        raise PathError(f"{where} is {_kind(node)}, not a list; expected a list to select "
                        f"[{selector}] from")
    chosen = _chosen(node, selector, where)
    copy = SequenceNode(node.tag, list(node.value), node.start_mark, node.end_mark,
                        node.flow_style)
    for i in chosen:
        copy.value[i] = _select(node.value[i], selectors[1:], rest, value, f"{where}[{i}]")
    return copy


def _chosen(node: SequenceNode, selector: str, where: str) -> list[int]:
    """The indexes of the entries of ``node`` that ``selector`` picks (at least one)."""
    entries = node.value
    if selector == "*":
        if not entries:
            raise PathError(f"{where} is an empty list; expected entries for [*]")
        return list(range(len(entries)))
    if re.fullmatch(r"-?[0-9]+", selector):
        i = int(selector)
        if not 0 <= i < len(entries):
            raise PathError(f"{where}[{i}]: no such entry; expected an index from 0 to "
                            f"{len(entries) - 1}")
        return [i]
    names = [_entry_name(entry) for entry in entries]
    chosen = [i for i, name in enumerate(names) if name == selector]
    if not chosen:
        known = ", ".join(n for n in names if n is not None) or "none"
        raise PathError(f"{where}[{selector}]: no entry has name or prefix {selector!r}; "
                        f"expected one of {known}, an index or *")
    return chosen


def _entry_name(entry: Node) -> str | None:
    """The ``name`` (or ``prefix``) a list entry is written with."""
    for key in ENTRY_NAME_KEYS:
        _, found = _find(entry, key) if isinstance(entry, MappingNode) else (None, None)
        if isinstance(found, ScalarNode):
            return str(found.value)
    return None


def _find(node: MappingNode, key: str) -> tuple[int | None, Node | None]:
    """``(index of the own entry, value)`` of ``key``: written in ``node``, or merged into it
    with ``<<`` (then the index is None: the key is added to ``node`` itself)."""
    for index, (key_node, value_node) in enumerate(node.value):
        if isinstance(key_node, ScalarNode) and key_node.tag == TAG + "str" \
                and key_node.value == key:
            return index, value_node
    for key_node, value_node in node.value:
        if key_node.tag != TAG + "merge":
            continue
        sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
        for source in sources:
            if isinstance(source, MappingNode):
                _, found = _find(source, key)
                if found is not None:
                    return None, found
    return None, None


def _kind(node: Node) -> str:
    if isinstance(node, SequenceNode):
        return "a list"
    if isinstance(node, MappingNode):
        return "a mapping"
    return f"the value {node.value!r}"

"""The fast YAML path (libyaml) composes exactly what PyYAML's own parser composes.

core/yaml_nodes.py composes with libyaml when it can and hands the text to PyYAML's
pure-Python ``SafeLoader`` where the two may differ; these tests compare both on the
shipped files, on inputs where they were found to differ, and on random YAML-like text
and mutated scenario files (derandomized). Nodes are compared by type, tag, value,
start line and the sharing of aliased nodes; a plain scalar's style (libyaml ``''``,
PyYAML ``None``) and end marks (not used for messages) are not compared.
"""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yaml.nodes import Node, ScalarNode, SequenceNode

from livemig.core import yaml_nodes
from livemig.core.scenario import ScenarioError, parse_scenario

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted([*ROOT.glob("scenarios/*.yaml"), *ROOT.glob("profiles/*.yaml")])
needs_libyaml = pytest.mark.skipif(not yaml.__with_libyaml__,
                                   reason="PyYAML without libyaml: only the slow path exists")


def shape(node: Node | None, seen: dict[int, int] | None = None) -> object:
    """What the loader reads of a node tree (see the module docstring)."""
    if node is None:
        return None
    seen = {} if seen is None else seen
    if id(node) in seen:
        return ("alias", seen[id(node)])
    seen[id(node)] = len(seen)
    head = (type(node).__name__, node.tag, node.start_mark.line)
    if isinstance(node, ScalarNode):
        return (*head, node.value, node.style or None)
    if isinstance(node, SequenceNode):
        return (*head, tuple(shape(child, seen) for child in node.value))
    return (*head, tuple((shape(k, seen), shape(v, seen)) for k, v in node.value))


def pure(text: str) -> object:
    """PyYAML's own composition of ``text``: its shape, or the error's class."""
    try:
        return shape(yaml.compose(text, Loader=yaml.SafeLoader))
    except RecursionError:
        return "RecursionError"
    except yaml.YAMLError as err:
        return type(err).__name__


def loaded(text: str) -> object:
    """What :func:`yaml_nodes.compose` gives: the shape, or the error of the slow path."""
    try:
        return shape(yaml_nodes.compose(text, "t.yaml"))
    except ScenarioError as err:
        return err.problem


def assert_same_as_pure(text: str) -> None:
    fast = yaml_nodes._compose_fast(text)
    if fast is not None:  # the fast path answered: PyYAML must agree
        assert shape(None if fast is yaml_nodes._EMPTY else fast) == pure(text), repr(text)


@needs_libyaml
@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_files_take_the_fast_path_and_compose_the_same(path: Path) -> None:
    text = path.read_text()
    fast = yaml_nodes._compose_fast(text)
    assert fast is not None and fast is not yaml_nodes._EMPTY
    assert shape(fast) == pure(text)


# Inputs on which libyaml and PyYAML were seen to differ (random text, mutated files).
DIVERGENT = [
    "a:\tb\n",  # libyaml accepts a tab after the colon
    "!\n",  # an empty scalar tagged '!': PyYAML resolves it (null), libyaml made it str
    "&b !\n",
    "{k: 1?-}\n",  # libyaml keeps '?' inside a plain scalar in a flow collection
    "[ba? - =]\n",
    "hosts:\n  - {na?me: host-b, ram: 64GiB, vcpus: 16}\n",
    "{k: \n}\n",  # an empty value in a flow mapping over two lines: another line
    "[a,\n  ,]\n",
    "|#\n",  # a block scalar header followed by '#' without a space
    "a: >+#b\n",
    "!~!!str no\n",  # tag characters PyYAML refuses
    "---",  # no final newline: libyaml puts the empty node on the next line
    "? !x ",
    "\r\n\ufeff\n",  # a byte-order mark after the start
    "? \x85\ufeff#x\n",  # NEL
    "a: b\u2028c: d\n",
    "a: b\rc: d\n",  # a lone CR
]


@pytest.mark.parametrize("text", DIVERGENT)
def test_where_libyaml_differs_the_result_is_pyyamls(text: str) -> None:
    expected, got = pure(text), loaded(text)
    if isinstance(expected, str):  # PyYAML refuses it: a YAML error, as before
        assert isinstance(got, str) and got.startswith("YAML"), (got, expected)
    else:
        assert got == expected


@pytest.mark.parametrize("text", DIVERGENT)
def test_where_libyaml_differs_the_slow_path_is_taken(text: str) -> None:
    assert yaml_nodes._compose_fast(text) is None


@needs_libyaml
@pytest.mark.parametrize("text", [
    "# why? because\nname: x\n",  # a '?' in a comment
    "uri: qemu+tls://%s/system?pkipath=/etc/pki\n",  # in a plain scalar, block context
    "hosts: [{uri: 'q?x'}, \"a?\"]\n",  # quoted, in flow collections
    "? a\n: b\n",  # an explicit key
])
def test_a_question_mark_outside_flow_plain_scalars_keeps_the_fast_path(text: str) -> None:
    fast = yaml_nodes._compose_fast(text)
    assert fast is not None and shape(fast) == pure(text)


def test_a_tab_after_a_colon_is_still_a_syntax_error() -> None:
    with pytest.raises(ScenarioError, match=r"^t\.yaml:6: YAML syntax error: .*'\\t'"):
        parse_scenario("hosts:\n  - {name: a, ram: 1GiB, vcpus: 1}\nvms:\n"
                       "  - {name: v, host: a, ram: 1GiB}\n"
                       "seed: 1\nname:\tx\n", "t.yaml")


@needs_libyaml
def test_deep_documents_get_pyyamls_answer() -> None:
    depth = yaml_nodes.FAST_MAX_DEPTH + 50  # PyYAML composes it; libyaml's path gives up
    text = "[" * depth + "]" * depth + "\n"
    assert yaml_nodes._compose_fast(text) is None
    assert loaded(text) == pure(text)
    shallow = "[" * 20 + "]" * 20 + "\n"
    assert yaml_nodes._compose_fast(shallow) is not None
    assert loaded(shallow) == pure(shallow)
    with pytest.raises(ScenarioError, match="nested too deeply"):
        yaml_nodes.compose("[" * 600, "t.yaml")


def test_anchors_aliases_and_merges_are_shared_as_in_pyyaml() -> None:
    text = ("x-small: &small {ram: 1GiB, vcpus: 1}\nhosts:\n  - {<<: *small, name: a}\n"
            "  - name: b\n    <<: *small\n    vcpus: 2\nloop: &l [1, *l]\n")
    assert loaded(text) == pure(text)
    assert_same_as_pure(text)


def test_a_big_file_reports_the_exact_line_of_a_bad_entry() -> None:
    lines = ["hosts:"] + [f"  - {{name: h{i}, ram: 64GiB, vcpus: 16}}" for i in range(100)]
    lines.append("vms:")
    for i in range(3000):
        lines += [f"  - name: v{i}", f"    host: h{i % 100}", "    ram: 1GiB"]
    bad = len(lines) - 3 * 1000 + 3  # the ram of VM 2000, 1-based
    assert lines[bad - 1] == "    ram: 1GiB" and lines[bad - 3] == "  - name: v2000"
    lines[bad - 1] = "    ram: 1 GB/s"
    with pytest.raises(ScenarioError) as err:
        parse_scenario("\n".join(lines) + "\n", "big.yaml")
    assert str(err.value).startswith(f"big.yaml:{bad}: vms[2000].ram: '1 GB/s' is not a size")


def test_gc_paused_restores_the_collector_even_on_errors() -> None:
    assert gc.isenabled()
    with pytest.raises(ScenarioError):
        parse_scenario("hosts: [\n", "t.yaml")
    assert gc.isenabled()
    gc.disable()
    try:
        with yaml_nodes.gc_paused():
            pass
        assert not gc.isenabled()  # it was off: it stays off
    finally:
        gc.enable()


# -- random inputs ---------------------------------------------------------------------

TOKENS = [
    "a", "b", "x1", "1", "0", "-1", "1.5", "1e3", "yes", "null", "~", ":", ": ", " ", "\n",
    "\n  ", "\n- ", "- ", "? ", "?", ",", "[", "]", "{", "}", '"', "'", "#", " #c", "&a ",
    "*a", "!", "!!str ", "!x ", "|", ">", "|-", ">+", "|2", "%YAML 1.1\n", "---", "...",
    "\r\n", "\r", "\t", "<<: ", "\u00e9", "\u2028", "\x85", "\ufeff", "\u00a0", "'it''s'",
    "key: value\n", "  k: v\n", "- {a: 1}\n", "[a, b]", ": |\n  text\n", "\n\n",
]
MUTATIONS = [*TOKENS, *" \n:-[]{},#&*!|>'\"?"]
SETTINGS = settings(derandomize=True, max_examples=400, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


@needs_libyaml
@SETTINGS
@given(st.lists(st.sampled_from(TOKENS), min_size=1, max_size=25), st.booleans())
def test_random_yaml_like_text(tokens: list[str], newline: bool) -> None:
    assert_same_as_pure("".join(tokens) + ("\n" if newline else ""))


@needs_libyaml
@SETTINGS
@given(st.sampled_from(SHIPPED), st.lists(
    st.tuples(st.floats(0, 1), st.sampled_from(["insert", "delete"]),
              st.sampled_from(MUTATIONS), st.integers(1, 4)), min_size=1, max_size=3))
def test_mutated_scenario_files(path: Path, edits: list[tuple[float, str, str, int]]) -> None:
    text = path.read_text()
    for where, kind, token, length in edits:
        at = int(where * len(text))
        text = text[:at] + token + text[at:] if kind == "insert" else \
            text[:at] + text[at + length:]
    assert_same_as_pure(text)

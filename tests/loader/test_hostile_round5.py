"""Findings of a fifth adversarial pass over the loader: scans of hostile
expression text that grew quadratically, and a cache that kept every huge
body. Each test failed before its fix."""

from __future__ import annotations

import threading

import pytest

from loader import expressions
from loader.expressions import (
    MAX_EXPRESSION_CHARS,
    node_references,
    syntax_problem,
    variable_references,
)


def _finishes(function, *args) -> bool:
    """Whether ``function(*args)`` returns within two minutes: a guard
    against a hang (the quadratic scans took hours on these inputs), not a
    measure of speed."""
    thread = threading.Thread(target=function, args=args, daemon=True)
    thread.start()
    thread.join(timeout=120)
    return not thread.is_alive()


@pytest.mark.parametrize("opening", ["$('", '$("', '$node["', "$node['"])
def test_node_references_of_a_megabyte_of_openings_finish(opening):
    """CRITICAL. `$('` repeated: each opening's lazy scan for its closing
    quote ran to the end of the text (100 KB took 28 s in the validator,
    two such requests held both API processes until gunicorn killed them)."""
    assert _finishes(node_references, opening * (1_000_000 // len(opening)))


@pytest.mark.parametrize("opening", ["$vars['", '$vars["'])
def test_variable_references_of_a_megabyte_of_openings_finish(opening):
    assert _finishes(variable_references, opening * (1_000_000 // len(opening)))


@pytest.mark.parametrize(
    ("body", "names"),
    [
        ("$('Fetch').json.x", ["Fetch"]),
        ('$node["A b"].json + $("C").item', ["A b", "C"]),
        ("$( 'Spaced' )", ["Spaced"]),
    ],
)
def test_node_references_still_name_the_nodes_read(body, names):
    assert node_references(body) == names


def test_variable_references_still_name_the_variables_read():
    body = "$vars.region + $vars['zone'] + $vars[\"x y\"]"

    assert variable_references(body) == ["region", "zone", "x y"]


def test_bodies_too_large_to_run_are_not_kept_in_the_syntax_cache():
    """MEDIUM. syntax_problem's lru_cache held each distinct body, ~1 MB
    ones too: 1,000 validate requests took an API process to 620 MiB."""
    expressions._syntax_problem.cache_clear()
    big = "1 + " * (MAX_EXPRESSION_CHARS // 2)

    refused = syntax_problem(big)

    assert refused is not None and refused.code == "EXPRESSION_TOO_LARGE"
    assert expressions._syntax_problem.cache_info().currsize == 0
    assert syntax_problem("1 + 1") is None
    assert expressions._syntax_problem.cache_info().currsize == 1


def test_a_document_compiles_a_bounded_total_of_pattern_characters(monkeypatch):
    """MEDIUM. Every string under a pattern/regex key was compiled; a
    case-insensitive class over all of Unicode costs ~5 ms to compile, and
    a 70 KB document of them took 18.8 s of an API process's CPU."""
    import loader.nodes
    from loader import validate
    from loader.regexes import MAX_PATTERN_CHARS_PER_DOCUMENT
    from tests.loader.test_hostile import _start_and_set

    compiled: list[int] = []
    real = loader.nodes.regex_problem
    monkeypatch.setattr(
        loader.nodes,
        "regex_problem",
        lambda pattern: compiled.append(len(pattern)) or real(pattern),
    )
    pattern = "(?i)" + "[\\x10-\\U0010f000]" * 50
    values = {f"pattern_{i}": pattern + str(i) for i in range(100)}

    report = validate(_start_and_set({"values": values}))

    assert sum(compiled) <= MAX_PATTERN_CHARS_PER_DOCUMENT
    refused = [p.message for p in report.errors if p.code == "INVALID_REGEX"]
    assert refused and all("in all" in message for message in refused)

"""Bounds on what one run may build: expression output in all, items into a
node, nesting depth. Each was a hostile workflow that held a worker or its
memory before it was bounded (third adversarial round)."""

from __future__ import annotations

import itertools

from tests.engine.documents import node, record, statuses, workflow


def _start() -> dict:
    return node("Start", "trigger.start")


def test_expressions_of_one_run_cannot_build_more_than_the_run_budget(run):
    values = {f"v{n}": "{{ 'x' * 1000 }}" for n in range(50)}
    document = workflow(
        [_start(), node("Set", "data.set", parameters={"values": values})],
        [("Start", "Set")],
    )

    outcome = run(document, limits={"max_expression_chars_per_run": 20_000})

    assert outcome.status == "failed"
    assert outcome.error["code"] == "EXPRESSION_TOO_LARGE"
    assert outcome.error["node"] == "Set"


def test_a_run_within_the_budget_is_not_refused(run):
    values = {f"v{n}": "{{ 'x' * 100 }}" for n in range(50)}
    document = workflow(
        [_start(), node("Set", "data.set", parameters={"values": values})],
        [("Start", "Set")],
    )

    outcome = run(document, limits={"max_expression_chars_per_run": 20_000})

    assert outcome.status == "succeeded"


def test_items_flowing_into_one_node_are_capped(run):
    # Duplicate wires each deliver the items again; the cap holds on the
    # node's inputs as well as on its outputs.
    links = [("Many", "Sink")] * 30
    document = workflow(
        [
            _start(),
            node("Many", "test.many", parameters={"count": 10}),
            # Every item has the same key, so the merge emits one item: only
            # a cap on what flows in can stop it.
            node(
                "Sink",
                "logic.merge",
                parameters={"mode": "combineByKey", "key": "pad"},
            ),
        ],
        [("Start", "Many"), *links],
    )

    outcome = run(document, limits={"max_items_per_output": 100})

    assert outcome.status == "failed"
    assert outcome.error["code"] == "ITEM_LIMIT_EXCEEDED"
    assert outcome.error["node"] == "Sink"


def test_a_dotted_field_deeper_than_the_limit_is_refused(run):
    field = ".".join(["a"] * 960)
    document = workflow(
        [
            _start(),
            node("Set", "data.set", parameters={"values": {field: 1}}),
            node("Answer", "respond.json", parameters={"body": "{{ $json }}"}),
        ],
        [("Start", "Set"), ("Set", "Answer")],
    )

    outcome = run(document)

    assert outcome.status == "failed"
    assert outcome.error["code"] == "INVALID_PARAMETER"
    assert outcome.error["node"] == "Set"
    assert statuses(outcome) == {
        "Start": "succeeded",
        "Set": "failed",
        "Answer": "not_run",
    }


def test_a_result_nested_too_deep_for_json_fails_with_a_code(run):
    deep: dict = {}
    inner = deep
    for _ in range(5000):
        inner["a"] = {}
        inner = inner["a"]
    document = workflow([node("Deep", "test.constant", parameters={"item": deep})], [])

    outcome = run(document)

    assert outcome.status == "failed"
    assert outcome.error["code"] == "INVALID_RESULT"
    assert record(outcome, "Deep")["status"] == "succeeded"


def _fan_out(doublings: int, key_value: str) -> dict:
    """Start → Set (one item with a big key) → n doublings → combine by key."""
    nodes = [
        _start(),
        node("Set", "data.set", parameters={"values": {"big": key_value}}),
    ]
    links = [("Start", "Set")]
    previous = "Set"
    for level in range(doublings):
        left, right, both = f"L{level}", f"R{level}", f"M{level}"
        nodes += [
            node(left, "logic.noop"),
            node(right, "logic.noop"),
            node(both, "logic.merge", parameters={"mode": "append"}),
        ]
        links += [
            (previous, left),
            (previous, right),
            (left, both, 0, 0),
            (right, both, 0, 1),
        ]
        previous = both
    nodes.append(
        node("C", "logic.merge", parameters={"mode": "combineByKey", "key": "big"})
    )
    links.append((previous, "C"))
    return workflow(nodes, links)


def test_combining_many_items_by_one_big_key_is_quick(run):
    # Each item shares the same 8 MB string as its key: the grouping must
    # not serialise it once per item (that took minutes at 1024 items).
    document = _fan_out(10, "{{ 'é' * 8000000 }}")
    document["nodes"].append(
        node("Answer", "respond.json", parameters={"body": {"combined": True}})
    )
    document["connections"]["C"] = {
        "main": [[{"node": "Answer", "type": "main", "index": 0}]]
    }

    outcome = run(document)

    assert outcome.status == "succeeded", outcome.error
    assert record(outcome, "C")["items_out"] == 1


def test_a_result_far_over_the_limit_is_refused_before_it_is_serialised(run):
    # 64 items sharing one 8 MB string: 512 MB of JSON if serialised.
    document = _fan_out(6, "{{ 'a' * 8000000 }}")
    document["nodes"] = [n for n in document["nodes"] if n["name"] != "C"]
    document["connections"].pop("M5", None)

    outcome = run(document)

    assert outcome.status == "failed"
    assert outcome.error["code"] == "RESULT_TOO_LARGE"


def test_a_list_literal_cannot_build_more_than_the_expression_cap(run):
    elements = ", ".join(["'a' * 8000000"] * 3)
    document = workflow(
        [
            _start(),
            node(
                "Set",
                "data.set",
                parameters={"values": {"x": "{{ [" + elements + "] }}"}},
            ),
        ],
        [("Start", "Set")],
    )

    outcome = run(document)

    assert outcome.error["code"] == "EXPRESSION_TOO_LARGE"


def test_a_template_over_a_value_nested_too_deep_fails_with_a_code(run):
    deep: dict = {}
    inner = deep
    for _ in range(5000):
        inner["a"] = {}
        inner = inner["a"]
    document = workflow(
        [
            node("Deep", "test.constant", parameters={"item": deep}),
            node("Text", "data.set", parameters={"values": {"t": "x{{ $json }}"}}),
        ],
        [("Deep", "Text")],
    )

    outcome = run(document)

    assert outcome.error["code"] == "EXPRESSION_TOO_LARGE"
    assert outcome.error["node"] == "Text"


def _growing_chain(nodes: int) -> dict:
    """test.many's items, then ``nodes`` data.set nodes each adding a key:
    every node keeps a copy of every item, one field wider each time."""
    sets = [
        node(f"Set {n}", "data.set", parameters={"values": {f"k{n}": n}})
        for n in range(nodes)
    ]
    chain = ["Many", *(s["name"] for s in sets)]
    return workflow(
        [_start(), node("Many", "test.many", parameters={"count": 100}), *sets],
        [("Start", "Many"), *itertools.pairwise(chain)],
    )


def test_what_the_nodes_of_a_run_hold_together_is_capped(run):
    """Found by an adversarial pass: 150 data.set nodes over 8192 items,
    no expressions, took a worker from 130 MB to 2.6 GB; each output was
    under its cap, the run's outputs together were not."""
    outcome = run(_growing_chain(30), limits={"max_item_fields_per_run": 20_000})

    assert outcome.status == "failed"
    assert outcome.error["code"] == "ITEM_LIMIT_EXCEEDED"
    assert "fields" in outcome.error["message"]
    # 100 items: Many holds 200 fields and Set n 100 * (n + 3); together
    # they pass 20,000 at Set 17.
    assert outcome.error["node"] == "Set 17"


def test_a_run_under_the_field_cap_is_not_refused(run):
    outcome = run(_growing_chain(10), limits={"max_item_fields_per_run": 20_000})

    assert outcome.status == "succeeded"


def _shared_then_copied(copy: bool) -> dict:
    """100 items sharing one nested object (Share), passed on as they are,
    then (``copy``) each given its own copy of it by a dotted field."""
    nodes = [
        _start(),
        node("Many", "test.many", parameters={"count": 100}),
        node("Share", "data.set", parameters={"values": {"a": "{{ $input.a }}"}}),
        node("Pass", "logic.noop"),
    ]
    if copy:
        nodes.append(node("Copy", "data.set", parameters={"values": {"a.x": 1}}))
    names = [n["name"] for n in nodes]
    return workflow(nodes, list(itertools.pairwise(names)))


def test_nested_copies_count_against_the_field_cap(run):
    """Found by a fifth adversarial pass: the cap counted top-level fields
    only, and data.set with a dotted field copies the nested object once
    per item: a 100,000-key object over 128 items took a worker to 3.8 GB
    in 8 nodes. Objects shared between items (not copied) count once."""
    job_input = {"a": {f"k{i}": i for i in range(1000)}}
    limits = {"max_item_fields_per_run": 50_000}

    copied = run(_shared_then_copied(True), input=job_input, limits=limits)
    shared = run(_shared_then_copied(False), input=job_input, limits=limits)

    assert copied.status == "failed"
    assert copied.error["code"] == "ITEM_LIMIT_EXCEEDED"
    assert copied.error["node"] == "Copy"
    assert shared.status == "succeeded", shared.error

"""Bounds on what one run may build: expression output in all, items into a
node, nesting depth. Each was a hostile workflow that held a worker or its
memory before it was bounded (third adversarial round)."""

from __future__ import annotations

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

"""How data and control flow through a run: order, skips, merges, results."""

from __future__ import annotations

import pytest

from packagerepo.errors import PackageRepoError
from tests.engine.documents import node, record, statuses, workflow


def branching_workflow(condition: str) -> dict:
    return workflow(
        [
            node("Start", "trigger.start"),
            node("If", "logic.if", parameters={"condition": condition}),
            node("Yes", "data.set", parameters={"values": {"branch": "yes"}}),
            node("No", "data.set", parameters={"values": {"branch": "no"}}),
            node("After No", "logic.noop"),
            node("After After No", "logic.noop"),
        ],
        [
            ("Start", "If"),
            ("If", "Yes", 0),
            ("If", "No", 1),
            ("No", "After No"),
            ("After No", "After After No"),
        ],
    )


def test_branch_not_taken_is_skipped_and_everything_it_feeds_too(run):
    outcome = run(branching_workflow("{{ $json.size > 10 }}"), input={"size": 11})

    assert outcome.status == "succeeded"
    assert statuses(outcome) == {
        "Start": "succeeded",
        "If": "succeeded",
        "Yes": "succeeded",
        "No": "skipped",
        "After No": "skipped",
        "After After No": "skipped",
    }
    assert outcome.result == [{"size": 11, "branch": "yes"}]


def test_if_routes_each_item_on_its_own(run):
    document = workflow(
        [
            node("Many", "test.many", parameters={"count": 5}),
            node("If", "logic.if", parameters={"condition": "{{ $json.n % 2 == 0 }}"}),
            node("Even", "logic.noop"),
            node("Odd", "logic.noop"),
        ],
        [("Many", "If"), ("If", "Even", 0), ("If", "Odd", 1)],
    )

    outcome = run(document)

    assert [item["n"] for item in outcome.result] == [0, 2, 4, 1, 3]
    assert record(outcome, "Even")["items_in"] == 3
    assert record(outcome, "Odd")["items_in"] == 2


def fan_in_workflow(mode: str = "append", **parameters) -> dict:
    # "Right" comes first in the document, but feeds the merge's input 1.
    return workflow(
        [
            node("Start", "trigger.start"),
            node("Right", "data.set", parameters={"values": {"right": True}}),
            node("Left", "data.set", parameters={"values": {"left": True}}),
            node("Merge", "logic.merge", parameters={"mode": mode, **parameters}),
        ],
        [
            ("Start", "Left"),
            ("Start", "Right"),
            ("Left", "Merge", 0, 0),
            ("Right", "Merge", 0, 1),
        ],
    )


def test_merge_waits_for_every_input_and_appends_in_input_order(run):
    events = []
    outcome = run(
        fan_in_workflow(),
        input={"id": 1},
        observer=lambda kind, payload: events.append((kind, payload)),
    )

    started = [p["name"] for k, p in events if k == "node" and p["status"] == "running"]
    assert started.index("Merge") > max(started.index("Left"), started.index("Right"))
    assert outcome.result == [{"id": 1, "left": True}, {"id": 1, "right": True}]
    assert record(outcome, "Merge")["items_in"] == 2


def test_merge_runs_with_the_inputs_that_can_still_deliver(run):
    document = workflow(
        [
            node("Start", "trigger.start"),
            node("If", "logic.if", parameters={"condition": "{{ false }}"}),
            node("Other", "data.set", parameters={"values": {"other": 1}}),
            node("Merge", "logic.merge"),
        ],
        [
            ("Start", "If"),
            ("Start", "Other"),
            ("If", "Merge", 0, 0),
            ("Other", "Merge", 0, 1),
        ],
    )

    outcome = run(document, input={"id": 7})

    assert statuses(outcome)["Merge"] == "succeeded"
    assert outcome.result == [{"id": 7, "other": 1}]


def test_merge_whose_inputs_all_stayed_empty_is_skipped(run):
    document = workflow(
        [
            node("Start", "trigger.start"),
            node("If", "logic.if", parameters={"condition": "{{ false }}"}),
            node("Merge", "logic.merge"),
        ],
        [("Start", "If"), ("If", "Merge", 0, 0)],
    )

    assert statuses(run(document))["Merge"] == "skipped"


def test_merge_combines_items_by_key(run):
    document = workflow(
        [
            node("A", "test.many", parameters={"count": 2, "pad": "a"}),
            node("B", "test.many", parameters={"count": 3, "pad": "b"}),
            node(
                "Merge", "logic.merge", parameters={"mode": "combineByKey", "key": "n"}
            ),
        ],
        [("A", "Merge", 0, 0), ("B", "Merge", 0, 1)],
    )

    outcome = run(document)

    assert outcome.result == [
        {"n": 0, "pad": "b"},
        {"n": 1, "pad": "b"},
        {"n": 2, "pad": "b"},
    ]


@pytest.mark.parametrize(
    ("value", "taken"),
    [
        ("'npm'", "Npm"),
        ("'pypi'", "Pypi"),
        ("'cargo'", "Fallback"),
        ("1", "One"),
        ("true", "Fallback"),
    ],
)
def test_switch_routes_to_the_first_equal_case_or_the_last_output(run, value, taken):
    outputs = ["Npm", "Pypi", "One", "Fallback"]
    document = workflow(
        [
            node("Start", "trigger.start"),
            node(
                "Switch",
                "logic.switch",
                parameters={
                    "value": "{{ " + value + " }}",
                    "cases": ["npm", "pypi", 1],
                },
            ),
            *(node(name, "logic.noop") for name in outputs),
        ],
        [("Start", "Switch")] + [("Switch", n, i) for i, n in enumerate(outputs)],
    )

    outcome = run(document)

    ran = [name for name in outputs if statuses(outcome)[name] == "succeeded"]
    assert ran == [taken]


def independent_branches_workflow(order: list[str]) -> dict:
    chains = {"A": ["A1", "A2"], "B": ["B1"], "C": ["C1", "C2"]}
    names = [name for head in order for name in chains[head]]
    links = [("Start", chain[0]) for chain in chains.values()]
    links += [(c[0], c[1]) for c in chains.values() if len(c) == 2]
    nodes = [node("Start", "trigger.start")] + [node(n, "logic.noop") for n in names]
    return workflow(nodes, links)


def started_order(run, document) -> list[str]:
    events = []
    run(document, observer=lambda kind, payload: events.append((kind, payload)))
    return [p["name"] for k, p in events if k == "node" and p["status"] == "running"]


def test_ties_between_ready_nodes_follow_the_document_order(run):
    order = started_order(run, independent_branches_workflow(["C", "A", "B"]))

    assert order == ["Start", "C1", "C2", "A1", "A2", "B1"]


def test_the_same_document_always_runs_in_the_same_order(run):
    document = independent_branches_workflow(["B", "C", "A"])
    reversed_connections = dict(reversed(list(document["connections"].items())))
    shuffled = {**document, "connections": reversed_connections}

    first = started_order(run, document)

    assert all(started_order(run, document) == first for _ in range(5))
    assert started_order(run, shuffled) == first


def test_result_without_a_respond_node_is_the_items_of_the_nodes_that_ended_it(run):
    document = workflow(
        [
            node("Start", "trigger.start"),
            node("Tag", "data.set", parameters={"values": {"tag": "x"}}),
            node("Stamp", "data.set", parameters={"values": {"stamp": 1}}),
        ],
        [("Start", "Tag"), ("Start", "Stamp")],
    )

    outcome = run(document, input={"a": 1})

    assert outcome.result == [{"a": 1, "tag": "x"}, {"a": 1, "stamp": 1}]


def test_respond_json_ends_the_run_with_its_body_and_status(run):
    document = workflow(
        [
            node("Start", "trigger.start"),
            node(
                "Respond",
                "respond.json",
                parameters={"body": {"name": "{{ $json.name }}"}, "status": 201},
            ),
            node("Never", "logic.noop"),
        ],
        [("Start", "Respond"), ("Start", "Never")],
    )

    outcome = run(document, input={"name": "left-pad"})

    assert outcome.status == "succeeded"
    assert outcome.result == {"name": "left-pad"}
    assert outcome.http_status == 201
    assert statuses(outcome)["Never"] == "not_run"


def test_respond_error_fails_the_run_with_its_code_message_and_status(run):
    document = workflow(
        [
            node("Start", "trigger.start"),
            node(
                "Missing",
                "respond.error",
                parameters={
                    "code": "NOT_FOUND",
                    "message": "No package {{ $json.name }}.",
                    "status": 404,
                },
            ),
        ],
        [("Start", "Missing")],
    )

    outcome = run(document, input={"name": "ghost"})

    assert outcome.status == "failed"
    assert outcome.result is None
    assert outcome.error == {
        "code": "NOT_FOUND",
        "message": "No package ghost.",
        "status": 404,
        "node": "Missing",
    }
    assert outcome.http_status == 404


@pytest.mark.parametrize(
    ("job_input", "item"),
    [
        ({"a": 1}, {"a": 1}),
        ([1, 2], {"value": [1, 2]}),
        ("text", {"value": "text"}),
        (None, {}),
    ],
)
def test_start_emits_the_job_input_as_one_item(run, job_input, item):
    document = workflow([node("Start", "trigger.start")], [])

    assert run(document, input=job_input).result == [item]


def test_roots_other_than_triggers_are_skipped_when_a_trigger_exists(run):
    document = workflow(
        [node("Start", "trigger.start"), node("Stray", "logic.noop")], []
    )

    assert statuses(run(document))["Stray"] == "skipped"


def test_without_a_trigger_every_root_starts_with_the_job_input(run):
    document = workflow([node("First", "logic.noop")], [])

    assert run(document, input={"q": 1}).result == [{"q": 1}]


def test_disabled_node_passes_its_input_through(run):
    document = workflow(
        [
            node("Start", "trigger.start"),
            node(
                "Off",
                "logic.stop_and_error",
                disabled=True,
                parameters={"code": "NO", "message": "never"},
            ),
        ],
        [("Start", "Off")],
    )

    outcome = run(document, input={"x": 1})

    assert outcome.status == "succeeded"
    assert outcome.result == [{"x": 1}]


def test_expressions_see_earlier_nodes_by_name(run):
    document = workflow(
        [
            node("Start", "trigger.start"),
            node("Parse", "data.set", parameters={"values": {"name": "left-pad"}}),
            node(
                "Use",
                "data.set",
                keepOnlySet=True,
                parameters={
                    "keepOnlySet": True,
                    "values": {"from": '{{ $node["Parse"].json.name }}'},
                },
            ),
        ],
        [("Start", "Parse"), ("Parse", "Use")],
    )

    assert run(document).result == [{"from": "left-pad"}]


def test_data_set_assigns_dotted_fields_without_changing_its_input(run):
    document = workflow(
        [
            node("Start", "trigger.start"),
            node("Set", "data.set", parameters={"values": {"meta.size": "{{ 3 }}"}}),
        ],
        [("Start", "Set")],
    )
    job_input = {"meta": {"name": "a"}}

    outcome = run(document, input=job_input)

    assert outcome.result == [{"meta": {"name": "a", "size": 3}}]
    assert job_input == {"meta": {"name": "a"}}


def test_observer_hears_each_node_start_and_end_and_the_progress(run):
    events = []
    document = branching_workflow("{{ true }}")

    outcome = run(
        document, observer=lambda kind, payload: events.append((kind, payload))
    )

    yes_events = [p["status"] for k, p in events if k == "node" and p["name"] == "Yes"]
    assert yes_events == ["running", "succeeded"]
    progress = [p for k, p in events if k == "progress"]
    assert progress[-1] == {"done": 6, "total": 6} == outcome.progress
    assert [p["done"] for p in progress] == list(range(1, 7))


def test_node_records_carry_times_counts_and_errors(run):
    outcome = run(branching_workflow("{{ true }}"), input={"a": 1})

    entry = record(outcome, "Yes")
    assert set(entry) == {
        "name",
        "type",
        "status",
        "started_at",
        "duration_ms",
        "items_in",
        "items_out",
        "attempts",
        "error",
    }
    assert entry["type"] == "data.set"
    assert entry["started_at"].endswith("Z")
    assert entry["duration_ms"] >= 0
    assert (entry["items_in"], entry["items_out"], entry["attempts"]) == (1, 1, 1)


def test_an_observer_that_raises_does_not_stop_the_run(run):
    def observer(kind, payload):
        raise ConnectionError("redis went away")

    assert (
        run(branching_workflow("{{ true }}"), observer=observer).status == "succeeded"
    )


@pytest.mark.parametrize(
    "document",
    [
        "not a document",
        {"nodes": []},
        {"nodes": [{"name": "A", "type": "logic.noop"}] * 2},
        {
            "nodes": [{"name": "A", "type": "logic.noop"}],
            "connections": {"A": {"main": [[{"node": "Ghost"}]]}},
        },
        {
            "nodes": [{"name": "A", "type": "logic.noop"}],
            "connections": {"A": {"sideways": [[{"node": "A"}]]}},
        },
        {"nodes": [{"name": "A", "type": "no.such_type"}]},
        workflow(
            [node("A", "logic.noop"), node("B", "logic.noop")], [("A", "B"), ("B", "A")]
        ),
    ],
    ids=[
        "not-object",
        "no-nodes",
        "duplicate",
        "unknown-target",
        "bad-kind",
        "unknown-type",
        "cycle",
    ],
)
def test_a_document_that_cannot_run_raises_a_coded_error(run, document):
    with pytest.raises(PackageRepoError) as raised:
        run(document)

    assert raised.value.code in {"INVALID_WORKFLOW", "UNKNOWN_NODE_TYPE"}

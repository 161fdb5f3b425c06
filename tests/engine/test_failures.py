"""Failure handling: onError, retries, timeouts, cancel and limits."""

from __future__ import annotations

import itertools
import threading

import pytest

from tests.engine.conftest import ATTEMPTS
from tests.engine.documents import node, record, statuses, workflow


def failing_workflow(**failing_fields) -> dict:
    return workflow(
        [
            node("Start", "trigger.start"),
            node("Fail", "test.flaky", **failing_fields),
            node("On Success", "data.set", parameters={"values": {"ok": True}}),
            node("On Error", "data.set", parameters={"values": {"handled": True}}),
        ],
        [("Start", "Fail"), ("Fail", "On Success", 0), ("Fail", "On Error", "error")],
    )


def test_stop_workflow_fails_the_run_with_the_node_error(run):
    outcome = run(failing_workflow())

    assert outcome.status == "failed"
    assert outcome.error == {
        "code": "FLAKY",
        "message": "Try 1 failed.",
        "status": 503,
        "node": "Fail",
    }
    assert statuses(outcome) == {
        "Start": "succeeded",
        "Fail": "failed",
        "On Success": "not_run",
        "On Error": "not_run",
    }
    assert record(outcome, "Fail")["error"]["code"] == "FLAKY"


def test_continue_error_output_routes_the_error_and_skips_the_main_branch(run):
    outcome = run(failing_workflow(onError="continueErrorOutput"))

    assert outcome.status == "succeeded"
    assert statuses(outcome)["On Success"] == "skipped"
    assert statuses(outcome)["On Error"] == "succeeded"
    [item] = outcome.result
    assert item["handled"] is True
    assert item["error"]["code"] == "FLAKY"


def test_continue_regular_output_turns_the_error_into_an_item(run):
    outcome = run(failing_workflow(onError="continueRegularOutput"))

    assert outcome.status == "succeeded"
    assert statuses(outcome)["Fail"] == "failed"
    assert statuses(outcome)["On Error"] == "skipped"
    [item] = outcome.result
    assert item == {
        "error": {"code": "FLAKY", "message": "Try 1 failed.", "status": 503},
        "ok": True,
    }


def test_stop_and_error_fails_with_its_own_code_and_message(run):
    document = workflow(
        [
            node("Start", "trigger.start"),
            node(
                "Stop",
                "logic.stop_and_error",
                parameters={"code": "QUOTA", "message": "Over {{ $json.limit }}."},
            ),
        ],
        [("Start", "Stop")],
    )

    outcome = run(document, input={"limit": 3})

    assert outcome.error["code"] == "QUOTA"
    assert outcome.error["message"] == "Over 3."


@pytest.mark.parametrize(
    ("fields", "attempts", "status"),
    [
        ({}, 1, "failed"),
        ({"retryOnFail": True, "waitBetweenTries": 0}, 3, "failed"),
        ({"retryOnFail": True, "maxTries": 2, "waitBetweenTries": 0}, 2, "failed"),
        ({"retryOnFail": True, "maxTries": 50, "waitBetweenTries": 0}, 5, "failed"),
        (
            {
                "retryOnFail": True,
                "maxTries": 4,
                "waitBetweenTries": 0,
                "parameters": {"succeedOn": 3},
            },
            3,
            "succeeded",
        ),
    ],
    ids=["no-retry", "default-three", "two", "capped-at-five", "succeeds-on-third"],
)
def test_retries_try_the_node_up_to_max_tries(run, fields, attempts, status):
    outcome = run(failing_workflow(**fields))

    assert outcome.status == status
    assert len(ATTEMPTS["Fail"]) == attempts
    assert record(outcome, "Fail")["attempts"] == attempts


def test_retries_wait_between_tries_at_least_the_given_time(run):
    outcome = run(failing_workflow(retryOnFail=True, maxTries=3, waitBetweenTries=60))

    assert outcome.status == "failed"
    times = ATTEMPTS["Fail"]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert len(gaps) == 2
    assert all(gap >= 0.06 for gap in gaps)


def test_a_retry_that_would_pass_the_execution_timeout_is_not_tried(run):
    document = failing_workflow(retryOnFail=True, maxTries=5, waitBetweenTries=5000)
    document["settings"] = {"executionTimeout": 1}

    outcome = run(document)

    assert len(ATTEMPTS["Fail"]) == 1
    assert outcome.error["code"] == "FLAKY"


def wait_workflow(milliseconds: int, **top) -> dict:
    return workflow(
        [
            node("Start", "trigger.start"),
            node("Wait", "logic.wait", parameters={"milliseconds": milliseconds}),
            node("After", "logic.noop"),
        ],
        [("Start", "Wait"), ("Wait", "After")],
        **top,
    )


def test_wait_passes_its_input_on_after_waiting(run):
    outcome = run(wait_workflow(10), input={"a": 1})

    assert outcome.status == "succeeded"
    assert outcome.result == [{"a": 1}]


def test_a_node_past_its_type_timeout_fails_with_node_timeout(run, registry_with):
    outcome = run(wait_workflow(60_000), registry=registry_with(logic_wait=0.1))

    assert outcome.status == "failed"
    assert outcome.error["code"] == "NODE_TIMEOUT"
    assert outcome.error["node"] == "Wait"
    assert statuses(outcome)["After"] == "not_run"


def test_a_blocking_node_is_abandoned_at_its_timeout(run):
    document = workflow(
        [node("Start", "trigger.start"), node("Stuck", "test.block")],
        [("Start", "Stuck")],
    )

    outcome = run(document)

    assert outcome.error["code"] == "NODE_TIMEOUT"
    assert outcome.error["node"] == "Stuck"


@pytest.mark.parametrize(
    ("node_type", "on_engine_thread"),
    [("test.inline_thread", True), ("test.thread", False)],
)
def test_only_a_node_registered_inline_runs_on_the_engine_thread(
    run, node_type, on_engine_thread
):
    document = workflow(
        [node("Start", "trigger.start"), node("Where", node_type)],
        [("Start", "Where")],
    )

    outcome = run(document)

    assert outcome.status == "succeeded", outcome.error
    [item] = outcome.result
    assert (item["thread"] == threading.get_ident()) is on_engine_thread


def test_parse_coordinate_is_the_one_repository_node_that_runs_inline():
    from worker.node_step import load_implementations
    from worker.nodes.base import INLINE_TYPES

    repo_types = {name for name in load_implementations() if name.startswith("repo.")}
    assert repo_types & INLINE_TYPES == {"repo.parse_coordinate"}


def test_the_run_stops_at_the_execution_timeout(run):
    outcome = run(wait_workflow(60_000, settings={"executionTimeout": 0.2}))

    assert outcome.status == "failed"
    assert outcome.error["code"] == "EXECUTION_TIMEOUT"
    assert statuses(outcome)["After"] == "not_run"


def test_a_spent_execution_timeout_stops_the_run_before_the_next_node(run):
    document = workflow(
        [
            node("Start", "trigger.start"),
            node("Wait", "logic.wait", parameters={"milliseconds": 30}),
            node("After", "logic.noop"),
        ],
        [("Start", "Wait"), ("Wait", "After")],
        settings={"executionTimeout": 0.02},
    )

    outcome = run(document)

    assert outcome.error["code"] == "EXECUTION_TIMEOUT"
    assert statuses(outcome)["After"] == "not_run"


def chain(length: int) -> dict:
    names = [f"N{index}" for index in range(length)]
    return workflow(
        [node("Start", "trigger.start")] + [node(n, "logic.noop") for n in names],
        list(zip(["Start", *names], names, strict=False)),
    )


def test_cancel_stops_between_nodes_and_marks_the_rest_cancelled(run):
    checks = []

    def is_cancelled():
        checks.append(1)
        return len(checks) > 3

    outcome = run(chain(6), is_cancelled=is_cancelled)

    assert outcome.status == "cancelled"
    assert outcome.result is None
    assert list(statuses(outcome).values()) == ["succeeded"] * 3 + ["cancelled"] * 4


def test_cancel_interrupts_a_waiting_node(run):
    checks = []

    def is_cancelled():
        checks.append(1)
        return len(checks) > 3

    outcome = run(wait_workflow(60_000), is_cancelled=is_cancelled)

    assert outcome.status == "cancelled"
    assert statuses(outcome) == {
        "Start": "succeeded",
        "Wait": "cancelled",
        "After": "cancelled",
    }


def test_cancel_abandons_a_blocking_node(run):
    checks = []

    def is_cancelled():
        checks.append(1)
        return len(checks) > 2

    document = workflow(
        [node("Start", "trigger.start"), node("Stuck", "test.block")],
        [("Start", "Stuck")],
    )

    outcome = run(document, is_cancelled=is_cancelled)

    assert outcome.status == "cancelled"
    assert statuses(outcome)["Stuck"] == "cancelled"


def test_too_many_items_on_one_output_fail_with_item_limit_exceeded(run):
    document = workflow([node("Many", "test.many", parameters={"count": 11})], [])

    outcome = run(document, limits={"max_items_per_output": 10})

    assert outcome.error["code"] == "ITEM_LIMIT_EXCEEDED"
    assert outcome.error["node"] == "Many"


def test_a_result_over_the_size_limit_fails_with_result_too_large(run):
    document = workflow(
        [node("Many", "test.many", parameters={"count": 10, "pad": "x" * 200})], []
    )

    outcome = run(document, limits={"max_result_bytes": 1000})

    assert outcome.status == "failed"
    assert outcome.error["code"] == "RESULT_TOO_LARGE"


def test_an_unexpected_exception_becomes_a_safe_node_error(run, caplog):
    document = workflow([node("Crash", "test.crash")], [])

    outcome = run(document)

    assert outcome.error["code"] == "NODE_ERROR"
    assert "secret" not in outcome.error["message"]
    assert "Traceback" not in str(outcome.to_dict())
    assert "secret internal detail" in caplog.text


def test_a_node_returning_something_other_than_outputs_fails(run):
    outcome = run(workflow([node("Odd", "test.not_outputs")], []))

    assert outcome.error["code"] == "NODE_ERROR"
    assert "not outputs" in outcome.error["message"]

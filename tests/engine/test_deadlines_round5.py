"""Findings of a fifth adversarial pass over the engine's time limits: many
expressions in one parameter ran back to back past the node's deadline,
and one built-in could run far past the expression limit. Each test
failed before its fix."""

from __future__ import annotations

import pytest

from tests.engine.documents import node, workflow

SLOW = "{{ len(join([[]] * 60000)) }}"
"""An expression well inside the expression time limit, but not instant."""


@pytest.fixture
def completed(monkeypatch):
    """How many expressions ran to their end."""
    from worker.expressions import ExpressionContext

    done: list[str] = []
    real = ExpressionContext.run

    def counting(self, source, tree, item, *args, **kwargs):
        value = real(self, source, tree, item, *args, **kwargs)
        done.append(source)
        return value

    monkeypatch.setattr(ExpressionContext, "run", counting)
    return done


def _one_parameter_of(count: int, node_type: str = "data.set", **settings):
    if node_type == "data.set":
        parameters = {"values": {"all": SLOW * count}}
    else:
        parameters = {"body": [SLOW] * count}
    return workflow(
        [
            node("Start", "trigger.start"),
            node("Slow", node_type, parameters=parameters),
        ],
        [("Start", "Slow")],
        settings=settings,
    )


@pytest.mark.parametrize("node_type", ["data.set", "respond.json"])
def test_the_expressions_of_one_parameter_stop_at_the_runs_deadline(
    run, completed, node_type
):
    """HIGH. 30 expressions in one string (or a list body of 100) all ran,
    each inside the 0.5 s expression limit: 9 s and 67 s against an
    executionTimeout of 5 s."""
    document = _one_parameter_of(60, node_type, executionTimeout=0.3)

    outcome = run(document)

    assert outcome.status == "failed"
    assert outcome.error["code"] == "EXECUTION_TIMEOUT"
    assert len(completed) < 60


def test_joining_a_list_of_a_million_elements_is_refused_not_run():
    """HIGH. join([[]] * 1600000) took 4.7 s in one call, past the 0.5 s
    expression limit, which is checked only between steps of the tree."""
    from worker.expression_values import MAX_JOIN_ITEMS, _join
    from worker.expressions import ExpressionFailed

    with pytest.raises(ExpressionFailed) as refused:
        _join([[]] * (MAX_JOIN_ITEMS + 1))

    assert refused.value.code == "EXPRESSION_TOO_LARGE"
    assert _join(["a", "b"], "-") == "a-b"


def test_slow_variable_defaults_stop_at_the_runs_deadline(run, completed):
    """HIGH. 30 slow variable defaults ran 8.4 s against a 5 s timeout.
    Variables are resolved before any node runs, so the run is refused as
    a whole (the runner records the error)."""
    from packagerepo.errors import WorkflowFailed

    document = _one_parameter_of(1, executionTimeout=0.3)
    document["variables"] = [
        {"name": f"v{i}", "type": "number", "default": SLOW} for i in range(60)
    ]

    with pytest.raises(WorkflowFailed) as refused:
        run(document)

    assert refused.value.code == "EXECUTION_TIMEOUT"
    assert len(completed) < 60


def _stopping(parameters: dict) -> dict:
    stop = node("Stop", "logic.stop_and_error", parameters=parameters)
    return workflow([node("Start", "trigger.start"), stop], [("Start", "Stop")])


@pytest.mark.parametrize("code", ["not a code <b>\n", 5, "x" * 100, ["A"]])
def test_stop_and_error_codes_are_checked_like_respond_errors(run, code):
    """LOW. logic.stop_and_error passed any code through (markup, newlines,
    str() of a number) while respond.error's are CAPITAL_WORDS."""
    document = _stopping({"code": "{{ $input.code }}", "message": "m"})

    outcome = run(document, input={"code": code})

    assert outcome.error["code"] == "INVALID_PARAMETER"


def test_stop_and_error_keeps_a_good_code_and_cuts_a_long_message(run):
    document = _stopping({"code": "OUT_OF_STOCK", "message": "{{ 'm' * 5000 }}"})

    outcome = run(document)

    assert outcome.error["code"] == "OUT_OF_STOCK"
    assert len(outcome.error["message"]) <= 2000


@pytest.mark.parametrize("on_error", ["continueRegularOutput", "continueErrorOutput"])
def test_the_runs_timeout_is_not_an_error_a_node_can_continue_past(run, on_error):
    """LOW. A last node with onError continueRegularOutput turned the run's
    EXECUTION_TIMEOUT into a success whose result was the timeout error."""
    document = workflow(
        [
            node("Start", "trigger.start"),
            node(
                "Wait",
                "logic.wait",
                parameters={"milliseconds": 60_000},
                onError=on_error,
            ),
        ],
        [("Start", "Wait")],
        settings={"executionTimeout": 0.2},
    )

    outcome = run(document)

    assert outcome.status == "failed"
    assert outcome.error["code"] == "EXECUTION_TIMEOUT"


def test_a_big_integer_weighs_its_digits():
    """HIGH (a check of the fixes above): ints were weighed as 8 characters
    whatever their size, so json([<1232 nines>] * 760000) passed every cap,
    ran 20 s in one call and built 1.8 GB. Floats print as up to 24."""
    from worker.expression_values import check_size

    assert check_size(10**1232) >= 1233
    assert check_size([1.2345678901234567e-300]) >= 24
    assert check_size(["\U0001f600" * 1000]) >= 4000  # four bytes a character


def test_repeating_a_big_integer_is_refused_before_it_is_built(run):
    nines = "9" * 1232
    document = workflow(
        [
            node("Start", "trigger.start"),
            node(
                "Answer",
                "respond.json",
                parameters={"body": "{{ len(json([" + nines + "] * 100000)) }}"},
            ),
        ],
        [("Start", "Answer")],
    )

    outcome = run(document)

    assert outcome.error["code"] == "EXPRESSION_TOO_LARGE"


def test_variable_defaults_share_the_runs_expression_budget(run):
    """HIGH. Each variable default was evaluated in a context of its own,
    each with the whole run's 128 Mi budget: three variables held 1.5 GB."""
    from packagerepo.errors import ExpressionFailed

    document = _one_parameter_of(1)
    document["variables"] = [
        {"name": f"v{i}", "type": "string", "default": "{{ 'x' * 1000000 }}"}
        for i in range(3)
    ]

    with pytest.raises(ExpressionFailed) as refused:
        run(document, limits={"max_expression_chars_per_run": 2_500_000})

    assert refused.value.code == "EXPRESSION_TOO_LARGE"


def test_an_empty_pattern_still_costs_from_the_documents_budget():
    """LOW-MEDIUM. Empty patterns cost nothing from the 4,000-character
    budget and 340,000 of them took 3.5 s to compile one by one."""
    from loader.regexes import PatternBudget

    budget = PatternBudget(4000)

    taken = sum(budget.take("") for _ in range(10_000))

    assert taken <= 4000 // 8

"""The expression language: values, sandbox, limits and workflow variables."""

from __future__ import annotations

import threading

import pytest

from packagerepo.errors import ExpressionFailed, PackageRepoError
from tests.engine.documents import node, workflow
from worker.expressions import ExpressionContext, template_references

ITEM = {"size": 12, "name": "Left-Pad", "tags": ["a", "b"], "meta": {"v": "1.0.0"}}


@pytest.fixture
def context() -> ExpressionContext:
    return ExpressionContext(
        execution_id="job-9",
        tenant="acme",
        job_input={"namespace": "npm"},
        variables={"limit": 10},
        items_by_node={"Parse": [{"name": "left-pad"}], "Empty": []},
        now="2026-01-02T03:04:05Z",
    )


@pytest.mark.parametrize(
    ("parameter", "value"),
    [
        ("{{ $json.size > 10 }}", True),
        ("{{ $json.size * 2 + 1 }}", 25),
        ("{{ $json.size / 4 }}", 3.0),
        ("{{ $json['name'] }}", "Left-Pad"),
        ("{{ $json.tags[1] }}", "b"),
        ("{{ $json.tags.length }}", 2),
        ("{{ $json.meta.v }}", "1.0.0"),
        ("{{ $json.missing }}", None),
        ('{{ $node["Parse"].json.name }}', "left-pad"),
        ('{{ $node["Empty"].json }}', {}),
        ("{{ $vars.limit }}", 10),
        ("{{ $input.namespace }}", "npm"),
        ("{{ $execution.id }}", "job-9"),
        ("{{ $execution.tenant }}", "acme"),
        ("{{ $now }}", "2026-01-02T03:04:05Z"),
        ("{{ lower($json.name) }}", "left-pad"),
        ("{{ 'a' in $json.tags and not ('z' in $json.tags) }}", True),
        ("{{ $json.size > 3 && $json.size !== 4 }}", True),
        ("{{ 'big' if $json.size > 10 else 'small' }}", "big"),
        ("{{ [1, 2, 3][1:] }}", [2, 3]),
        ('{{ {"a": {"b": $json.size}} }}', {"a": {"b": 12}}),
        ("{{ default($json.missing, 'x') }}", "x"),
        ("{{ join($json.tags, ',') }}", "a,b"),
        ("={{ $json.size }}", 12),
        ("  {{ $json.size }}  ", 12),
        ("size={{ $json.size }}", "size=12"),
        ("{{ $json.size }}{{ $json.size }}", "1212"),
        ("flag={{ true }} none={{ null }}", "flag=true none="),
        ("no expression $json.size", "no expression $json.size"),
        ("{{ '$json is text' }}", "$json is text"),
    ],
)
def test_expressions_evaluate_to_json_values(context, parameter, value):
    assert context.evaluate(parameter, ITEM) == value


def test_expressions_are_evaluated_inside_nested_parameters(context):
    parameters = {"body": {"name": "{{ $json.name }}", "list": ["{{ 1 + 1 }}", 3]}}

    assert context.evaluate(parameters, ITEM) == {
        "body": {"name": "Left-Pad", "list": [2, 3]}
    }


@pytest.mark.parametrize(
    "source",
    [
        "$json.__class__",
        "$json.__class__.__mro__",
        "''.__class__.__base__.__subclasses__()",
        "__import__('os')",
        "__builtins__",
        "$json._private",
        "(lambda: 1)()",
        "[x for x in $json.tags]",
        "{k: 1 for k in $json}",
        "$json.name.upper()",
        "$json.name.format(1)",
        "f'{1 + 1}'",
        "lower(*$json.tags)",
        "max($json.tags, key=len)",
        "{**$json}",
        "(y := 1)",
        "b'bytes'",
        "'%999999999d' % 1",
    ],
)
def test_sandbox_escapes_are_refused_with_expression_forbidden(context, source):
    with pytest.raises(ExpressionFailed) as raised:
        context.evaluate("{{ " + source + " }}", ITEM)

    assert raised.value.code == "EXPRESSION_FORBIDDEN"


@pytest.mark.parametrize(
    ("source", "code"),
    [
        ("'x' * 100_000_000", "EXPRESSION_TOO_LARGE"),
        ("[0] * 100_000_000", "EXPRESSION_TOO_LARGE"),
        ("2 ** 100_000", "EXPRESSION_TOO_LARGE"),
        ("1 + " * 700 + "1", "EXPRESSION_TOO_LARGE"),
        # Repeating a list repeats references: its JSON size is what counts,
        # so `in` over it can never compare more than the size cap.
        ("'a' * 3999999 + 'b' in ['a' * 4000000] * 1500000", "EXPRESSION_TOO_LARGE"),
        ("[['x' * 1000] * 1000] * 1000", "EXPRESSION_TOO_LARGE"),
        ("['x' * 5000000] + ['y' * 5000000]", "EXPRESSION_TOO_LARGE"),
        ("split('ab ' * 2790000)", "EXPRESSION_TOO_LARGE"),
        ("split('a' * 5000000, '')", "EXPRESSION_TOO_LARGE"),
        # Found by an adversarial pass: keys() of an 8-million-character
        # string built a list of 8 million strings (750 MB) past every cap.
        ("len(keys('x' * 8000000))", "EXPRESSION_ERROR"),
        ("keys([1, 2])", "EXPRESSION_ERROR"),
        # ... and str($node) told the class path and a heap address.
        ("str($node)", "EXPRESSION_ERROR"),
        ("'' + str($node)", "EXPRESSION_ERROR"),
        ("startswith(1, 2)", "EXPRESSION_ERROR"),
        ("lower(5)", "EXPRESSION_ERROR"),
        ("1 / 0", "EXPRESSION_ERROR"),
        ("no_such_name", "EXPRESSION_ERROR"),
        ('$node["Never Ran"].json', "EXPRESSION_ERROR"),
        ("$json.size.bit_length", "EXPRESSION_ERROR"),
        ("1 +", "EXPRESSION_SYNTAX"),
        ("", "EXPRESSION_SYNTAX"),
    ],
)
def test_bad_expressions_fail_with_a_code(context, source, code):
    with pytest.raises(ExpressionFailed) as raised:
        context.evaluate("{{ " + source + " }}", ITEM)

    assert raised.value.code == code


def test_an_unclosed_expression_is_a_syntax_error(context):
    with pytest.raises(ExpressionFailed) as raised:
        context.evaluate("{{ $json.size", ITEM)

    assert raised.value.code == "EXPRESSION_SYNTAX"


def test_evaluation_stops_when_its_time_budget_is_spent():
    context = ExpressionContext(
        execution_id="j",
        tenant="t",
        job_input=None,
        variables={},
        items_by_node={},
        now="",
        time_limit=0.0,
    )

    with pytest.raises(ExpressionFailed) as raised:
        context.evaluate("{{ 1 + 1 }}")

    assert raised.value.code == "EXPRESSION_TIMEOUT"


def _run_context(tenant: str, limit: int, parsed: str) -> ExpressionContext:
    return ExpressionContext(
        execution_id=f"job-{tenant}",
        tenant=tenant,
        job_input={"who": tenant},
        variables={"limit": limit},
        items_by_node={"Parse": [{"name": parsed}]},
        now="2026-01-02T03:04:05Z",
    )


SEEN = '{{ [$execution.tenant, $vars.limit, $input.who, $node["Parse"].json.name] }}'


def test_runs_on_one_thread_see_only_their_own_names():
    # Threads keep their evaluator across runs; the names must not carry over.
    first = _run_context("acme", 1, "left-pad")
    second = _run_context("globex", 2, "right-pad")

    assert first.evaluate(SEEN) == ["acme", 1, "acme", "left-pad"]
    assert second.evaluate(SEEN) == ["globex", 2, "globex", "right-pad"]
    assert first.evaluate(SEEN) == ["acme", 1, "acme", "left-pad"]


def test_threads_evaluating_one_run_keep_their_own_current_item():
    context = _run_context("acme", 1, "left-pad")
    started = threading.Barrier(2)
    seen: dict[int, list] = {}

    def evaluate(size: int) -> None:
        started.wait()
        seen[size] = [
            context.evaluate("{{ $json.size }}", {"size": size}) for _ in range(200)
        ]

    threads = [threading.Thread(target=evaluate, args=(n,)) for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert seen == {1: [1] * 200, 2: [2] * 200}


def test_references_name_the_nodes_and_variables_an_expression_uses():
    references = template_references(
        '{{ $node["Parse Path"].json.name }} {{ $vars.limit + $vars["floor"] }}'
    )

    assert references.nodes == {"Parse Path"}
    assert references.variables == {"limit", "floor"}


def test_an_expression_error_in_a_node_follows_its_on_error(run):
    document = workflow(
        [
            node("Start", "trigger.start"),
            node("Set", "data.set", parameters={"values": {"x": "{{ 1 / 0 }}"}}),
        ],
        [("Start", "Set")],
    )

    outcome = run(document)

    assert outcome.error["code"] == "EXPRESSION_ERROR"
    assert outcome.error["node"] == "Set"


def variables_workflow(variables) -> dict:
    return workflow(
        [
            node("Start", "trigger.start"),
            node("Respond", "respond.json", parameters={"body": "{{ $vars }}"}),
        ],
        [("Start", "Respond")],
        variables=variables,
    )


@pytest.mark.parametrize(
    "variables",
    [
        {
            "limit": {"type": "number", "default": 10},
            "double": {"type": "number", "default": "{{ $vars.limit * 2 }}"},
            "label": {"type": "string", "default": "max {{ $vars.double }}"},
            "strict": {"type": "boolean", "default": True},
            "since": {"type": "date", "default": "2026-01-01T00:00:00Z"},
            "empty": {"type": "any"},
        },
        [
            {"name": "label", "type": "string", "default": "max {{ $vars.double }}"},
            {"name": "double", "type": "number", "default": "{{ $vars.limit * 2 }}"},
            {"name": "limit", "type": "number", "default": 10},
            {"name": "strict", "type": "boolean", "default": True},
            {"name": "since", "type": "date", "default": "2026-01-01T00:00:00Z"},
            {"name": "empty", "type": "any"},
        ],
    ],
    ids=["object", "list"],
)
def test_variables_take_their_typed_defaults(run, variables):
    outcome = run(variables_workflow(variables))

    assert outcome.result == {
        "limit": 10,
        "double": 20,
        "label": "max 20",
        "strict": True,
        "since": "2026-01-01T00:00:00Z",
        "empty": None,
    }


def test_variable_overrides_are_coerced_to_the_declared_type(run):
    declared = {
        "limit": {"type": "number", "default": 10},
        "double": {"type": "number", "default": "{{ $vars.limit * 2 }}"},
        "strict": {"type": "boolean", "default": True},
    }

    outcome = run(
        variables_workflow(declared), variables={"limit": "4", "strict": "false"}
    )

    assert outcome.result == {"limit": 4, "double": 8, "strict": False}


@pytest.mark.parametrize(
    ("declared", "overrides"),
    [
        ({"limit": {"type": "number", "default": "ten"}}, {}),
        ({"limit": {"type": "number", "default": 1}}, {"limit": "many"}),
        ({"flag": {"type": "boolean", "default": "yes"}}, {}),
        ({"when": {"type": "date", "default": "yesterday"}}, {}),
        ({"tags": {"type": "array", "default": {"a": 1}}}, {}),
        ({"a": {"default": "{{ $vars.b }}"}, "b": {"default": "{{ $vars.a }}"}}, {}),
    ],
    ids=[
        "bad-default",
        "bad-override",
        "bad-boolean",
        "bad-date",
        "bad-array",
        "cycle",
    ],
)
def test_bad_variables_stop_the_run_before_any_node(run, declared, overrides):
    with pytest.raises(PackageRepoError) as raised:
        run(variables_workflow(declared), variables=overrides)

    assert raised.value.code == "INVALID_VARIABLE"


def test_splitting_into_too_many_parts_is_refused_before_they_are_built(context):
    import tracemalloc

    tracemalloc.start()
    try:
        with pytest.raises(ExpressionFailed) as raised:
            context.evaluate("{{ split('ab ' * 2790000) }}", ITEM)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert raised.value.code == "EXPRESSION_TOO_LARGE"
    # The text is 8 MB; its 2.79 million parts would have been ~150 MB.
    assert peak < 40 * 1024 * 1024

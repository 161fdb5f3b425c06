"""The structural rules of a workflow document, as a JSON Schema.

The schema (Draft 2020-12) checks shapes and types; its failures become
``Problem`` values. A subschema may carry ``x-code``: a rule code for every
failure beneath it, or a mapping from a JSON Schema keyword to a code. Without
one, ``required`` is ``MISSING_FIELD``, ``type`` is ``INVALID_TYPE``,
``additionalProperties`` is the ``UNKNOWN_FIELD`` warning and anything else is
``INVALID_VALUE``. The schema uses no ``$ref`` so a failure's schema path can
be walked to find its ``x-code``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import fastjsonschema
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from loader.problems import PathPart, Problem, error, warning

MAX_TRIES = 5
"""Most tries of a node with retryOnFail (n8n's own bound); the engine uses it."""
MAX_WAIT_BETWEEN_TRIES_MS = 5000
"""Longest pause between tries (n8n's own bound); the engine uses it."""
ON_ERROR = ["stopWorkflow", "continueRegularOutput", "continueErrorOutput"]
SCOPES = ["none", "read", "write", "admin"]
VARIABLE_TYPES = ["string", "number", "boolean", "array", "object", "date", "any"]

# n8n writes these too; they mean nothing here but are no typo.
_N8N_WORKFLOW_EXTRAS = [
    "pinData",
    "versionId",
    "staticData",
    "triggerCount",
    "createdAt",
    "updatedAt",
    "hash",
    "isArchived",
    "description",
]
_N8N_NODE_EXTRAS = [
    "credentials",
    "webhookId",
    "alwaysOutputData",
    "executeOnce",
    "notesInFlow",
    "continueOnFail",
    "color",
]

_NON_BLANK = {"pattern": r"\S", "x-code": {"pattern": "EMPTY_NAME"}}

CONNECTION_TARGET = {
    "type": "object",
    "required": ["node", "type", "index"],
    "properties": {"node": {"type": "string"}, "type": {"type": "string"}},
}

CONNECTION_SOURCE = {
    "type": "object",
    "x-code": "INVALID_CONNECTION",
    "additionalProperties": {
        "type": "array",
        "items": {"type": ["array", "null"], "items": CONNECTION_TARGET},
    },
}

NODE = {
    "type": "object",
    "required": ["id", "name", "type", "typeVersion", "position", "parameters"],
    "properties": {
        "id": {"type": "string", "minLength": 1},
        "name": {"type": "string", **_NON_BLANK},
        "type": {"type": "string", "minLength": 1},
        "typeVersion": {
            "type": "number",
            "minimum": 0,
            "x-code": {"minimum": "UNSUPPORTED_TYPE_VERSION"},
        },
        "position": {
            "type": "array",
            "minItems": 2,
            "maxItems": 2,
            "items": {"type": "number"},
            "x-code": "INVALID_POSITION",
        },
        "parameters": {"type": "object"},
        "disabled": {"type": "boolean"},
        "onError": {"enum": ON_ERROR, "x-code": "INVALID_ON_ERROR"},
        "retryOnFail": {"type": "boolean", "x-code": "INVALID_RETRY"},
        "maxTries": {
            "type": "integer",
            "minimum": 1,
            "maximum": MAX_TRIES,
            "x-code": "INVALID_RETRY",
        },
        "waitBetweenTries": {
            "type": "integer",
            "minimum": 0,
            "maximum": MAX_WAIT_BETWEEN_TRIES_MS,
            "x-code": "INVALID_RETRY",
        },
        "notes": {"type": "string"},
        **{name: {} for name in _N8N_NODE_EXTRAS},
    },
    "additionalProperties": False,
}

VARIABLE_FIELDS: dict[str, Any] = {
    "type": {"enum": VARIABLE_TYPES, "x-code": "INVALID_VARIABLE_TYPE"},
    "default": {},
    "description": {"type": "string"},
}

VARIABLE = {
    "type": "object",
    "properties": VARIABLE_FIELDS,
    "additionalProperties": False,
}

# The engine also reads variables as a list of named declarations; the
# loader's rules check the name itself (INVALID_VARIABLE_NAME).
NAMED_VARIABLE = {
    **VARIABLE,
    "required": ["name"],
    "properties": {"name": {"type": "string"}, **VARIABLE_FIELDS},
}

WORKFLOW_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "PackageRepo workflow document",
    "type": "object",
    "required": ["id", "name", "nodes", "connections"],
    "properties": {
        "id": {"type": "string", "minLength": 1},
        "name": {"type": "string", **_NON_BLANK},
        "nodes": {
            "type": "array",
            "minItems": 1,
            "items": NODE,
            "x-code": {"minItems": "EMPTY_NODES"},
        },
        "connections": {"type": "object", "additionalProperties": CONNECTION_SOURCE},
        "version": {"type": ["string", "integer"]},
        "tenantId": {"type": "string", "minLength": 1},
        "variables": {
            "type": ["object", "array"],
            "additionalProperties": VARIABLE,
            "items": NAMED_VARIABLE,
        },
        "settings": {
            "type": "object",
            "properties": {
                "executionTimeout": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": 3600,
                    "x-code": "INVALID_EXECUTION_TIMEOUT",
                },
                "scope": {"enum": SCOPES, "x-code": "INVALID_SCOPE"},
            },
        },
        "active": {"type": "boolean"},
        "meta": {"type": "object"},
        "tags": {"type": "array"},
        **{name: {} for name in _N8N_WORKFLOW_EXTRAS},
    },
    "additionalProperties": False,
}

_DEFAULT_CODES = {
    "required": "MISSING_FIELD",
    "type": "INVALID_TYPE",
    "additionalProperties": "UNKNOWN_FIELD",
}
_FIXED_MESSAGES = {
    "EMPTY_NAME": "The name is empty or blank.",
    "EMPTY_NODES": "A workflow needs at least one node.",
}
_JSON_TYPES = {
    dict: "an object",
    list: "an array",
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    type(None): "null",
}


# Keywords that draft 7 (the newest draft fastjsonschema compiles) lacks or
# reads differently; a schema using one is checked by jsonschema alone.
_NOT_IN_DRAFT_7 = frozenset(
    {
        "$ref",
        "$dynamicRef",
        "$dynamicAnchor",
        "$recursiveRef",
        "$anchor",
        "prefixItems",
        "unevaluatedItems",
        "unevaluatedProperties",
        "dependentRequired",
        "dependentSchemas",
        "minContains",
        "maxContains",
    }
)


@dataclass(frozen=True)
class CompiledSchema:
    """A schema with its jsonschema validator and, when safe, a compiled twin.

    The compiled check (fastjsonschema) answers "valid?" in a fraction of the
    time; only when it says no does jsonschema walk the instance to list every
    problem. The twin exists only for schemas whose keywords mean the same in
    draft 7 and 2020-12, so it can never pass what jsonschema would fail.
    """

    schema: dict[str, Any]
    validator: Draft202012Validator
    passes: Callable[[Any], Any] | None

    @classmethod
    def of(cls, schema: dict[str, Any]) -> CompiledSchema:
        Draft202012Validator.check_schema(schema)
        return cls(schema, Draft202012Validator(schema), _compile_fast(schema))

    def problems(
        self,
        instance: Any,
        prefix: Sequence[PathPart],
        *,
        default_code: str | None = None,
        ignore_keys: frozenset[str] = frozenset(),
    ) -> list[Problem]:
        if self.passes is not None:
            try:
                self.passes(instance)
                return []
            except fastjsonschema.JsonSchemaException:
                pass
        return schema_problems(
            self.validator,
            self.schema,
            instance,
            prefix,
            default_code=default_code,
            ignore_keys=ignore_keys,
        )


def _compile_fast(schema: dict[str, Any]) -> Callable[[Any], Any] | None:
    if _uses_keywords(schema, _NOT_IN_DRAFT_7):
        return None
    draft_7 = copy.deepcopy(schema)
    draft_7["$schema"] = "http://json-schema.org/draft-07/schema#"
    try:
        # Without use_default it would fill defaults into the document.
        return fastjsonschema.compile(
            draft_7, use_default=False, use_formats=False, detailed_exceptions=False
        )
    except fastjsonschema.JsonSchemaDefinitionException:
        return None


def _uses_keywords(schema: Any, keywords: frozenset[str]) -> bool:
    """Whether any object in ``schema`` has one of ``keywords`` as a key.

    Also true for a tuple-form ``items``; property names that happen to match
    only cost the fast path.
    """
    stack = [schema]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            if keywords & current.keys() or isinstance(current.get("items"), list):
                return True
            stack.extend(current.values())
        elif isinstance(current, list):
            stack.extend(current)
    return False


@cache
def _workflow_schema() -> CompiledSchema:
    return CompiledSchema.of(WORKFLOW_SCHEMA)


def structural_problems(document: dict[str, Any]) -> list[Problem]:
    """Every way ``document`` departs from ``WORKFLOW_SCHEMA``."""
    return _workflow_schema().problems(document, [])


def schema_problems(
    validator: Draft202012Validator,
    schema: dict[str, Any],
    instance: Any,
    prefix: Sequence[PathPart],
    *,
    default_code: str | None = None,
    ignore_keys: frozenset[str] = frozenset(),
) -> list[Problem]:
    """Problems for each failure of ``validator`` on ``instance``.

    ``prefix`` is the path of ``instance`` in the document; ``default_code``
    replaces the keyword-based codes (the registry's parameter schemas use
    ``PARAMETER_SCHEMA`` for every failure); ``ignore_keys`` are unknown
    top-level keys another rule already reported.
    """
    problems: list[Problem] = []
    for failure in validator.iter_errors(instance):
        code = default_code or _code_for(schema, failure)
        path = [*prefix, *failure.absolute_path]
        skip = frozenset() if failure.absolute_path else ignore_keys
        problems.extend(_problems_for(failure, code, path, skip))
    return problems


def _code_for(schema: dict[str, Any], failure: ValidationError) -> str:
    """The innermost ``x-code`` on the failure's schema path, else the default."""
    found: Any = None
    current: Any = schema
    for part in failure.absolute_schema_path:
        if isinstance(current, dict) and "x-code" in current:
            found = current["x-code"]
        try:
            current = current[part]
        except (KeyError, IndexError, TypeError):
            break

    if isinstance(found, str):
        return found
    if isinstance(found, dict) and failure.validator in found:
        code: str = found[failure.validator]
        return code
    return _DEFAULT_CODES.get(str(failure.validator), "INVALID_VALUE")


def _problems_for(
    failure: ValidationError,
    code: str,
    path: list[PathPart],
    skip: frozenset[str],
) -> Iterator[Problem]:
    instance = failure.instance
    required = failure.validator_value
    if failure.validator == "required" and isinstance(instance, dict):
        for name in required if isinstance(required, list) else ():
            if name not in instance:
                yield error(code, [*path, name], f"The field {name!r} is required.")
        return

    if failure.validator == "additionalProperties" and isinstance(instance, dict):
        schema = failure.schema
        known = schema.get("properties", {}) if isinstance(schema, Mapping) else {}
        make = warning if code == "UNKNOWN_FIELD" else error
        for name in instance:
            if name not in known and name not in skip:
                yield make(code, [*path, name], f"The field {name!r} is not known.")
        return

    if failure.validator == "type":
        expected = failure.validator_value
        wanted = " or ".join(expected) if isinstance(expected, list) else expected
        found = _JSON_TYPES.get(type(instance), type(instance).__name__)
        yield error(code, path, f"Expected {wanted}, found {found}.")
        return

    yield error(code, path, _FIXED_MESSAGES.get(code) or _shorten(failure.message))


def _shorten(message: str, limit: int = 200) -> str:
    sentence = message if message.endswith(".") else message + "."
    if len(sentence) <= limit:
        return sentence
    return sentence[: limit - 3] + "..."

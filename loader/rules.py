"""The stable codes of every validation rule, with a one-line meaning each.

``docs/validation-rules.md`` publishes this table; a test keeps the two in
step and checks that every code has a failing fixture. Codes never change
meaning once published; a retired rule keeps its code unused.
"""

from __future__ import annotations

from typing import NamedTuple


class Rule(NamedTuple):
    severity: str
    meaning: str


PARSE_RULES: dict[str, Rule] = {
    "DOCUMENT_TOO_LARGE": Rule("error", "The document is larger than the size limit."),
    "INVALID_ENCODING": Rule("error", "The document is not UTF-8 text."),
    "INVALID_JSON": Rule(
        "error", "The document is not JSON (NaN and Infinity included)."
    ),
    "DUPLICATE_KEY": Rule("error", "An object repeats a key."),
    "DOCUMENT_TOO_DEEP": Rule(
        "error", "Objects and arrays nest deeper than the depth limit (64)."
    ),
    "NOT_AN_OBJECT": Rule("error", "The top level of the document is not an object."),
}

STRUCTURE_RULES: dict[str, Rule] = {
    "TOO_MANY_NODES": Rule("error", "The workflow has more nodes than the cap (2000)."),
    "MISSING_FIELD": Rule("error", "A required field is absent."),
    "INVALID_TYPE": Rule("error", "A field has the wrong JSON type."),
    "INVALID_VALUE": Rule("error", "A field's value is outside what it allows."),
    "UNKNOWN_FIELD": Rule(
        "warning", "A field that neither this project nor n8n defines (a typo?)."
    ),
    "EMPTY_NAME": Rule("error", "The workflow or a node has an empty or blank name."),
    "EMPTY_NODES": Rule("error", "The workflow has no nodes."),
    "INVALID_POSITION": Rule("error", "A node's position is not [x, y] numbers."),
    "INVALID_ON_ERROR": Rule(
        "error",
        "onError is not stopWorkflow, continueRegularOutput or continueErrorOutput.",
    ),
    "INVALID_RETRY": Rule(
        "error",
        "retryOnFail is not a boolean, maxTries not 1-5, "
        "or waitBetweenTries not 0-5000 ms.",
    ),
    "INVALID_EXECUTION_TIMEOUT": Rule(
        "error", "settings.executionTimeout is not an integer from 1 to 3600 seconds."
    ),
    "INVALID_SCOPE": Rule(
        "error", "settings.scope is not one of none, read, write, admin."
    ),
    "INVALID_CONNECTION": Rule(
        "error", "A connection entry is not shaped {node, type, index}."
    ),
}

NODE_RULES: dict[str, Rule] = {
    "DUPLICATE_NODE_ID": Rule("error", "Two nodes share an id."),
    "DUPLICATE_NODE_NAME": Rule("error", "Two nodes share a name."),
    "UNKNOWN_NODE_TYPE": Rule("error", "The node type is not in the node registry."),
    "UNSUPPORTED_TYPE_VERSION": Rule(
        "error", "The registry does not list this typeVersion for the node type."
    ),
    "NODE_ATTRIBUTE_IN_PARAMETERS": Rule(
        "error",
        "A node-level attribute (name, typeVersion, position, parameters) "
        "sits inside parameters.",
    ),
    "OBJECT_OBJECT_VALUE": Rule(
        "error", 'A value is exactly the string "[object Object]" (a lost object).'
    ),
    "PARAMETER_TOO_DEEP": Rule(
        "error",
        "Parameters nest deeper than the limit (default 2); "
        "a warning for node types not in the registry.",
    ),
    "PARAMETER_SCHEMA": Rule(
        "error",
        "A parameter is missing, unknown or mistyped per the registry's schema.",
    ),
    "INVALID_REGEX": Rule(
        "error",
        "A pattern parameter is not a regular expression (or passes the 2,000 "
        "characters of one pattern or the 4,000 of all of a document's, which "
        "are not compiled).",
    ),
    "CATASTROPHIC_REGEX": Rule(
        "warning",
        "A regular expression nests unbounded repeats and may backtrack "
        "catastrophically.",
    ),
    "ERROR_OUTPUT_UNSUPPORTED": Rule(
        "error", "The node type has no error output, yet one is used."
    ),
    "SYSTEM_NODE_NEEDS_ADMIN": Rule(
        "error",
        "A system node (the server's own checks and clean-up) sits in a "
        "workflow whose settings.scope is not admin.",
    ),
}

EXPRESSION_RULES: dict[str, Rule] = {
    "INVALID_EXPRESSION": Rule(
        "error",
        "An expression {{ ... }} is unterminated, does not parse, "
        "or uses a construct or $name the language lacks.",
    ),
    "EXPRESSION_TOO_LARGE": Rule(
        "error",
        "An expression {{ ... }} is longer than the engine runs (2000 characters).",
    ),
    "UNKNOWN_NODE_REFERENCE": Rule(
        "error", 'An expression reads $node["Name"] of a node that does not exist.'
    ),
    "UNKNOWN_VARIABLE_REFERENCE": Rule(
        "error", "An expression reads $vars.x of an undeclared variable."
    ),
}

CONNECTION_RULES: dict[str, Rule] = {
    "LEGACY_CONNECTIONS": Rule(
        "warning", 'Outputs encoded as {"0": [...]} were converted to lists.'
    ),
    "UNKNOWN_CONNECTION_SOURCE": Rule(
        "error", "A connections key is not the name of a node."
    ),
    "UNKNOWN_CONNECTION_TARGET": Rule(
        "error", "A connection points at a node name that does not exist."
    ),
    "ID_KEYED_CONNECTION": Rule(
        "error", "A connection names a node by its id instead of its name."
    ),
    "INVALID_OUTPUT_TYPE": Rule(
        "error", "An output type other than main or error, or an input not main."
    ),
    "INVALID_OUTPUT_INDEX": Rule(
        "error", "An output index beyond the outputs the source node has."
    ),
    "INVALID_INPUT_INDEX": Rule(
        "error",
        "An input index that is not a non-negative integer or beyond the "
        "target's inputs.",
    ),
    "DUPLICATE_CONNECTION": Rule(
        "error",
        "A connection repeats an earlier one from the same output to the same input.",
    ),
    "SELF_LOOP": Rule("error", "A node is connected to itself."),
    "CYCLE": Rule("error", "Connections form a cycle; the message names it."),
    "ERROR_OUTPUT_WITHOUT_CONTINUE": Rule(
        "error",
        "An error output is wired from a node whose onError is not "
        "continueErrorOutput.",
    ),
    "UNREACHABLE_NODE": Rule(
        "warning", "No path leads to the node from a trigger (or from any root)."
    ),
}

VARIABLE_RULES: dict[str, Rule] = {
    "INVALID_VARIABLE_NAME": Rule(
        "error", "A variable name is not an identifier ([A-Za-z_][A-Za-z0-9_]*)."
    ),
    "INVALID_VARIABLE_TYPE": Rule(
        "error",
        "A variable type is not string, number, boolean, array, object, date or any.",
    ),
    "DUPLICATE_VARIABLE_NAME": Rule(
        "error", "A list of variables declares the same name twice."
    ),
    "VARIABLE_DEFAULT_TYPE": Rule(
        "error", "A variable's default does not match its declared type."
    ),
    "CIRCULAR_VARIABLE": Rule(
        "error", "Variable defaults refer to each other in a circle."
    ),
}

TENANCY_RULES: dict[str, Rule] = {
    "TENANT_MISMATCH": Rule("error", "tenantId differs from the caller's tenant."),
}

RULE_GROUPS: dict[str, dict[str, Rule]] = {
    "Parsing (refused as INVALID_WORKFLOW)": PARSE_RULES,
    "Structure (JSON Schema)": STRUCTURE_RULES,
    "Nodes and parameters": NODE_RULES,
    "Expressions": EXPRESSION_RULES,
    "Connections and graph": CONNECTION_RULES,
    "Variables": VARIABLE_RULES,
    "Tenancy": TENANCY_RULES,
}

RULES: dict[str, Rule] = {
    code: rule for group in RULE_GROUPS.values() for code, rule in group.items()
}

"""``packagerepo validate FILE... [--json] [--strict] [--no-registry]``.

Human output is one line per problem, ``file: field: CODE message``, then a
verdict per file. ``--json`` prints one object keyed by file instead. The exit
status is 0 when every file is valid, 1 when one is invalid and 2 when one
cannot be read or parsed (which wins over 1).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from loader.document import parse_document
from loader.problems import Problem
from loader.validator import validate
from packagerepo.errors import InvalidWorkflow

VALID, INVALID, UNREADABLE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="packagerepo validate",
        description="Validate workflow documents against the rules of design §3.",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", type=Path)
    parser.add_argument("--json", action="store_true", help="print JSON reports")
    parser.add_argument(
        "--strict", action="store_true", help="treat warnings as errors"
    )
    parser.add_argument(
        "--no-registry",
        action="store_true",
        help="check structure and graph only (for node types we do not ship)",
    )
    return parser


def validate_command(argv: list[str], out: TextIO | None = None) -> int:
    """Run the command; returns the exit status."""
    out = out or sys.stdout
    options = _parser().parse_args(argv)
    status = VALID
    results: dict[str, Any] = {}

    for path in options.files:
        result, file_status = _check_file(path, options)
        status = max(status, file_status)
        results[str(path)] = result
        if not options.json:
            _print_human(str(path), result, out)

    if options.json:
        json.dump(results, out, indent=2)
        out.write("\n")
    return status


def _check_file(path: Path, options: argparse.Namespace) -> tuple[dict[str, Any], int]:
    try:
        document = parse_document(path.read_bytes())
    except OSError as exc:
        problem = Problem(
            "error", "UNREADABLE", "", f"Cannot read the file: {exc.strerror}."
        )
        return _unreadable(problem), UNREADABLE
    except InvalidWorkflow as refused:
        problems = [Problem.from_dict(detail) for detail in refused.details]
        return {
            "valid": False,
            "errors": [p.to_dict() for p in problems],
            "warnings": [],
        }, UNREADABLE

    report = validate(
        document, use_registry=not options.no_registry, strict=options.strict
    )
    return report.to_dict(), VALID if report.valid else INVALID


def _unreadable(problem: Problem) -> dict[str, Any]:
    return {"valid": False, "errors": [problem.to_dict()], "warnings": []}


def _print_human(name: str, result: dict[str, Any], out: TextIO) -> None:
    for problem in result["errors"] + result["warnings"]:
        where = f"{problem['field']}: " if problem["field"] else ""
        out.write(f"{name}: {where}{problem['code']} {problem['message']}\n")

    verdict = "valid" if result["valid"] else "invalid"
    counts = f"{len(result['errors'])} error(s), {len(result['warnings'])} warning(s)"
    out.write(f"{name}: {verdict} ({counts})\n")

"""Validation problems as values, and the report that gathers them.

A ``Problem`` names one broken rule: its severity, a stable code (listed in
``loader.rules``), the path of the offending field and a sentence saying
what is wrong. A ``Report`` holds every problem found in one document, errors
and warnings apart, so a caller sees them all at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from packagerepo.errors import WorkflowValidationFailed

Severity = Literal["error", "warning"]
PathPart = str | int


@dataclass(frozen=True)
class Problem:
    """One broken rule in one place of a workflow document."""

    type: Severity
    code: str
    field: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {
            "type": self.type,
            "code": self.code,
            "field": self.field,
            "message": self.message,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Problem:
        return cls(data["type"], data["code"], data["field"], data["message"])


def error(code: str, path: Sequence[PathPart], message: str) -> Problem:
    return Problem("error", code, field_path(path), message)


def warning(code: str, path: Sequence[PathPart], message: str) -> Problem:
    return Problem("warning", code, field_path(path), message)


def field_path(path: Sequence[PathPart]) -> str:
    """Render ``("nodes", 3, "parameters", "url")`` as ``nodes[3].parameters.url``.

    Keys that are not plain identifiers are quoted, as in
    ``connections["Parse Path"].main[0]``.
    """
    rendered = ""
    for part in path:
        if isinstance(part, int):
            rendered += f"[{part}]"
        elif part.isidentifier():
            rendered += f".{part}" if rendered else part
        else:
            quoted = part.replace("\\", "\\\\").replace('"', '\\"')
            rendered += f'["{quoted}"]'
    return rendered


@dataclass
class Report:
    """Every problem found in one document; ``strict`` makes warnings fail."""

    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    strict: bool = False

    @classmethod
    def of(cls, problems: Iterable[Problem], *, strict: bool = False) -> Report:
        """A report from problems in the order found, without repeats."""
        report = cls(strict=strict)
        seen: set[Problem] = set()
        for problem in problems:
            if problem in seen:
                continue
            seen.add(problem)
            if problem.type == "error":
                report.errors.append(problem)
            else:
                report.warnings.append(problem)
        return report

    @property
    def valid(self) -> bool:
        return not self.failing

    @property
    def failing(self) -> list[Problem]:
        """The problems that make the document invalid under this report's mode."""
        if self.strict:
            return self.errors + self.warnings
        return list(self.errors)

    def codes(self) -> set[str]:
        return {problem.code for problem in self.errors + self.warnings}

    def to_dict(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "errors": [problem.to_dict() for problem in self.errors],
            "warnings": [problem.to_dict() for problem in self.warnings],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, strict: bool = False) -> Report:
        return cls(
            errors=[Problem.from_dict(item) for item in data.get("errors", [])],
            warnings=[Problem.from_dict(item) for item in data.get("warnings", [])],
            strict=strict,
        )

    def raise_for_errors(self) -> None:
        """Raise ``WorkflowValidationFailed`` listing the failing problems."""
        failing = self.failing
        if not failing:
            return
        raise WorkflowValidationFailed(
            f"Workflow validation failed: {len(failing)} error(s)",
            details=[problem.to_dict() for problem in failing],
        )

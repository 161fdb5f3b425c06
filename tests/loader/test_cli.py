"""``packagerepo validate``: output lines, JSON, exit statuses."""

from __future__ import annotations

import io
import json
from pathlib import Path

from loader.cli import validate_command
from tests.loader.conftest import FIXTURES


def _run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    status = validate_command(list(argv), out=out)
    return status, out.getvalue()


def test_a_valid_file_exits_zero() -> None:
    status, output = _run(str(FIXTURES / "valid" / "linear.json"))

    assert status == 0
    assert output.endswith("linear.json: valid (0 error(s), 0 warning(s))\n")


def test_an_invalid_file_prints_file_field_code_message_and_exits_one() -> None:
    path = FIXTURES / "invalid" / "SELF_LOOP.json"

    status, output = _run(str(path))

    assert status == 1
    assert output.splitlines()[0] == (
        f'{path}: connections["Set Fields"].main[0][1].node: SELF_LOOP '
        "Node 'Set Fields' is connected to itself."
    )


def test_warnings_fail_only_with_strict() -> None:
    path = str(FIXTURES / "invalid" / "UNREACHABLE_NODE.json")

    assert _run(path)[0] == 0
    assert _run(path, "--strict")[0] == 1


def test_no_registry_accepts_an_n8n_export() -> None:
    path = str(FIXTURES / "n8n" / "manual_trigger_http.json")

    assert _run(path)[0] == 1
    assert _run(path, "--no-registry")[0] == 0


def test_json_output_is_a_report_per_file() -> None:
    valid = str(FIXTURES / "valid" / "linear.json")
    invalid = str(FIXTURES / "invalid" / "CYCLE.json")

    status, output = _run(valid, invalid, "--json")

    reports = json.loads(output)
    assert status == 1
    assert reports[valid] == {"valid": True, "errors": [], "warnings": []}
    assert [problem["code"] for problem in reports[invalid]["errors"]] == ["CYCLE"]


def test_an_unreadable_or_unparseable_file_exits_two(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_bytes(b"\xff\xfe")
    invalid = str(FIXTURES / "invalid" / "CYCLE.json")

    assert _run(str(tmp_path / "missing.json"), invalid)[0] == 2
    status, output = _run(str(broken))
    assert status == 2
    assert "INVALID_ENCODING" in output

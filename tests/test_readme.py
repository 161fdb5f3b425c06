"""The README's examples stay true."""

from __future__ import annotations

import json
import re

from loader import validate
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()


def test_the_readme_workflow_example_is_valid_and_runs(client, auth, worker):
    block = re.search(r"```json\n(.*?)```", README, re.DOTALL).group(1)
    document = json.loads(block)

    report = validate(document)
    registered = client.put("/v1/workflows/hello", json=document, headers=auth)
    executed = client.post(
        "/v1/workflows/hello/execute?wait=20", json={"name": "Ada"}, headers=auth
    )

    assert report.errors == [] and report.warnings == []
    assert registered.status_code == 201
    assert executed.get_json()["result"]["greeting"] == "Hello, Ada!"


def test_every_environment_variable_read_by_settings_is_documented():
    source = (ROOT / "packagerepo" / "config.py").read_text()
    names = set(re.findall(r'"([A-Z][A-Z0-9_]+)"', source)) - {"INFO"}

    missing = sorted(name for name in names if f"`{name}`" not in README)
    assert missing == []

"""Workflow validation, cold and cached, beside a raw Redis GET.

For every bundled workflow, every valid test fixture and a generated
500-node workflow it measures (median of many runs):

- cold: ``parse_document`` + ``validate`` with the expression memo cleared,
  as the API does for a document it has never seen;
- hit (memory): ``WorkflowCache.fetch`` by digest from the in-process LRU,
  the worker's path; and ``validated()`` on a hit, which also digests the
  document (canonical JSON + SHA-256), the API's path;
- hit (redis): ``fetch`` by digest from Redis with an empty LRU;
- floor: a raw redis-py ``GET`` of the same cache key.

Starts its own redis-server on a free port. Prints a table and writes
``bench/results/validation.json``.

    .venv/bin/python bench/bench_validation.py [--runs 200]

Targets (issue 3): cold under 2 ms per bundled workflow and under 50 ms for
500 nodes; a cached hit under 20 us in memory and under 0.5 ms from Redis
(judged on the bundled workflows; the 500-node row shows how a Redis hit
grows with the document, which it must decode).
"""

from __future__ import annotations

import argparse
import json
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loader import WorkflowCache, parse_document, validate  # noqa: E402
from loader.expressions import syntax_problem  # noqa: E402
from loader.registry import load_registry  # noqa: E402
from packagerepo import keys  # noqa: E402
from packagerepo.stack import redis_command, wait_for_redis  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "validation.json"
TENANT = "bench"
TARGETS_MS = {
    "cold_bundled": 2.0,
    "cold_500_nodes": 50.0,
    "hit_memory": 0.020,
    "hit_redis": 0.5,
}


def generated_workflow(count: int = 500) -> bytes:
    """A valid chain of ``count`` nodes: sets, ifs with both branches, noops."""
    nodes: list[dict[str, Any]] = [_node(0, "Start", "trigger.start", {})]
    connections: dict[str, Any] = {}
    previous = "Start"
    for index in range(1, count - 1, 2):
        step, check = f"Set {index}", f"Check {index}"
        nodes.append(
            _node(
                index,
                step,
                "data.set",
                {"values": {"n": index, "from": f'{{{{ $node["{previous}"].json }}}}'}},
            )
        )
        nodes.append(
            _node(index + 1, check, "logic.if", {"condition": "{{ $json.n > 1 }}"})
        )
        connections[previous] = {"main": _outputs(previous, step)}
        connections[step] = {"main": [[_link(check)]]}
        previous = check
    nodes.append(_node(count - 1, "Answer", "respond.json", {"body": "{{ $json }}"}))
    connections[previous] = {"main": [[_link("Answer")], [_link("Answer")]]}
    document = {"id": "generated", "name": f"{count} nodes", "nodes": nodes}
    document["connections"] = connections
    return json.dumps(document).encode()


def _node(index: int, name: str, node_type: str, parameters: dict) -> dict:
    return {
        "id": f"n{index}",
        "name": name,
        "type": node_type,
        "typeVersion": 1,
        "position": [index * 10, 0],
        "parameters": parameters,
    }


def _link(name: str) -> dict:
    return {"node": name, "type": "main", "index": 0}


def _outputs(source: str, target: str) -> list:
    # An If's true and false outputs both lead on, so every node is reachable.
    if source.startswith("Check"):
        return [[_link(target)], [_link(target)]]
    return [[_link(target)]]


def median_ms(action: Callable[[], Any], runs: int) -> float:
    action()
    samples = []
    for _ in range(runs):
        started = time.perf_counter_ns()
        action()
        samples.append(time.perf_counter_ns() - started)
    return statistics.median(samples) / 1e6


def cold(raw: bytes) -> None:
    syntax_problem.cache_clear()
    validate(parse_document(raw))


def measure(name: str, raw: bytes, client: redis.Redis, runs: int) -> dict:
    registry = load_registry()
    report = validate(parse_document(raw))
    assert report.valid and not report.warnings, f"{name} is not a clean case"
    warm = WorkflowCache(client, registry)
    entry = warm.validated(TENANT, parse_document(raw))
    document = parse_document(raw)
    from_redis = WorkflowCache(client, registry, lru_size=0)
    key = keys.workflow_cache(TENANT, entry.digest)
    cold_runs = max(5, runs // (10 if len(raw) > 100_000 else 1))

    return {
        "workflow": name,
        "nodes": len(document["nodes"]),
        "bytes": len(raw),
        "valid": report.valid,
        "cold_ms": median_ms(lambda: cold(raw), cold_runs),
        "hit_memory_ms": median_ms(lambda: warm.fetch(TENANT, entry.digest), runs),
        "validated_hit_ms": median_ms(lambda: warm.validated(TENANT, document), runs),
        "hit_redis_ms": median_ms(lambda: from_redis.fetch(TENANT, entry.digest), runs),
        "redis_get_floor_ms": median_ms(lambda: client.get(key), runs),
    }


def cases() -> list[tuple[str, bytes, bool]]:
    """(name, raw document, bundled?) for every case."""
    found = [
        (path.stem, path.read_bytes(), True)
        for path in sorted((ROOT / "workflows").glob("*.json"))
    ]
    fixtures = ROOT / "tests" / "loader" / "fixtures" / "valid"
    found += [
        (f"fixture:{path.stem}", path.read_bytes(), False)
        for path in sorted(fixtures.glob("*.json"))
    ]
    found.append(("generated:500", generated_workflow(500), False))
    return found


def verdicts(rows: list[dict]) -> dict[str, bool]:
    bundled = [row for row in rows if row["bundled"]]
    generated = [row for row in rows if row["workflow"] == "generated:500"]
    return {
        "cold_bundled": all(
            row["cold_ms"] < TARGETS_MS["cold_bundled"] for row in bundled
        ),
        "cold_500_nodes": all(
            row["cold_ms"] < TARGETS_MS["cold_500_nodes"] for row in generated
        ),
        "hit_memory": all(
            row["hit_memory_ms"] < TARGETS_MS["hit_memory"] for row in bundled
        ),
        "hit_redis": all(
            row["hit_redis_ms"] < TARGETS_MS["hit_redis"] for row in bundled
        ),
    }


def print_table(rows: list[dict], passed: dict[str, bool]) -> None:
    header = (
        f"{'workflow':<24} {'nodes':>5} {'cold ms':>8} {'mem us':>7} "
        f"{'valid() us':>10} {'redis ms':>8} {'GET ms':>7}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['workflow']:<24} {row['nodes']:>5} {row['cold_ms']:>8.3f} "
            f"{row['hit_memory_ms'] * 1000:>7.2f} "
            f"{row['validated_hit_ms'] * 1000:>10.1f} "
            f"{row['hit_redis_ms']:>8.3f} {row['redis_get_floor_ms']:>7.3f}"
        )
    print()
    for target, ok in passed.items():
        print(
            f"{target:<16} target {TARGETS_MS[target]} ms: {'met' if ok else 'MISSED'}"
        )


def start_redis(folder: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(redis_command(port, folder), stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    wait_for_redis(url)
    return server, url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    options = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        server, url = start_redis(Path(folder))
        client = redis.Redis.from_url(url)
        try:
            rows = []
            for name, raw, bundled in cases():
                row = measure(name, raw, client, options.runs)
                rows.append({**row, "bundled": bundled})
        finally:
            client.close()
            server.terminate()
            server.wait(timeout=10)

    passed = verdicts(rows)
    print_table(rows, passed)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": "validation",
        "machine": {"python": platform.python_version(), "cpu": platform.machine()},
        "runs": options.runs,
        "targets_ms": TARGETS_MS,
        "targets_met": passed,
        "rows": rows,
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nWrote {RESULTS.relative_to(ROOT)}.")


if __name__ == "__main__":
    main()

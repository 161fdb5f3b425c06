"""The end-to-end phases: the floor, raw Redis, executions over HTTP,
submission alone, the worker-side drain rate, scaling and memory.

Each phase takes a running ``BenchStack`` and returns plain dicts that go
into the results JSON as they are.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
import urllib3

from bench.floor_app import FLOOR_QUEUE, NOOP_IGNORED_TASK, NOOP_TASK, make_floor_app
from bench.measure import Operation, Sample, closed_loop, paced, wait_drained
from bench.stack import BenchStack
from worker.celery_app import QUEUE

log = logging.getLogger(__name__)

TENANT = "default"
RESOLVE_INPUT = {"namespace": "bench", "name": "tool"}
WAIT_WORKFLOW = "bench_wait"
WAIT_MILLISECONDS = 50
POLL_INTERVAL_SECONDS = 0.005
TERMINAL = {"succeeded", "failed", "cancelled"}


@dataclass(frozen=True)
class Plan:
    """How long and how much each phase measures."""

    cell_seconds: float
    concurrencies: tuple[int, ...]
    redis_round_trips: int
    floor_drain_tasks: int
    submit_burst_seconds: float
    paced_submit_seconds: float
    paced_submit_rate: float
    scaling_jobs_per_worker: int
    scaling_workers: tuple[int, ...]
    memory_baseline: int
    memory_executions: int


FULL = Plan(5.0, (1, 4, 16), 5000, 3000, 5.0, 10.0, 100.0, 60, (1, 2, 4), 100, 10_000)
QUICK = Plan(0.8, (1, 4, 16), 1000, 600, 1.0, 2.0, 100.0, 15, (1, 2, 4), 100, 2_000)


class ApiClient:
    """One client thread's keep-alive connection to the bench API.

    urllib3's pool directly, not requests: the client threads share the two
    cores with the stack they measure, and requests spent about 1 ms of
    CPU per call of its own.
    """

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url
        address = urllib.parse.urlsplit(base_url)
        self.pool = urllib3.HTTPConnectionPool(
            address.hostname or "127.0.0.1", address.port, maxsize=1, retries=False
        )
        self.headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
        }

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        timeout: float = 60,
        **options: Any,
    ) -> urllib3.BaseHTTPResponse:
        return self.pool.request(
            method, path, body=body, headers=self.headers, timeout=timeout, **options
        )

    def execute(self, workflow: str, body: dict, wait: float = 0) -> dict:
        path = f"/v1/workflows/{workflow}/execute"
        if wait:
            path += f"?wait={wait:g}"
        response = self.request("POST", path, body=json.dumps(body).encode())
        if response.status not in (200, 202):
            raise RuntimeError(f"Execute answered {response.status}.")
        answer: dict = response.json()
        return answer

    def execute_wait(self) -> None:
        answer = self.execute("resolve_latest", RESOLVE_INPUT, wait=10)
        if answer.get("result") is None:
            raise RuntimeError("The execution did not end within the wait.")

    def execute_poll(self) -> None:
        job_id = self.execute("resolve_latest", RESOLVE_INPUT)["job"]["id"]
        while True:
            response = self.request("GET", f"/v1/jobs/{job_id}", timeout=10)
            if response.json()["job"]["status"] in TERMINAL:
                return
            time.sleep(POLL_INTERVAL_SECONDS)

    def execute_sse(self) -> None:
        job_id = self.execute("resolve_latest", RESOLVE_INPUT)["job"]["id"]
        response = self.request(
            "GET", f"/v1/jobs/{job_id}/events", timeout=30, preload_content=False
        )
        try:
            for line in response:
                if line.rstrip(b"\r\n") == b"event: done":
                    return
        finally:
            response.drain_conn()
            response.release_conn()
        raise RuntimeError("The event stream ended without a done event.")

    def submit(self, workflow: str = "resolve_latest") -> None:
        body = RESOLVE_INPUT if workflow == "resolve_latest" else {}
        self.execute(workflow, body)


def login(base_url: str) -> str:
    response = requests.post(
        f"{base_url}/auth/login",
        json={"username": "admin", "password": "admin"},
        timeout=30,
    )
    response.raise_for_status()
    return response.json()["token"]


def publish_artifact(client: ApiClient) -> None:
    """One artifact, so resolve_latest has something to resolve."""
    path = "/v1/bench/tool/1.0.0/any/blob"
    response = client.request("PUT", path, body=b"bench artifact\n", timeout=30)
    if response.status not in (200, 201):
        raise RuntimeError(f"Publishing answered {response.status}.")


def register_wait_workflow(client: ApiClient, stack: BenchStack) -> None:
    """The scaling workflow, through the API when it takes tenant workflows."""
    document = wait_workflow()
    path = f"/v1/workflows/{WAIT_WORKFLOW}"
    body = json.dumps(document).encode()
    response = client.request("PUT", path, body=body, timeout=30)
    if response.status in (200, 201):
        return
    if response.status not in (404, 405):
        raise RuntimeError(f"Registering answered {response.status}.")

    from loader import Catalog
    from packagerepo.services import BUNDLED_WORKFLOWS

    catalog = Catalog(BUNDLED_WORKFLOWS, stack.directory / "data")
    catalog.save(TENANT, WAIT_WORKFLOW, document)


def wait_workflow() -> dict[str, Any]:
    """Start, a 50 ms wait, respond: almost all of its time is the wait."""

    def node(name: str, node_type: str, x: int, **parameters: Any) -> dict:
        return {
            "id": name.lower(),
            "name": name,
            "type": node_type,
            "typeVersion": 1,
            "position": [x, 0],
            "parameters": parameters,
        }

    def link(target: str) -> dict:
        return {"main": [[{"node": target, "type": "main", "index": 0}]]}

    return {
        "id": WAIT_WORKFLOW,
        "name": WAIT_WORKFLOW,
        "nodes": [
            node("Start", "trigger.start", 0),
            node("Pause", "logic.wait", 200, milliseconds=WAIT_MILLISECONDS),
            node("Answer", "respond.json", 400, body={"waited": WAIT_MILLISECONDS}),
        ],
        "connections": {"Start": link("Pause"), "Pause": link("Answer")},
        "settings": {"scope": "read"},
    }


def redis_round_trips(stack: BenchStack, count: int) -> dict[str, Any]:
    """Sequential PING, SET and GET from redis-py: the network floor."""
    client = stack.redis
    commands: dict[str, Callable[[], Any]] = {
        "PING": client.ping,
        "SET": lambda: client.set("bench:key", "value"),
        "GET": lambda: client.get("bench:key"),
    }
    results = {}
    for name, command in commands.items():
        sample = Sample()
        began = time.perf_counter()
        for _ in range(count):
            start = time.perf_counter()
            command()
            sample.latencies.append(time.perf_counter() - start)
        sample.elapsed = time.perf_counter() - began
        results[name] = sample.summary()
    return results


def floor_round_trips(stack: BenchStack, plan: Plan) -> dict[str, Any]:
    """A no-op task sent and its result awaited, at each concurrency."""

    def make_client() -> Any:
        return make_floor_app(stack.redis_url)

    def round_trip(app: Any) -> None:
        app.send_task(NOOP_TASK, queue=FLOOR_QUEUE).get(timeout=30)

    warm = make_client()
    for _ in range(20):
        round_trip(warm)
    return {
        str(concurrency): closed_loop(
            make_client,
            round_trip,
            concurrency=concurrency,
            seconds=plan.cell_seconds,
        ).summary()
        for concurrency in plan.concurrencies
    }


def floor_drain(stack: BenchStack, plan: Plan) -> dict[str, Any]:
    """No-op tasks (no result stored) queued while the floor workers are
    paused, then drained: the worker side of the floor."""
    app = make_floor_app(stack.redis_url)
    stack.pause(stack.floor_workers)
    for _ in range(plan.floor_drain_tasks):
        app.send_task(NOOP_IGNORED_TASK, queue=FLOOR_QUEUE)
    return drain(stack, stack.floor_workers, FLOOR_QUEUE, plan.floor_drain_tasks)


def drain(stack: BenchStack, workers: list, queue: str, count: int) -> dict:
    """Resume the paused ``workers`` and time how fast they empty ``queue``
    of its ``count`` messages."""
    began = time.perf_counter()
    stack.resume(workers)
    ended = wait_drained(stack.redis, queue)
    seconds = ended - began
    return {
        "tasks": count,
        "workers": len(workers),
        "seconds": round(seconds, 3),
        "per_second": round(count / seconds, 1),
    }


MODES = {
    "wait": ApiClient.execute_wait,
    "poll": ApiClient.execute_poll,
    "sse": ApiClient.execute_sse,
}


def end_to_end(stack: BenchStack, token: str, plan: Plan) -> dict[str, Any]:
    """resolve_latest over HTTP, awaited three ways, at each concurrency."""
    results: dict[str, Any] = {}
    for mode, operation in MODES.items():
        results[mode] = {}
        for concurrency in plan.concurrencies:
            before = stack.cpu_seconds()
            sample = closed_loop(
                lambda: ApiClient(stack.base_url, token),
                operation,
                concurrency=concurrency,
                seconds=plan.cell_seconds,
            )
            cell = sample.summary()
            cell["cpu_ms_per_execution"] = cpu_per_execution(
                before, stack.cpu_seconds(), len(sample.latencies)
            )
            results[mode][str(concurrency)] = cell
            log.info("%s at %d: %.0f/s.", mode, concurrency, sample.rate)
    return results


def cpu_per_execution(
    before: dict[str, float], after: dict[str, float], executions: int
) -> dict[str, float]:
    """Milliseconds of CPU each part spent per execution between two
    ``BenchStack.cpu_seconds`` snapshots, and their total: where the
    machine's cores went."""
    spent = {
        part: round(1000 * (after[part] - before[part]) / max(executions, 1), 2)
        for part in before
    }
    spent["total"] = round(sum(spent.values()), 2)
    return spent


def submission(stack: BenchStack, token: str, plan: Plan) -> dict[str, Any]:
    """Execute requests the API accepts with the workers paused (so only
    the API and Redis work), as fast as it goes and at a fixed rate; then
    the queued jobs are drained, which times the workers alone."""

    def make_client() -> ApiClient:
        return ApiClient(stack.base_url, token)

    stack.pause(stack.workers)
    burst = closed_loop(
        make_client,
        ApiClient.submit,
        concurrency=max(plan.concurrencies),
        seconds=plan.submit_burst_seconds,
    )
    steady = paced(
        make_client,
        ApiClient.submit,
        rate=plan.paced_submit_rate,
        seconds=plan.paced_submit_seconds,
    )
    queued = len(burst.latencies) + len(steady.latencies)
    return {
        "max_rate": burst.summary(),
        "fixed_rate": {"target_per_second": plan.paced_submit_rate, **steady.summary()},
        "worker_drain": drain(stack, stack.workers, QUEUE, queued),
    }


def scaling(stack: BenchStack, token: str, plan: Plan) -> dict[str, Any]:
    """The 50 ms wait workflow drained by 1, 2 and 4 worker processes."""
    client = ApiClient(stack.base_url, token)
    results: dict[str, Any] = {}
    for workers in plan.scaling_workers:
        stack.set_worker_count(workers)
        jobs = plan.scaling_jobs_per_worker * workers
        stack.pause(stack.workers)
        for _ in range(jobs):
            client.submit(WAIT_WORKFLOW)
        results[str(workers)] = drain(stack, stack.workers, QUEUE, jobs)

    single = results[str(plan.scaling_workers[0])]["per_second"]
    for workers, row in results.items():
        row["efficiency"] = round(row["per_second"] / (int(workers) * single), 3)
    return results


def executions(
    stack: BenchStack,
    token: str,
    count: int,
    concurrency: int,
    operation: Operation = ApiClient.execute_wait,
) -> Sample:
    """Exactly ``count`` executions from ``concurrency`` threads, each
    awaited by ``operation`` (``?wait`` unless told)."""
    return closed_loop(
        lambda: ApiClient(stack.base_url, token),
        operation,
        concurrency=concurrency,
        seconds=3600.0,
        total=count,
    )


def warm_up(stack: BenchStack, token: str, count: int, concurrency: int) -> int:
    """``count`` executions awaited each way the measurement awaits them,
    at ``concurrency``; returns how many ran.

    gunicorn's thread pool starts threads only as concurrent requests need
    them, and each new thread grows its process once (its stack, its
    allocator arena, one more Redis connection in the pool); SSE streams
    hold a thread longer than ``?wait`` does, so a warm-up with one way
    alone leaves threads to start during the measurement.
    """
    return sum(
        len(executions(stack, token, count, concurrency, operation).latencies)
        for operation in MODES.values()
    )


def memory_snapshot(stack: BenchStack) -> dict[str, int]:
    """RSS in bytes of the API's processes and of the first worker's."""
    return {**stack.api_rss(), **stack.workers[0].rss()}


def thread_snapshot(stack: BenchStack) -> dict[str, int]:
    """Threads of the processes ``memory_snapshot`` measures."""
    return {**stack.api_threads(), **stack.workers[0].threads()}


def growth(before: dict[str, int], after: dict[str, int]) -> dict[str, Any]:
    rows = {}
    for name, size in after.items():
        if name in before:
            rows[name] = {
                "before_mib": round(before[name] / 2**20, 1),
                "after_mib": round(size / 2**20, 1),
                "growth": round(size / before[name] - 1, 3),
            }
    return rows

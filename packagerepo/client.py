"""The command-line client of a running service: ``login``, ``submit``, ``jobs``.

The service's URL comes from ``--url``, else ``PACKAGEREPO_URL``, else
``http://127.0.0.1:5000``. The token comes from ``--token``, else
``PACKAGEREPO_TOKEN``, else the file ``packagerepo login`` wrote:
``$PACKAGEREPO_CONFIG/token`` or ``~/.config/packagerepo/token`` (mode 0600).

``submit --wait`` follows the job's server-sent events, draws a bar of nodes
done on stderr, then prints the result (or the error) as JSON on stdout and
exits 0 when the job succeeded, 1 otherwise.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

import requests

DEFAULT_URL = "http://127.0.0.1:5000"
BAR_WIDTH = 30
STREAM_READ_TIMEOUT = 60.0
"""Longer than the server's SSE heartbeat (15 s), so a quiet job is not lost."""


LOGIN_PATH = "/auth/login"


class ClientError(Exception):
    """Raised when the service refuses a request or cannot be reached."""

    def __init__(self, message: str, body: Any = None) -> None:
        super().__init__(message)
        self.body = body


def config_dir() -> Path:
    configured = os.environ.get("PACKAGEREPO_CONFIG")
    if configured:
        return Path(configured)
    return Path.home() / ".config" / "packagerepo"


def token_path() -> Path:
    return config_dir() / "token"


def store_token(token: str) -> Path:
    """Write the token readable by its owner only (0600), replacing any other."""
    path = token_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(token + "\n")
    os.chmod(path, 0o600)  # an older file keeps its mode through O_TRUNC
    return path


def stored_token() -> str | None:
    try:
        return token_path().read_text().strip() or None
    except FileNotFoundError:
        return None


class ServiceClient:
    """HTTP calls to one PackageRepo service."""

    def __init__(self, url: str, token: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.session.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self.session.request(
                method, self.url + path, timeout=30, **kwargs
            )
        except requests.RequestException as error:
            raise ClientError(f"The service at {self.url} cannot be reached: {error}")
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 400:
            raise ClientError(_refusal(response.status_code, path), body)
        if not isinstance(body, dict):
            raise ClientError("The service answered something other than JSON.")
        return body

    def login(self, username: str, password: str) -> dict[str, Any]:
        body = {"username": username, "password": password}
        return self._call("POST", LOGIN_PATH, json=body)

    def submit(self, workflow: str, workflow_input: Any) -> dict[str, Any]:
        """Enqueue a job; returns the job as the service describes it."""
        path = f"/v1/workflows/{workflow}/execute"
        job: dict[str, Any] = self._call("POST", path, json=workflow_input)["job"]
        return job

    def job(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = self._call("GET", f"/v1/jobs/{job_id}")["job"]
        return job

    def jobs(self, **filters: Any) -> list[dict[str, Any]]:
        params = {name: value for name, value in filters.items() if value}
        found: list[dict[str, Any]] = self._call("GET", "/v1/jobs", params=params)[
            "jobs"
        ]
        return found

    def events(self, job_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """The job's server-sent events as (event, data) until ``done``."""
        try:
            response = self.session.get(
                f"{self.url}/v1/jobs/{job_id}/events",
                stream=True,
                timeout=(10, STREAM_READ_TIMEOUT),
            )
        except requests.RequestException as error:
            raise ClientError(f"The event stream could not be opened: {error}")
        with response:
            if response.status_code >= 400:
                raise ClientError(_refusal(response.status_code, "events"))
            yield from _parse_events(response.iter_lines())


def _refusal(status: int, path: str) -> str:
    """What a refusal tells the user: a 401 outside login says how to log in."""
    if status == 401 and path != LOGIN_PATH:
        return (
            "The service answered 401: log in with `packagerepo login USERNAME`, "
            "or give a token with --token or PACKAGEREPO_TOKEN."
        )
    return f"The service answered {status}."


def _parse_events(lines: Iterator[bytes]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Parse the stream's lines, which are UTF-8 whatever the headers say."""
    event, data = "", ""
    for raw in lines:
        line = raw.decode("utf-8")
        if line.startswith("event: "):
            event = line[len("event: ") :]
        elif line.startswith("data: "):
            data = line[len("data: ") :]
        elif not line and event:
            yield event, json.loads(data or "{}")
            if event == "done":
                return
            event, data = "", ""


def progress_bar(done: int, total: int) -> str:
    """``[#########.....] 3/5 nodes`` (the total may still be unknown)."""
    total = max(total, done)
    filled = BAR_WIDTH * done // total if total else 0
    return f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done}/{total} nodes"


def follow(client: ServiceClient, job_id: str, out: TextIO) -> dict[str, Any]:
    """Draw the job's progress on ``out`` until it ends; returns the ended job.

    Only a terminal gets the bar redrawn as nodes end; anything else (a log
    file, a pipe) gets the final line alone.
    """
    interactive = out.isatty()
    if interactive:
        out.write(f"{progress_bar(0, 0)}\r")
    for event, _data in client.events(job_id):
        if event == "node" and interactive:
            progress = client.job(job_id).get("progress") or {}
            bar = progress_bar(progress.get("done", 0), progress.get("total", 0))
            out.write(f"{bar}\r")
            out.flush()
    job = client.job(job_id)
    progress = job.get("progress") or {}
    out.write(
        f"{progress_bar(progress.get('done', 0), progress.get('total', 0))} "
        f"{job['status']}\n"
    )
    return job


def _read_input(source: str | None) -> Any:
    if source is None:
        return {}
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
        return json.loads(text) if text.strip() else {}
    except (OSError, ValueError) as error:
        raise ClientError(f"The input {source} is not readable JSON: {error}")


def _client(arguments: argparse.Namespace, *, token: bool = True) -> ServiceClient:
    url = arguments.url or os.environ.get("PACKAGEREPO_URL") or DEFAULT_URL
    if not token:
        return ServiceClient(url)
    chosen = arguments.token or os.environ.get("PACKAGEREPO_TOKEN") or stored_token()
    return ServiceClient(url, chosen)


def login_command(arguments: argparse.Namespace) -> int:
    from packagerepo.cli import no_password_message, read_password

    password = read_password(arguments.password_env)
    if password is None:
        raise ClientError(no_password_message(arguments.password_env))
    with _client(arguments, token=False) as client:
        answer = client.login(arguments.username, password)
    path = store_token(answer["token"])
    user = answer["user"]
    print(
        f"Logged in as {user['username']} (tenant {user['tenant']}); "
        f"the token is in {path}.",
        file=sys.stderr,
    )
    return 0


def submit_command(arguments: argparse.Namespace) -> int:
    with _client(arguments) as client:
        job = client.submit(arguments.workflow, _read_input(arguments.input))
        if not arguments.wait:
            print(json.dumps({"id": job["id"], "status": job["status"]}))
            return 0
        ended = follow(client, job["id"], sys.stderr)

    if ended["status"] == "succeeded":
        print(json.dumps(ended.get("result"), indent=2))
        return 0
    print(json.dumps({"status": ended["status"], "error": ended.get("error")}))
    return 1


def jobs_command(arguments: argparse.Namespace) -> int:
    with _client(arguments) as client:
        found = client.jobs(
            limit=arguments.limit, status=arguments.status, workflow=arguments.workflow
        )
    if arguments.json:
        print(json.dumps(found, indent=2))
        return 0
    for job in found:
        progress = job.get("progress") or {}
        print(
            f"{job['id']}  {job.get('workflow', '-'):<20} {job.get('status', '-'):<10}"
            f" {progress.get('done', 0)}/{progress.get('total', 0)}"
            f"  {job.get('created_at', '-')}"
        )
    return 0


def run_client_command(
    handler: Callable[[argparse.Namespace], int], arguments: argparse.Namespace
) -> int:
    """Run a client command; a refusal becomes a message and exit status 1."""
    try:
        return handler(arguments)
    except ClientError as error:
        print(f"error: {error}", file=sys.stderr)
        if error.body is not None:
            print(json.dumps(error.body), file=sys.stderr)
        return 1
    except (KeyError, TypeError, AttributeError):
        # JSON of another shape: most likely --url names some other service.
        print(
            "error: the service answered JSON this client does not understand; "
            "is --url right?",
            file=sys.stderr,
        )
        return 1


def add_client_commands(commands: Any) -> None:
    """Add ``login``, ``submit`` and ``jobs`` to the CLI's subcommands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="service URL (else $PACKAGEREPO_URL)")
    common.add_argument("--token", help="bearer token (else $PACKAGEREPO_TOKEN)")

    login = commands.add_parser("login", parents=[common], help="store a token")
    login.add_argument("username")
    login.add_argument(
        "--password-env",
        default="PACKAGEREPO_PASSWORD",
        help="environment variable holding the password (else prompted)",
    )
    login.set_defaults(handler=functools.partial(run_client_command, login_command))

    submit = commands.add_parser("submit", parents=[common], help="submit a job")
    submit.add_argument("workflow")
    submit.add_argument("--input", help="JSON input file, or - for stdin")
    submit.add_argument("--wait", action="store_true", help="follow until it ends")
    submit.set_defaults(handler=functools.partial(run_client_command, submit_command))

    jobs = commands.add_parser("jobs", parents=[common], help="list recent jobs")
    jobs.add_argument("--limit", type=int, default=20)
    jobs.add_argument("--status")
    jobs.add_argument("--workflow")
    jobs.add_argument("--json", action="store_true", help="print the raw JSON")
    jobs.set_defaults(handler=functools.partial(run_client_command, jobs_command))

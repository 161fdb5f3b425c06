"""Blob upload and download through the API, beside ``cp`` on the same disk.

Starts the API under gunicorn (one sync worker; production runs gthread,
whose request-body reader is the same),
uploads a file of random bytes with ``curl -T`` (``PUT .../blob``) and
downloads it again with curl,
and reports MB/s next to ``cp`` of the same file on the same disk, plus the
API worker's peak RSS growth over its idle RSS (sampled every 20 ms). ``cp``
is the best of three copies. The
upload fsyncs the blob before answering, so ``cp`` followed by ``sync`` is
shown as well. Prints a table and writes ``bench/results/artifacts.json``.

    .venv/bin/python bench/bench_artifacts.py [--mib 1024] [--dir /var/tmp]

Targets (issue 5): RSS growth under 64 MiB; throughput at least half of cp.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import requests

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "artifacts.json"
MIB = 1024 * 1024
RSS_TARGET_MIB = 64
THROUGHPUT_TARGET = 0.5
JWT_SECRET = "bench-secret-" + "b" * 32


def bench_app():
    """The API with the artifact routes, for ``gunicorn 'bench...:bench_app()'``."""
    from api import create_app
    from api.artifacts import artifacts_bp

    app = create_app()
    if "artifacts" not in app.blueprints:
        app.register_blueprint(artifacts_bp)
    return app


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_random_file(path: Path, size: int) -> str:
    """Fill ``path`` with ``size`` random bytes; returns their SHA-256."""
    digest = hashlib.sha256()
    block = os.urandom(4 * MIB)
    with path.open("wb") as target:
        written = 0
        while written < size:
            # Vary each block cheaply so no layer can deduplicate it.
            piece = written.to_bytes(8, "big") + block[8 : min(4 * MIB, size - written)]
            digest.update(piece)
            target.write(piece)
            written += len(piece)
    return digest.hexdigest()


def curl(*arguments: str) -> str:
    """Run curl (a C client, so the client is not what is measured)."""
    command = ["curl", "--silent", "--show-error", "--fail", *arguments]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


def file_digest(path: Path) -> str:
    with path.open("rb") as source:
        return hashlib.file_digest(source, "sha256").hexdigest()


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


class RssSampler:
    """Peak RSS of one process while a block runs."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self) -> RssSampler:
        self.peak = self.process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def start_api(work: Path, size: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {
        **os.environ,
        "DATA_DIR": str(work / "data"),
        "JWT_SECRET": JWT_SECRET,
        "MAX_UPLOAD_BYTES": str(size + MIB),
        "PYTHONPATH": str(ROOT),
        "LOG_LEVEL": "WARNING",
    }
    command = [
        str(Path(sys.executable).parent / "gunicorn"),
        "--workers=1",
        "--timeout=900",
        "--log-level=warning",
        f"--bind=127.0.0.1:{port}",
        "bench.bench_artifacts:bench_app()",
    ]
    server = subprocess.Popen(command, env=env, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            requests.get(f"{base}/health", timeout=5)
            return server, base
        except requests.RequestException:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError("The API did not start within 30 seconds.")


def api_worker_pid(server: subprocess.Popen) -> int:
    children = psutil.Process(server.pid).children()
    return children[0].pid if children else server.pid


def bearer(work: Path) -> dict[str, str]:
    from packagerepo.accounts import Accounts
    from packagerepo.config import Settings

    settings = Settings(data_dir=work / "data", jwt_secret=JWT_SECRET, env="bench")
    accounts = Accounts(settings)
    # A token speaks only for a user that exists.
    identity = accounts.add_user(
        "bench", "bench", tenant="bench", scopes=["read", "write"], replace=True
    )
    token, _ = accounts.issue_token(identity)
    return {"Authorization": f"Bearer {token}"}


def measure(size: int, work: Path) -> dict[str, Any]:
    source = work / "source.bin"
    expected = write_random_file(source, size)

    copies = []
    for _ in range(3):
        copies.append(timed(lambda: shutil.copyfile(source, work / "copy.bin")))
        (work / "copy.bin").unlink()
    # The best of three: the first copy often waits on writeback of the source.
    copy_seconds = min(copies)
    copy_sync_seconds = timed(
        lambda: (shutil.copyfile(source, work / "copy.bin"), os.sync())
    )
    (work / "copy.bin").unlink()

    server, base = start_api(work, size)
    try:
        headers = bearer(work)
        url = f"{base}/v1/bench/blob/1.0.0/default/blob"
        pid = api_worker_pid(server)
        idle_rss = psutil.Process(pid).memory_info().rss

        auth = f"Authorization: {headers['Authorization']}"

        with RssSampler(pid) as upload_rss:
            started = time.perf_counter()
            answer = curl("-T", str(source), "-H", auth, url)
            upload_seconds = time.perf_counter() - started
        if json.loads(answer)["digest"] != f"sha256:{expected}":
            raise RuntimeError("The stored digest differs from the file's.")

        downloaded = work / "download.bin"
        with RssSampler(pid) as download_rss:
            started = time.perf_counter()
            curl("-H", auth, "-o", str(downloaded), url)
            download_seconds = time.perf_counter() - started
        if file_digest(downloaded) != expected:
            raise RuntimeError("The downloaded bytes differ from the upload.")
    finally:
        server.terminate()
        server.wait(timeout=30)

    mib = size / MIB
    return {
        "bytes": size,
        "cp_mib_s": mib / copy_seconds,
        "cp_sync_mib_s": mib / copy_sync_seconds,
        "upload_mib_s": mib / upload_seconds,
        "download_mib_s": mib / download_seconds,
        "upload_rss_growth_mib": (upload_rss.peak - idle_rss) / MIB,
        "download_rss_growth_mib": (download_rss.peak - idle_rss) / MIB,
    }


def report(numbers: dict[str, Any]) -> dict[str, Any]:
    cp = numbers["cp_mib_s"]
    rows = [
        ("cp", cp, "", ""),
        ("cp + sync", numbers["cp_sync_mib_s"], "", ""),
        (
            "API upload (PUT)",
            numbers["upload_mib_s"],
            numbers["upload_rss_growth_mib"],
            numbers["upload_mib_s"] / cp,
        ),
        (
            "API download (GET)",
            numbers["download_mib_s"],
            numbers["download_rss_growth_mib"],
            numbers["download_mib_s"] / cp,
        ),
    ]
    print(f"\nBlob of {numbers['bytes'] / MIB:.0f} MiB on {platform.node()}")
    print(f"{'path':<20} {'MiB/s':>9} {'RSS +MiB':>9} {'x cp':>6}")
    for name, speed, rss, ratio in rows:
        rss_text = f"{rss:9.1f}" if rss != "" else " " * 9
        ratio_text = f"{ratio:6.2f}" if ratio != "" else " " * 6
        print(f"{name:<20} {speed:9.1f} {rss_text} {ratio_text}")

    worst_rss = max(
        numbers["upload_rss_growth_mib"], numbers["download_rss_growth_mib"]
    )
    worst_ratio = min(numbers["upload_mib_s"], numbers["download_mib_s"]) / cp
    targets = {
        "rss_growth_under_mib": RSS_TARGET_MIB,
        "rss_met": worst_rss < RSS_TARGET_MIB,
        "throughput_fraction_of_cp": THROUGHPUT_TARGET,
        "throughput_met": worst_ratio >= THROUGHPUT_TARGET,
    }
    print(
        f"targets: RSS growth {worst_rss:.1f} < {RSS_TARGET_MIB} MiB "
        f"{'met' if targets['rss_met'] else 'MISSED'}; slowest/cp "
        f"{worst_ratio:.2f} >= {THROUGHPUT_TARGET} "
        f"{'met' if targets['throughput_met'] else 'MISSED'}"
    )
    return {**numbers, "targets": targets, "host": platform.node()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024, help="blob size in MiB")
    parser.add_argument("--dir", default=None, help="where to write (one disk)")
    arguments = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=arguments.dir, prefix="pr-bench-") as tmp:
        result = report(measure(arguments.mib * MIB, Path(tmp)))

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

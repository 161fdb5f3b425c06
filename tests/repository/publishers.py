"""Code that runs in child processes for the concurrent publish tests.

Kept in its own importable module so ``spawn`` children can find it.
"""

from __future__ import annotations

import io
from pathlib import Path

from packagerepo.errors import AlreadyExists
from repository.coordinates import Coordinate
from repository.storage import ArtifactStore


def publish_in_child(data_dir: str, version: str, content: bytes, barrier, results):
    """Wait for every sibling, then publish; report ``created`` or ``exists``."""
    store = ArtifactStore(Path(data_dir))
    coordinate = Coordinate.parse("acme", "tool", version, "default")
    barrier.wait()
    try:
        digest, _ = store.put_blob("acme", io.BytesIO(content), max_bytes=1 << 20)
        store.publish("acme", coordinate, digest, created_by=f"child-{content!r}")
    except AlreadyExists:
        results.put("exists")
    else:
        results.put("created")

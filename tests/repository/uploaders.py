"""Uploads from child processes for the concurrent API tests.

Kept in an importable module so ``spawn`` children can find it; each child
builds its own API on the shared settings, as separate servers would.
"""

from __future__ import annotations

from packagerepo.config import Settings
from packagerepo.services import Services


def upload_in_child(
    settings: Settings, headers: dict, path: str, content: bytes, barrier, results
):
    """Wait for every sibling, PUT ``content`` to ``path``, report the status."""
    from .conftest import build_app

    client = build_app(Services(settings)).test_client()
    barrier.wait()
    results.put(client.put(path, data=content, headers=headers).status_code)

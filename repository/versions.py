"""SemVer 2.0.0 precedence for version lists and ``latest``.

Comparison is the ``semver`` library's, never string order: 1.10.0 sorts
after 1.9.0 and 1.0.0 after 1.0.0-rc.10 after 1.0.0-rc.2. Versions that
differ only in build metadata have equal precedence; they are ordered by
their text so a listing is always the same.
"""

from __future__ import annotations

from collections.abc import Iterable

import semver


def _precedence(version: str) -> tuple[semver.Version, str]:
    return semver.Version.parse(version), version


def sort_versions(versions: Iterable[str]) -> list[str]:
    """``versions`` in ascending SemVer precedence."""
    return sorted(versions, key=_precedence)


def is_prerelease(version: str) -> bool:
    """Whether ``version`` carries a pre-release part (``1.0.0-rc.1``)."""
    return semver.Version.parse(version).prerelease is not None


def latest(versions: Iterable[str], *, include_prerelease: bool = False) -> str | None:
    """The highest version, skipping pre-releases unless asked for them.

    None when no version qualifies (for example only pre-releases exist and
    ``include_prerelease`` is false).
    """
    candidates = [
        version
        for version in versions
        if include_prerelease or not is_prerelease(version)
    ]
    if not candidates:
        return None
    return max(candidates, key=_precedence)

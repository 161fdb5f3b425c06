"""SemVer precedence for listings and latest."""

from __future__ import annotations

from repository.versions import latest, sort_versions


def test_versions_sort_by_semver_precedence_not_text():
    versions = ["1.9.0", "1.0.0", "1.10.0", "1.0.0-rc.10", "1.0.0-rc.2"]

    assert sort_versions(versions) == [
        "1.0.0-rc.2",
        "1.0.0-rc.10",
        "1.0.0",
        "1.9.0",
        "1.10.0",
    ]


def test_versions_equal_in_precedence_sort_by_text_for_a_stable_order():
    assert sort_versions(["1.0.0+b", "1.0.0+a"]) == ["1.0.0+a", "1.0.0+b"]


def test_latest_prefers_the_highest_release_over_a_higher_prerelease():
    versions = ["1.9.0", "1.10.0", "2.0.0-rc.1"]

    assert latest(versions) == "1.10.0"
    assert latest(versions, include_prerelease=True) == "2.0.0-rc.1"


def test_latest_with_prereleases_still_prefers_the_release_of_the_same_version():
    assert latest(["1.9.0", "1.10.0", "1.10.0-rc.1"], include_prerelease=True) == (
        "1.10.0"
    )


def test_latest_of_prereleases_only_is_none_unless_asked_for():
    assert latest(["1.0.0-rc.1", "1.0.0-rc.2"]) is None
    assert latest(["1.0.0-rc.1", "1.0.0-rc.2"], include_prerelease=True) == (
        "1.0.0-rc.2"
    )


def test_latest_of_nothing_is_none():
    assert latest([]) is None

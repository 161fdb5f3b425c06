"""Coordinates are normalised and hostile input never passes."""

from __future__ import annotations

import pytest

from packagerepo.errors import CoordinateInvalid
from repository.coordinates import Coordinate, normalise_version


def test_coordinate_parts_are_trimmed_lowercased_and_names_use_dashes():
    coordinate = Coordinate.parse(" Acme ", "My_Tool", " 1.2.3-RC.1 ", "Linux-AMD64")

    assert coordinate == Coordinate("acme", "my-tool", "1.2.3-RC.1", "linux-amd64")
    assert str(coordinate) == "acme/my-tool/1.2.3-RC.1/linux-amd64"


def test_underscores_stay_in_namespaces_and_variants():
    coordinate = Coordinate.parse("my_org", "x", "1.0.0", "py3_none")

    assert (coordinate.namespace, coordinate.variant) == ("my_org", "py3_none")


HOSTILE_SEGMENTS = [
    "..",
    ".",
    "../etc",
    "a/../../b",
    "/etc/passwd",
    "%2e%2e",
    "%2e%2e%2fetc",
    "..%2f",
    "a\x00b",
    "..\\..\\windows",
    "a\\b",
    "\u2024\u2024",  # ONE DOT LEADER, twice
    "\uff0e\uff0e",  # FULLWIDTH FULL STOP, twice
    "\u2025",  # TWO DOT LEADER
    "a\u2215b",  # DIVISION SLASH
    "\u212aelvin",  # KELVIN SIGN lower-cases to an ASCII k
    "x" * 129,
    "x" * 5000,
    "",
    "   ",
    "-leading-dash",
    "_leading",
    ".hidden",
    "a b",
    "a:b",
    "a\nb",
    None,
    42,
]


@pytest.mark.parametrize("segment", HOSTILE_SEGMENTS)
@pytest.mark.parametrize("part", ["namespace", "name", "variant"])
def test_hostile_segments_are_refused_as_validation_errors(part, segment):
    fields = {"namespace": "acme", "name": "tool", "version": "1.0.0"}
    fields["variant"] = "default"
    fields[part] = segment

    with pytest.raises(CoordinateInvalid) as caught:
        Coordinate.from_mapping(fields)

    assert caught.value.code == "VALIDATION_ERROR"
    assert caught.value.status == 400


@pytest.mark.parametrize(
    "version",
    [
        "..",
        "../1.0.0",
        "1.0.0/../../x",
        "v1.0.0",
        "1.0",
        "01.0.0",
        "1.0.0-rc.01",
        "1.0.0\x00",
        "\u0661.0.0",  # ARABIC-INDIC DIGIT ONE
        "1.0.0-" + "a" * 200,
        "1.0.0+build\\x",
        "",
        None,
    ],
)
def test_versions_that_are_not_semver_are_refused(version):
    with pytest.raises(CoordinateInvalid):
        normalise_version(version)


@pytest.mark.parametrize(
    "version", ["0.0.0", "1.10.0", "1.0.0-rc.10", "1.0.0+build.7", "2.0.0-x-y.1+z"]
)
def test_semver_versions_are_accepted_unchanged(version):
    assert normalise_version(version) == version


def test_a_coordinate_needs_an_object():
    with pytest.raises(CoordinateInvalid):
        Coordinate.from_mapping(["acme", "tool", "1.0.0", "default"])

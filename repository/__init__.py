"""The artifact repository: coordinates, SemVer precedence and storage.

A domain package with no web or queue code in it. The API's direct
endpoints and the workflow nodes both call ``ArtifactStore`` so each
operation has one implementation. May import the standard library, the
``semver`` library and ``packagerepo``.
"""

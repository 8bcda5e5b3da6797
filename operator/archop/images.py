"""Operand image references: whether one is pinned, and what its tag says about the version.

Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The number a tag starts with: 15 in "15", "15.8" and "15.8-bookworm". The CEL rule reads the same number
# (':[0-9]+' in the last path segment); tests/test_images.py checks that both agree.
_LEADING_NUMBER = re.compile(r"[0-9]+")
# A tag that names a full version: major.minor or major.minor.patch, then an optional -suffix (the OS flavour
# of the official images: 15.8-bookworm, 1.27.5-alpine).
_VERSION_TAG = re.compile(r"(?P<version>[0-9]+(?:\.[0-9]+){1,2})(?:-[A-Za-z0-9][A-Za-z0-9._-]*)?")
DIGEST_PREFIX = "sha256:"


@dataclass(frozen=True)
class ImageRef:
    """`[registry[:port]/]path[:tag][@sha256:hex]`, split. Only the last path segment may carry a tag: the
    colon of a registry port is followed by a slash."""

    repository: str
    tag: str | None = None
    digest: str | None = None  # "sha256:<64 hex>"

    @classmethod
    def parse(cls, text: str) -> ImageRef:
        rest, at, digest = text.partition("@")
        slash = rest.rfind("/") + 1
        name, colon, tag = rest[slash:].partition(":")
        return cls(repository=rest[:slash] + name, tag=tag if colon else None, digest=digest if at else None)

    def __str__(self) -> str:
        return (self.repository + (f":{self.tag}" if self.tag is not None else "")
                + (f"@{self.digest}" if self.digest is not None else ""))

    @property
    def major(self) -> int | None:
        """The number the tag starts with, taken as the major version; None without a tag, or when the tag
        starts with anything else (latest, bookworm, v15). The digest says nothing about the version."""
        found = _LEADING_NUMBER.match(self.tag or "")
        return int(found.group()) if found else None

    def pinned(self, version_parts: int = 2) -> bool:
        """A digest, or a tag with a version of at least `version_parts` numbers (2: 15.8, the whole version
        of Postgres 10 and later; 3: 7.0.15 for Redis and nginx). `15`, `7`, `1.27` with 3 and `latest` float:
        the registry moves them to each new release, so a pod restarted next month may run other code."""
        if self.digest is not None and self.digest.startswith(DIGEST_PREFIX):
            return True
        found = _VERSION_TAG.fullmatch(self.tag or "")
        return found is not None and found.group("version").count(".") + 1 >= version_parts

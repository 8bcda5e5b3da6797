"""Operand image references: whether one is pinned, what its tag says about the Postgres major version, and
the operator's half of the rule that the major version of a running database never changes in place.

A Postgres data directory can only be run by the major version that wrote it (pg_upgrade converts it, and
archop does not run pg_upgrade). Two guards keep another major off the data:

- The CRD's transition rule on spec.database.image (CEL, crds/archop.io_architectures.yaml) refuses an edit
  whose old and new tags both start with a number when the numbers differ. It sees only the field's two
  values: not the operator-wide default (ARCHOP_POSTGRES_IMAGE, changed by a Helm value or an operator
  upgrade), not an image set where none was or removed, not a reference without a version tag.
- The operator sees the rest (`database_image` below). The monitor records the major the running servers
  report (server_version_num, status.postgresMajor); the reconcile compares the image it would roll out with
  it and, when both are known and differ, keeps the StatefulSet on the image it runs and says why
  (status.majorUpgradeRefused, condition DatabaseReady, event MajorUpgradeRefused).

Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

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


def postgres_major(server_version_num: int | None) -> int | None:
    """The major version in server_version_num (150008 -> 15). Before 10 the major had two parts (9.6); this
    gives 9 for those, as the tag rule would, and archop does not run them anyway (its probe needs 10)."""
    return server_version_num // 10000 if server_version_num else None


class ImageSource(StrEnum):
    """Where the Postgres image the reconcile would roll out comes from: what a refusal asks the user to
    change."""

    SPEC = "spec"  # spec.database.image
    DEFAULT = "default"  # unset in the spec: the operator's ARCHOP_POSTGRES_IMAGE (Helm images.postgres)


@dataclass(frozen=True)
class MajorRefusal:
    """An image the reconcile did not roll out because its tag's major differs from the data's. Recorded in
    status.majorUpgradeRefused (the reconcile writes it, the monitor turns it into DatabaseReady)."""

    image: str  # what would have been rolled out
    source: ImageSource
    image_major: int
    data_major: int
    running_image: str  # what the StatefulSet keeps running

    def message(self) -> str:
        """For the event and the condition: what was refused, why, and both ways out. Names the field to
        change (spec.database.image) either way. Under 1024 characters with common image names: kopf cuts an
        event's message there (the condition keeps it whole)."""
        if self.source is ImageSource.SPEC:
            asked = f"spec.database.image asks for {self.image} (PostgreSQL {self.image_major})"
        else:
            asked = (f"spec.database.image is unset, so the operator's default ARCHOP_POSTGRES_IMAGE "
                     f"applies: {self.image} (PostgreSQL {self.image_major})")
        return (f"{asked}, but the data is PostgreSQL {self.data_major}, which another major version "
                f"cannot run: not rolled out; the database keeps running {self.running_image}. To stay on "
                f"{self.data_major}, set spec.database.image to a PostgreSQL {self.data_major} image (such "
                f"as {self.running_image}). To upgrade to {self.image_major}, create a new Architecture with "
                f"that image and restore a dump of this one into it (pg_dump and pg_restore; see "
                f"docs/failover.md, Postgres versions): pg_upgrade in place is not supported")

    def to_status(self) -> dict[str, Any]:
        return {"image": self.image, "source": self.source.value, "imageMajor": self.image_major,
                "dataMajor": self.data_major, "runningImage": self.running_image}

    @classmethod
    def from_status(cls, raw: Any) -> MajorRefusal | None:
        """The record as the reconcile wrote it; None when there is none (or it cannot be read)."""
        if not isinstance(raw, dict):
            return None
        try:
            return cls(image=str(raw["image"]), source=ImageSource(raw["source"]),
                       image_major=int(raw["imageMajor"]), data_major=int(raw["dataMajor"]),
                       running_image=str(raw["runningImage"]))
        except (KeyError, TypeError, ValueError):
            return None


@dataclass(frozen=True)
class ImageDecision:
    """The Postgres image the StatefulSet gets, and the refusal when that is not the one asked for."""

    image: str
    refusal: MajorRefusal | None = None


def database_image(spec_image: str | None, default_image: str, running_image: str | None,
                   data_major: int | None) -> ImageDecision:
    """The image to render into the database StatefulSet.

    `spec_image` is spec.database.image (None: unset), `default_image` the operator's ARCHOP_POSTGRES_IMAGE,
    `running_image` the postgres container's image in the deployed StatefulSet (None: none deployed yet),
    `data_major` status.postgresMajor (None: not probed yet).

    The data's major is what the servers reported; until a probe has, the running image's tag stands in for
    it (the first reconcile after an operator upgrade runs before the monitor's first probe). When the data's
    major and the asked image's major are both known and differ, the StatefulSet keeps its running image and
    nothing else about it changes: the rest of the spec still applies, and no pod is restarted onto a server
    that would refuse its data directory. Without a StatefulSet there is nothing to protect (a first apply);
    with an image that names no major (a bare digest, `latest`) the operator cannot know and lets it through.
    """
    wanted = spec_image or default_image
    if running_image is None or wanted == running_image:
        return ImageDecision(wanted)
    have = data_major if data_major is not None else ImageRef.parse(running_image).major
    want = ImageRef.parse(wanted).major
    if have is None or want is None or have == want:
        return ImageDecision(wanted)
    source = ImageSource.SPEC if spec_image else ImageSource.DEFAULT
    return ImageDecision(running_image, MajorRefusal(image=wanted, source=source, image_major=want,
                                                     data_major=have, running_image=running_image))

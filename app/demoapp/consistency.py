"""Consistency tokens: WAL positions (LSNs) that let a client read its own writes from a follower.

Pure: no I/O. A write answers with the position of its commit (`X-Commit-LSN`, cookie `commit_lsn`); a read
that carries it (`X-Min-LSN`, `?min_lsn=`, the cookie) is only served by data at least that new. LSNs are
comparable across a failover: the promoted follower's new timeline continues from the position it had
replayed, so positions only grow (see app/README.md, "Consistency").
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Generic, TypeVar

T = TypeVar("T")
# Postgres prints a pg_lsn as two 32-bit halves in hex, "%X/%X" (e.g. 0/16B3740).
_LSN = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")

COMMIT_HEADER = "X-Commit-LSN"  # on writes: the position of the write's commit
READ_HEADER = "X-Read-LSN"  # on reads: the answer reflects every write whose X-Commit-LSN <= this
MIN_HEADER = "X-Min-LSN"  # on reads: answer with data at least this new
MIN_ARG = "min_lsn"
COOKIE = "commit_lsn"
COOKIE_MAX_AGE = 60  # s: far above any healthy replica lag; a browser reads its own writes for free meanwhile


@dataclass(frozen=True, order=True)
class Lsn:
    """A WAL position as one 64-bit number, so that 0/FFFFFFFF < 1/0 compares right."""

    value: int

    @classmethod
    def parse(cls, text: str) -> Lsn:
        m = _LSN.match(text.strip())
        if m is None:
            raise ValueError(f"not a WAL position: {text!r}")
        return cls(int(m[1], 16) << 32 | int(m[2], 16))

    def __str__(self) -> str:
        return f"{self.value >> 32:X}/{self.value & 0xFFFFFFFF:X}"


class BadToken(ValueError):
    def __init__(self, source: str, raw: str) -> None:
        super().__init__(f"{source} must be a WAL position like 0/16B3740 (as in {COMMIT_HEADER}), "
                         f"got {raw[:40]!r}")
        self.source = source


def highest_token(sources: Mapping[str, str | None]) -> Lsn | None:
    """The highest of the tokens a request carries ({where it came from: raw value}), None without any.
    Why the highest: the client has seen every one of those writes, so it must see the newest."""
    found: list[Lsn] = []
    for source, raw in sources.items():
        if raw is None:
            continue
        try:
            found.append(Lsn.parse(raw))
        except ValueError:
            raise BadToken(source, raw) from None
    return max(found, default=None)


def cookie_header(lsn: Lsn) -> str:
    """The Set-Cookie value, written by hand: http.cookies would quote the '/' in the value."""
    return f"{COOKIE}={lsn}; Max-Age={COOKIE_MAX_AGE}; Path=/; HttpOnly; SameSite=Lax"


class Consistency(Enum):
    EVENTUAL = "eventual"  # CDN, Redis or a follower, however old (bounded: see app/README.md)
    READ_YOUR_WRITES = "read-your-writes"  # a follower or cache at least as new as the token, else the leader
    STRONG = "strong"  # the leader, no caches


@dataclass(frozen=True)
class Freshness:
    """What one read asks for."""

    level: Consistency
    min_lsn: Lsn | None = None  # set exactly when level is READ_YOUR_WRITES

    @classmethod
    def of(cls, strong: bool, token: Lsn | None) -> Freshness:
        """Strong wins over a token: the leader has every acknowledged write anyway."""
        if strong:
            return cls(Consistency.STRONG)
        if token is not None:
            return cls(Consistency.READ_YOUR_WRITES, token)
        return cls(Consistency.EVENTUAL)


@dataclass(frozen=True)
class Versioned(Generic[T]):
    """A value and the position it was read at: it reflects every write whose X-Commit-LSN <= lsn."""

    value: T
    lsn: Lsn

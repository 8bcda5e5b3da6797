"""Fixtures for the Postgres integration tests: a scratch directory postgres can use, and cleanup of every
instance a test started (stopped immediately, so a failing test leaves no server behind)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from testsupport.postgres import PgInstance, make_base, stop_script


class Cluster:
    """Instances and background scripts started by one test."""

    def __init__(self, base: Path):
        self.base = base
        self.instances: list[PgInstance] = []
        self.procs: list[subprocess.Popen] = []

    def add(self, inst: PgInstance, proc: subprocess.Popen | None = None) -> PgInstance:
        self.instances.append(inst)
        if proc is not None:
            self.procs.append(proc)
        return inst

    def close(self) -> None:
        for inst in self.instances:
            inst.thaw()
            try:
                inst.stop("immediate")
            except subprocess.CalledProcessError:
                inst.kill()
        for p in self.procs:
            stop_script(p)


@pytest.fixture
def pg() -> Iterator[Cluster]:
    # Not under pytest's tmp_path: its parents are 0700 and the postgres user must traverse them.
    tmp = Path(tempfile.mkdtemp(prefix="archop-it-"))
    cluster = Cluster(make_base(tmp))
    try:
        yield cluster
    finally:
        cluster.close()
        if not os.environ.get("ARCHOP_KEEP_PG"):  # set it to keep data directories and logs for debugging
            shutil.rmtree(tmp, ignore_errors=True)

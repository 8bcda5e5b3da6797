"""main.py: the startup handler configures kopf as the conventions say; every handler is registered; cli.py
starts kopf over the namespaces the settings name."""

from __future__ import annotations

import logging
from typing import Any

import kopf
import pytest
from archop import cli, main, names
from archop.config import Settings


def test_startup_configures_every_setting() -> None:
    settings = kopf.OperatorSettings()
    main.configure(settings=settings)
    assert settings.persistence.finalizer == names.FINALIZER == "archop.io/finalizer"
    assert isinstance(settings.persistence.progress_storage, kopf.AnnotationsProgressStorage)
    assert settings.persistence.progress_storage.prefix == "archop.io"
    assert isinstance(settings.persistence.diffbase_storage, kopf.AnnotationsDiffBaseStorage)
    assert settings.persistence.diffbase_storage.prefix == "archop.io"
    assert settings.peering.standalone is True and settings.scanning.disabled is True
    assert (settings.watching.server_timeout, settings.watching.client_timeout,
            settings.watching.connect_timeout) == (60, 70, 5)
    assert settings.posting.level == logging.INFO and settings.posting.reporting_component == "archop"


def test_handlers_are_registered_for_architectures() -> None:
    registry = kopf.get_default_registry()
    resource = kopf.Resource(names.GROUP, names.VERSION, names.PLURAL)
    changing = {h.id for h in registry._changing.get_all_handlers()}  # noqa: SLF001 - no public listing
    assert {"reconcile", "delete"} <= {i.split("/")[0] for i in changing}
    spawning = {h.id: h for h in registry._spawning.get_all_handlers()}  # noqa: SLF001
    assert set(spawning) == {"monitor", "certificates", "passwords"}
    daemon, timer = spawning["monitor"], spawning["certificates"]
    assert daemon.cancellation_timeout == 5.0
    # The periodic certificate check: every 6 h, first well after the resume reconcile has checked.
    assert type(timer).__name__ == "TimerHandler"
    assert (timer.interval, timer.initial_delay) == (6 * 3600.0, 600.0)
    # The periodic password check: every 10 s, so a rotated password reaches the server within seconds.
    passwords = spawning["passwords"]
    assert type(passwords).__name__ == "TimerHandler"
    assert (passwords.interval, passwords.initial_delay) == (10.0, 10.0)
    assert all(h.selector.check(resource) for h in spawning.values())
    assert all(h.selector.check(resource) for h in registry._changing.get_all_handlers())  # noqa: SLF001
    indexes = registry._indexing.get_all_handlers()  # noqa: SLF001
    assert [h.id for h in indexes] == ["ingress_hosts"]
    assert indexes[0].selector.check(resource)


@pytest.mark.parametrize(("watched", "clusterwide"), [((), True), (("shop", "team-b"), False)])
def test_kopf_watches_all_namespaces_or_the_watched_ones(monkeypatch: pytest.MonkeyPatch,
                                                         watched: tuple[str, ...], clusterwide: bool) -> None:
    """`kopf run --all-namespaces`, or `--namespace` per watched namespace (the chart's RBAC follows)."""
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(kopf, "run", lambda **kwargs: calls.append(kwargs))
    cli.run_kopf(Settings(watch_namespaces=watched), None)
    (call,) = calls
    assert call["clusterwide"] is clusterwide and call["namespaces"] == list(watched)
    assert call["standalone"] is True

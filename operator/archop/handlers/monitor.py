"""The per-Architecture health loop (a kopf daemon) and THE periodic status writer.

Each tick is failover/runner.py's `tick`: observe the database tier (pods, nodes, one SQL probe per
instance, concurrently) -> decide (failover/decide.py, pure) -> act (failover/act.py; a failover through
runner.run_failover, which writes the record to the status BEFORE each phase acts) -> write status. This
module supplies its effects against the cluster, and what only a real process does around it: the lease
session, logs, events, metrics. Every couple of seconds the other tiers' conditions are refreshed too
(observe_workloads + workload_conditions + summarise).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Mapping
from typing import Any

from archop import apply, config, election, events, metrics, names, observe, ownership, reasons
from archop import status as st
from archop.build import tls
from archop.build.database import PGDATA, PORT, TLS_DIR
from archop.failover import decide as d
from archop.failover import report, runner
from archop.failover.act import Executor, LeaseSession, NotLeading, follower_conninfo, kube_effects
from archop.failover.lease import LeaseClock
from archop.health.model import DbObservation, Instance, PodState
from archop.health.pods import observe_pods
from archop.health.probe import Target, Verify, probe_all
from archop.images import MajorRefusal
from archop.spec import ArchitectureSpec

PASSFILE = PGDATA.rsplit("/", 1)[0] + "/archop.pgpass"  # written by start.sh next to PGDATA
POD_CA_FILE = f"{TLS_DIR}/{tls.CA_CERT}"  # the CA in a database pod: followers verify their leader with it
CA_REFRESH_SECONDS = 300.0  # how often the operator reads the CA Secret again
WORKLOAD_EVERY = 2.0  # seconds between refreshes of the other tiers' conditions
TAKEOVER_WINDOW = 60.0  # seconds after a Lease takeover in which a new daemon inherits the blind interval
EVENT_REPEAT = 30.0  # the same non-step event reason at most this often
# Events of the failover steps themselves: always emitted.
_STEP_EVENTS = {reasons.FAILOVER_STARTED, reasons.LEADER_FENCED, reasons.FOLLOWER_PROMOTED,
                reasons.SERVICES_REWIRED, reasons.FOLLOWERS_REPOINTED, reasons.FAILOVER_COMPLETED,
                reasons.SWITCHOVER_STARTED, reasons.SWITCHOVER_COMPLETED, reasons.FOLLOWER_REJOINED,
                reasons.REJOIN_BY_BASE_BACKUP, reasons.LEADER_ELECTED,
                reasons.REBUILD_STARTED, reasons.FOLLOWER_REBUILT}


def _now_iso() -> str:
    return d.iso(time.time())


def _blind_since() -> float | None:
    """After an unclean operator takeover (the holder died, e.g. with its node), the time nobody watched
    counts toward the leader timeout. Only for daemons started right after the takeover."""
    if election.took_over_at is None or time.time() - election.took_over_at > TAKEOVER_WINDOW:
        return None
    return election.unwatched_since


def own_secret(api: Any, arch: str, namespace: str, uid: str, secret: str) -> dict[str, Any]:
    """The Secret `secret`, only if it is Architecture `arch`'s (with `uid`): a foreign one's password would
    be sent to every database pod, and a foreign CA would make the operator trust whatever server it names.
    LookupError otherwise."""
    obj = apply.get(api, "v1", "Secret", namespace, secret)
    if obj is None:
        raise LookupError(f"Secret {namespace}/{secret} does not exist")
    if not ownership.owned(obj, "Secret", arch, uid):
        raise LookupError(f"Secret {namespace}/{secret} is not this {names.KIND}'s: "
                          f"{ownership.why_foreign(obj, arch)}")
    return obj


def read_credentials(secret: dict[str, Any]) -> tuple[str, str]:
    """(username, password) of a database Secret as read from the API."""
    data = secret.get("data") or {}
    return (base64.b64decode(data.get("username", "")).decode(),
            base64.b64decode(data.get("password", "")).decode())


class DbMonitor:
    """State of one Architecture's loop. Only in-process timers live here; the truth is in status."""

    def __init__(self, name: str, namespace: str, uid: str, api: Any,
                 logger: logging.Logger | logging.LoggerAdapter):
        self.name, self.namespace, self.uid, self.api, self.log = name, namespace, uid, api, logger
        self.foreign_pods: tuple[str, ...] = ()
        self.memory = d.Memory(unwatched_since=_blind_since())
        self.written: dict[str, Any] = {}  # what we patched last: the live `status` view may lag behind it
        self.secret: tuple[str, str] | None = None
        # The CA certificate as a private file (0600, this process only), what libpq's sslrootcert names:
        # None until the N-ca Secret was read, and then no Target is made at all (fail closed).
        self.ca_file: str | None = None
        self.ca_pem = ""
        self.ca_read_at = -CA_REFRESH_SECONDS
        self.repl_user = "replicator"
        self.last_events: dict[str, float] = {}
        self.last_workload = 0.0
        self.workload_fields: dict[str, Any] = {}
        self.body: dict[str, Any] = {}
        set_label, delete_pod = kube_effects(api, namespace)
        self.pods: dict[str, PodState] = {}
        self.executor = Executor(target=self._target, upstream=self._upstream, set_label=set_label,
                                 delete_pod=delete_pod, may_act=election.holds_now, renew_lease=self.vouch,
                                 target_at=self._target_at)
        self.lease = LeaseClock(started=time.time())
        self.lease_session = LeaseSession()
        # The pod whose leader lease this process keeps renewing between ticks (renewals()): the leader the
        # last tick found healthy, or a failover's target from its pre-promotion renewal on. A tick can take
        # seconds (probes of unreachable pods time out), longer than the lease's TTL.
        self.vouched: str | None = None
        self.renew_lock = asyncio.Lock()  # one renewal at a time, and none in flight once a tick withdraws

    # ------------------------------------------------------------------ observing

    def _own_secret(self, secret: str) -> dict[str, Any]:
        return own_secret(self.api, self.name, self.namespace, self.uid, secret)

    def _read_secret(self, which: str) -> tuple[str, str]:
        return read_credentials(self._own_secret(names.db_secret(self.name, which)))

    def _read_ca(self) -> str:
        return tls.read_ca_cert(self._own_secret(names.ca_secret(self.name)))

    async def _trust(self) -> None:
        """Read the CA certificate (again every CA_REFRESH_SECONDS) into self.ca_file. The first read must
        succeed, or the tick fails: no probe, no decision on servers the operator cannot verify. A later
        failure keeps the CA read last."""
        if time.monotonic() - self.ca_read_at < CA_REFRESH_SECONDS:
            return
        try:
            pem = await asyncio.to_thread(self._read_ca)
        except (LookupError, tls.TlsError) as exc:
            if self.ca_file is None:
                raise
            self.log.warning("keeping the CA read before: %s", exc)
            return
        if pem != self.ca_pem:
            self._write_ca(pem)
        self.ca_read_at = time.monotonic()

    def _write_ca(self, pem: str) -> None:
        """Replace the CA file atomically: a connect in flight reads either the old or the new one."""
        fd, path = tempfile.mkstemp(prefix=f"archop-{self.namespace}-{self.name}-", suffix="-ca.crt")
        with os.fdopen(fd, "w") as f:  # mkstemp creates it 0600
            f.write(pem)
        if self.ca_file is None:
            self.ca_file = path
        else:
            os.replace(path, self.ca_file)
        self.ca_pem = pem

    def forget_ca(self) -> None:
        if self.ca_file is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.ca_file)
            self.ca_file, self.ca_pem, self.ca_read_at = None, "", -CA_REFRESH_SECONDS

    async def _credentials(self) -> tuple[str, str]:
        if self.secret is None:
            self.secret = await asyncio.to_thread(self._read_secret, "superuser")
            self.repl_user = (await asyncio.to_thread(self._read_secret, "replication"))[0] or self.repl_user
        return self.secret

    def _target(self, pod: str) -> Target | None:
        state = self.pods.get(pod)
        return self._target_at(pod, state.ip) if state is not None and state.ip else None

    def _target_at(self, pod: str, address: str) -> Target | None:
        """`pod`'s Postgres at `address`, verified to hold a certificate for the pod's DNS name; None (so
        unreachable) until the credentials and the CA are known."""
        if self.secret is None or self.ca_file is None:
            return None
        return Target(host=address, port=PORT, user=self.secret[0], password=self.secret[1],
                      verify=Verify(names.db_pod_host(self.name, pod, self.namespace), self.ca_file))

    def _upstream(self, follower: str, leader: str) -> str:
        state = self.pods.get(leader)
        return follower_conninfo(names.db_pod_host(self.name, leader, self.namespace), PORT, self.repl_user,
                                 follower, PASSFILE, hostaddr=state.ip if state else None,
                                 sslrootcert=POD_CA_FILE)

    async def observe(self, spec: ArchitectureSpec, keep: DbObservation | None = None,
                      skip: frozenset[str] = frozenset()) -> DbObservation:
        """Probe every database pod. Pods in `skip` keep their probe from `keep` (an unreachable old
        leader would cost a full connect timeout on each re-observation during a failover)."""
        await self._credentials()
        await self._trust()
        seen = await asyncio.to_thread(observe_pods, self.api, self.name, self.namespace, self.uid)
        if seen.foreign != self.foreign_pods and seen.foreign:
            self.log.warning("ignoring pods with the database labels that are not this %s's: %s (never "
                             "probed, never sent credentials)", names.KIND, ", ".join(seen.foreign))
        self.foreign_pods = seen.foreign
        pods = self.pods = seen.pods
        count = max(spec.database.instances, seen.replicas or 0)
        wanted = {names.db_pod(self.name, i) for i in range(count)} | set(pods)
        probe_names = [n for n in sorted(wanted) if not (keep and n in skip and n in keep.instances)]
        probes = await probe_all({n: self._target(n) for n in probe_names})
        instances = {}
        for n in sorted(wanted):
            probe = probes[n] if n in probes else keep.instances[n].probe  # type: ignore[union-attr]
            instances[n] = Instance(name=n, pod=pods.get(n), probe=probe)
        obs = DbObservation(
            instances=instances, desired=spec.database.instances,
            hosts={n: names.db_pod_host(self.name, n, self.namespace) for n in wanted},
            rw_host=names.service_host(names.db_rw(self.name), self.namespace))
        return await runner.with_lease_session(obs, self.lease_session.established(), self.lease, self.vouch)

    # ------------------------------------------------------------------ writing

    def view(self, status: dict[str, Any]) -> dict[str, Any]:
        """The live status overlaid with what this process wrote last (it is the only writer of these)."""
        merged = dict(status or {})
        merged.update(self.written)
        return {k: v for k, v in merged.items() if v is not None}

    async def patch(self, patch: dict[str, Any]) -> None:
        if not election.holds_now():
            raise NotLeading("not sure to hold the operator Lease; status not written")
        await asyncio.to_thread(apply.patch_status, self.api, self.name, self.namespace, patch)
        self.written.update(patch)

    def emit(self, note: d.Note) -> None:
        now = time.monotonic()
        if note.reason not in _STEP_EVENTS and now - self.last_events.get(note.reason, -1e9) < EVENT_REPEAT:
            return
        self.last_events[note.reason] = now
        log = self.log.warning if note.warning else self.log.info
        log("%s: %s", note.reason, note.message)
        try:
            events.emit(self.body, note.reason, note.message, warning=note.warning)
        except Exception as exc:  # events are best effort; the status carries the truth
            self.log.debug("event %s not emitted: %s", note.reason, exc)

    # ------------------------------------------------------------------ the tick

    async def tick(self, body: dict[str, Any], spec_raw: dict[str, Any], status: dict[str, Any]) -> None:
        """One tick: failover/runner.py's sequence, wired to the cluster and this process' lease session."""
        self.body = body
        spec = ArchitectureSpec.parse(spec_raw)
        annotations = (body.get("metadata") or {}).get("annotations") or {}
        done = await runner.tick(self.view(status), annotations, spec.database, self.memory,
                                 self._effects(body, spec))
        self.metrics(done.obs, done.leader)

    def _effects(self, body: dict[str, Any], spec: ArchitectureSpec) -> runner.TickEffects:
        async def observe() -> DbObservation:
            return await self.observe(spec)

        async def status_fields(obs: DbObservation, leader: str | None, message: str,
                                in_flight: d.FailoverRecord | None) -> dict[str, Any]:
            return await self.status_fields(body, spec, obs, leader, message, in_flight)

        return runner.TickEffects(
            observe=observe, reobserve=self._reobserve(spec), persist=self.patch, executor=self.executor,
            emit=self.emit, vouch=self.vouch, withdraw_unless=self.withdraw_unless,
            drop_switchover=self._drop_switchover, status_fields=status_fields, remember=self._remember,
            failover_begins=self._failover_begins, failover_done=self.completed,
            maintenance_failed=self._maintenance_failed, lease=self.lease)

    def _remember(self, memory: d.Memory) -> None:
        self.memory = memory

    async def _failover_begins(self, record: d.FailoverRecord, new: bool) -> None:
        if new:
            self.log.warning("%s -> %s starting (%s)", record.from_, record.to, record.reason)
            async with self.renew_lock:
                await self.lease_session.close()  # no more renewals for the leader being replaced

    def _maintenance_failed(self, errors: list[str]) -> None:
        self.log.info("some maintenance actions failed (retried next tick): %s", "; ".join(errors))

    async def vouch(self, pod: str) -> bool:
        """Renew this pod's leader lease, only while this process surely holds the operator Lease; from then
        on renewals() keeps renewing it until a tick withdraws it."""
        async with self.renew_lock:
            target = self._target(pod)
            if target is None or not election.holds_now():
                return False
            if not self.lease.record(pod, await self.lease_session.renew(pod, target), time.time()):
                return False
            self.vouched = pod
            return True

    async def withdraw_unless(self, pod: str | None) -> None:
        """Stop renewing any pod but `pod`. Taking the lock waits out a renewal in flight, so once this
        returns, the lease clock holds this process' last renewal of a withdrawn leader."""
        if self.vouched is not None and self.vouched != pod:
            async with self.renew_lock:
                self.vouched = None

    async def renewals(self, every: float) -> None:
        """Renew the vouched pod's lease every `every` seconds, independent of how long a tick takes."""
        while True:
            pod = self.vouched
            if pod is not None:
                try:
                    await self.vouch(pod)
                except Exception as exc:  # the next round retries; the lease's TTL spans three of them
                    self.log.debug("lease renewal of %s failed: %s", pod, exc)
            await asyncio.sleep(every)

    def _reobserve(self, spec: ArchitectureSpec) -> runner.Observe:
        async def again(previous: DbObservation, skip: frozenset[str]) -> DbObservation:
            return await self.observe(spec, keep=previous, skip=skip)
        return again

    def completed(self, record: d.FailoverRecord) -> None:
        last = self.written.get("lastFailover") or {}
        reason = reasons.SWITCHOVER_COMPLETED if record.planned else reasons.FAILOVER_COMPLETED
        took = last.get("durationSeconds", 0.0)
        self.emit(d.Note(reason, f"{record.from_} -> {record.to} in {took}s ({record.reason})"))
        metrics.failovers_total.labels(self.namespace, self.name, record.reason).inc()
        metrics.failover_duration_seconds.labels(self.namespace, self.name).observe(took)

    async def _drop_switchover(self) -> None:
        await asyncio.to_thread(self._drop_annotation)

    def _drop_annotation(self) -> None:
        """The one-shot switchover annotation is done: remove it."""
        apply.annotate(self.api, self.name, self.namespace, {d.SWITCHOVER_ANNOTATION: None})

    async def status_fields(self, body: dict[str, Any], spec: ArchitectureSpec, obs: DbObservation,
                            leader: str | None, message: str,
                            in_flight: d.FailoverRecord | None) -> dict[str, Any]:
        """The conditions and the other tiers' fields of the status write that ends a tick (the database
        tier's own fields come from runner.tick)."""
        now = _now_iso()
        generation = int((body.get("metadata") or {}).get("generation") or 0)
        current = self.view(body.get("status") or {})
        conditions = list(current.get("conditions") or [])
        # What the reconcile recorded when it kept the database on its running image (archop/images.py).
        refusal = MajorRefusal.from_status(current.get("majorUpgradeRefused"))
        ok, reason, msg = report.database_condition(obs, leader, in_flight is not None, message, refusal)
        conditions = st.set_condition(conditions, reasons.DATABASE_READY, ok, reason, msg, generation, now)
        fip = reasons.FAILOVER_IN_PROGRESS
        if in_flight is not None:
            text = f"{in_flight.phase}: {in_flight.from_} -> {in_flight.to}"
            cond = (True, reasons.FAILOVER_STARTED, text)
        else:
            cond = (False, reasons.NO_FAILOVER, "no failover in progress")
        conditions = st.set_condition(conditions, fip, *cond, generation, now)
        if time.monotonic() - self.last_workload >= WORKLOAD_EVERY:
            self.last_workload = time.monotonic()
            try:
                wobs = await asyncio.to_thread(observe.observe_workloads, self.api, self.name,
                                               self.namespace, spec)
                conditions = st.workload_conditions(wobs, spec, conditions, generation, now)
                self.workload_fields = st.workload_fields(wobs)
            except Exception as exc:
                self.log.info("workload observation failed: %s", exc)
        # What the reconcile recorded (foreign children, the ingress host decision) as conditions.
        conditions = st.ownership_conditions(conditions, spec, body.get("status") or {}, generation, now)
        conditions = st.summarise(conditions, generation, now)
        metrics.architecture_ready.labels(self.namespace, self.name).set(
            1 if st.is_true(conditions, reasons.READY) else 0)
        return {"conditions": conditions, **self.workload_fields}

    def metrics(self, obs: DbObservation, leader: str | None) -> None:
        m = metrics
        lead = obs.get(leader)
        up = lead is not None and lead.probe.is_primary
        m.leader_up.labels(self.namespace, self.name).set(1 if up else 0)
        for role, count in report.role_counts(obs).items():
            m.database_instances.labels(self.namespace, self.name, role).set(count)
        for row in report.instances_status(obs, leader):
            if "lagBytes" in row:
                m.replication_lag_bytes.labels(self.namespace, self.name, row["name"]).set(row["lagBytes"])


async def monitor(*, name: str, namespace: str, body: Mapping[str, Any], spec: Mapping[str, Any],
                  status: Mapping[str, Any], stopped: Any, logger: Any, **_: Any) -> None:
    """kopf daemon body: loop until stopped. Errors of one tick are logged and the next tick retries."""
    settings = config.Settings.from_env()
    interval = float(settings.monitor_interval_seconds)
    api = apply.api()
    mon = DbMonitor(name, namespace, body["metadata"]["uid"], api, logger)
    renewing = asyncio.create_task(mon.renewals(every=interval))
    try:
        while not stopped:
            started = time.monotonic()
            try:
                await mon.tick(dict(body), dict(spec), dict(status))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("monitor tick failed: %s: %s", type(exc).__name__,
                               str(exc).splitlines()[0][:300])
            await asyncio.sleep(max(0.05, interval - (time.monotonic() - started)))
    finally:
        renewing.cancel()
        async with mon.renew_lock:
            await mon.lease_session.close()
        mon.forget_ca()

"""The periodic password check (a kopf timer, main.py): a password changed in N-db-app or N-cache reaches its
server, then the connection keys, then the pods that read it (docs/connecting.md, "Rotation").

The operator neither lists nor watches Secrets (its RBAC reads them by name only), so every
CHECK_INTERVAL_SECONDS this reads the two contract Secrets by name and asks build/secrets.py's
`password_state` whether each password is the one its servers were given (the record in annotation
archop.io/applied-password, a salted digest). When one changed:

1. the server takes it. Postgres: the role's password is set on the current leader, as a SCRAM verifier
   computed here (failover/act.py, set_role_password), only while the database is ready and no failover is
   in flight; the followers replay it. Sessions logged in before keep working: a password is checked only
   at login. Redis reads requirepass only when it starts: its pod rolls (step 3), nothing is set live.
2. the Secret's connection keys (uri, pgpass, url, ...) are rewritten from it and its record is replaced,
   in one write conditional on the resourceVersion read (a Secret changed again in between is looked at
   afresh on the next run, and its server given the newer password);
3. the reconcile runs: the pod templates carry the record's revision (build/secrets.py, PasswordRevisions),
   so the app pods (and for N-cache the Redis pod) roll by their Deployment's rolling update, and the new
   pods read the new keys.

Anything that fails (the leader unreachable, the Secret written meanwhile) is tried again on the next run,
with a log line, and for the server a Warning event, once per distinct failure. A password is never
logged, posted in an event, or sent to Postgres in clear.

The same run also looks whether the app and cache Deployments carry the revisions of the records, and runs
the reconcile when they do not (an operator that stopped between steps 2 and 3, a reconcile that failed):
a recorded password always reaches the pods. A Secret without a record (made before rotation existed) is
recorded as it is by the reconcile, when its keys show its password is the one in use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from enum import Enum
from typing import Any

import kopf
import psycopg

from archop import apply, events, names, ownership, reasons
from archop.build import app, cache, secrets, tls
from archop.build.database import PORT
from archop.failover import act
from archop.handlers import monitor
from archop.handlers import reconcile as rec
from archop.health.pods import observe_pods
from archop.health.probe import Target, Verify, short_error
from archop.spec import ArchitectureSpec

# A rotation starts within this long. Each run costs at most four GETs by name (two Secrets, the app and
# cache Deployments while their tiers run) and writes nothing unless something changed.
CHECK_INTERVAL_SECONDS = 10.0
INITIAL_DELAY_SECONDS = 10.0
SET_PASSWORD_TIMEOUT_SECONDS = 5.0
# What this check last said about each Secret (kopf's per-Architecture memo): a waiting or failing rotation
# is told once per distinct message, not every run.
MEMO_KEY = "archop_passwords_told"


class Wait(Enum):
    """Why the database cannot take a new password now (tried again on the next run)."""

    NO_LEADER = "no leader is known yet"
    FAILOVER = "a failover or switchover is in progress"
    NOT_READY = "the database is not ready"


class Outcome(Enum):
    """What a run did about one contract Secret."""

    NOTHING = "nothing"  # its password is applied (or there is none, or it is not this Architecture's)
    ADOPTED = "adopted"  # no record yet: the reconcile records it as applied
    ROTATED = "rotated"  # the new password was applied, the keys and the record written
    WAITING = "waiting"  # changed, but not now: the database is busy, or the Secret changed meanwhile
    FAILED = "failed"  # changed, and applying it failed


def database_wait(status: Mapping[str, Any]) -> Wait | None:
    """Whether the database can take a password now, from the status the monitor writes: a leader, no
    failover in flight, DatabaseReady true. None: it can, on status.currentLeader."""
    if not status.get("currentLeader"):
        return Wait.NO_LEADER
    if status.get("failover"):
        return Wait.FAILOVER
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == reasons.DATABASE_READY), None)
    if ready is None or ready.get("status") != "True":
        return Wait.NOT_READY
    return None


def lagging(arch: str, spec: ArchitectureSpec, revisions: secrets.PasswordRevisions,
            deployments: Mapping[str, Mapping[str, Any] | None]) -> list[str]:
    """The Deployments (by name, as read; None: absent) whose pod template does not carry the password
    revisions the builders would give it now."""
    want = {names.app(arch): app.password_annotations(spec, revisions) if spec.app.enabled else None,
            names.cache(arch): cache.password_annotations(revisions.cache) if spec.cache.enabled else None}
    out = []
    for deployment, wanted in want.items():
        found = deployments.get(deployment)
        if wanted is None or found is None:
            continue  # a tier that is off, or a Deployment not there yet: the reconcile's business
        template = ((found.get("spec") or {}).get("template") or {}).get("metadata") or {}
        have = template.get("annotations") or {}
        keys = {app.DB_PASSWORD_ANNOTATION, cache.PASSWORD_ANNOTATION}
        if {k: v for k, v in have.items() if k in keys} != wanted:
            out.append(deployment)
    return out


def check(
    name: str,
    namespace: str,
    body: dict[str, Any],
    spec: dict[str, Any],
    status_: dict[str, Any],
    generation: int,
    logger: logging.Logger | logging.LoggerAdapter,
    ingress_hosts: Mapping[str, Iterable[Any]] | None = None,
    memo: MutableMapping[str, Any] | None = None,
) -> dict[str, Outcome]:
    """One run: {contract Secret: what was done about it}."""
    try:
        parsed = ArchitectureSpec.parse(spec)
    except (TypeError, ValueError):
        return {}  # the reconcile reports an unreadable spec
    client = apply.api()
    uid = str((body.get("metadata") or {}).get("uid") or "")
    told = memo.setdefault(MEMO_KEY, {}) if memo is not None else {}
    found = {secret: apply.get(client, "v1", "Secret", namespace, secret)
             for secret in secrets.contract_secrets(name)}
    foreign = [secret for secret, obj in found.items()
               if obj is not None and not ownership.owned(obj, "Secret", name, uid)]
    if foreign:
        logger.info("password check skipped: Secret %s not this Architecture's (the reconcile reports it)",
                    ", ".join(foreign))
        return {}
    outcomes: dict[str, Outcome] = {}
    records: dict[str, str | None] = {}
    for secret, obj in found.items():
        outcome, records[secret] = Outcome.NOTHING, None
        if obj is not None:
            records[secret] = secrets.record_of(obj)
            state = secrets.password_state(name, namespace, obj)
            if state is secrets.PasswordState.UNRECORDED:
                outcome = Outcome.ADOPTED
            elif state is secrets.PasswordState.CHANGED:
                outcome, record = _rotate(client, body, name, namespace, uid, parsed, status_ or {}, obj,
                                          logger, told)
                records[secret] = record or records[secret]
        if outcome not in (Outcome.WAITING, Outcome.FAILED):
            told.pop(secret, None)
        outcomes[secret] = outcome

    tiers = {names.app(name): parsed.app.enabled, names.cache(name): parsed.cache.enabled}
    deployments = {d: apply.get(client, "apps/v1", "Deployment", namespace, d)
                   for d, on in tiers.items() if on}
    behind = lagging(name, parsed, secrets.PasswordRevisions.of(name, records),
                     {d: obj for d, obj in deployments.items()
                      if obj is not None and ownership.owned(obj, "Deployment", name, uid)})
    changed = [s for s, o in outcomes.items() if o in (Outcome.ROTATED, Outcome.ADOPTED)]
    if behind and not changed and (status_ or {}).get("foreignObjects"):
        # The reconcile applies nothing while a child's name is taken, and its handler looks again on its
        # own: running it from here every run would only repeat that.
        logger.debug("password check: %s behind, left to the blocked reconcile", ", ".join(behind))
        behind = []
    if changed or behind:
        logger.info("password check: reconciling (%s)",
                    "; ".join([*(f"Secret {s} {outcomes[s].value}" for s in changed),
                               *(f"Deployment {d} behind its password" for d in behind)]))
        _reconcile(name, namespace, body, spec, status_, generation, logger, ingress_hosts)
    return outcomes


def _reconcile(name: str, namespace: str, body: dict[str, Any], spec: dict[str, Any],
               status_: dict[str, Any], generation: int, logger: logging.Logger | logging.LoggerAdapter,
               ingress_hosts: Mapping[str, Iterable[Any]] | None) -> None:
    try:
        rec.reconcile(name=name, namespace=namespace, body=body, spec=spec, status_=status_,
                      generation=generation, logger=logger, ingress_hosts=ingress_hosts)
    except rec.Blocked as exc:
        # Said in conditions and events already; the reconcile handler's own retries carry on from here.
        logger.info("password check: the reconcile stopped short: %s", exc)
    except kopf.PermanentError as exc:
        # The reconcile said why in an event; look again no sooner than its handler would.
        raise kopf.TemporaryError(f"password check: the reconcile failed: {exc}",
                                  delay=ownership.RETRY_SECONDS) from None


def _tell(told: MutableMapping[str, str], secret: str, message: str, logger: logging.Logger |
          logging.LoggerAdapter, body: dict[str, Any], warning: bool) -> None:
    """Log (and for a warning, post) `message` about `secret`, unless it is what was said last time."""
    if told.get(secret) == message:
        logger.debug("%s", message)
        return
    told[secret] = message
    if warning:
        logger.warning("%s", message)
        events.emit(body, reasons.PASSWORD_ROTATION_FAILED, message, warning=True)
    else:
        logger.info("%s", message)


def _rotate(client: Any, body: dict[str, Any], arch: str, namespace: str, uid: str, spec: ArchitectureSpec,
            status: Mapping[str, Any], secret: dict[str, Any], logger: logging.Logger | logging.LoggerAdapter,
            told: MutableMapping[str, str]) -> tuple[Outcome, str | None]:
    """Carry the changed password of contract Secret `secret` (as read, this Architecture's) into its
    server, its keys and its record. Returns what happened and the new record (None unless rotated)."""
    meta = secret.get("metadata") or {}
    secret_name = str(meta.get("name") or "")
    password = secrets.password_of(secret) or ""
    if secret_name == names.db_secret(arch, "app"):
        role = secrets.username_of(secret)
        wait = database_wait(status)
        if wait is not None:
            _tell(told, secret_name, f"The password of Secret {secret_name} changed; it is set on role "
                  f"{role} once the database can take it ({wait.value})", logger, body, warning=False)
            return Outcome.WAITING, None
        leader = str(status.get("currentLeader"))
        try:
            set_database_password(client, arch, namespace, uid, leader, role, password)
        except (OSError, psycopg.Error, TimeoutError, LookupError, act.NotPrimary, act.RoleRefused,
                tls.TlsError, kopf.TemporaryError) as exc:
            _tell(told, secret_name, f"The password of Secret {secret_name} changed but could not be set on "
                  f"role {role} on the leader {leader}: {short_error(exc)}; trying again every "
                  f"{CHECK_INTERVAL_SECONDS:.0f}s", logger, body, warning=True)
            return Outcome.FAILED, None
        if not still_leading(client, arch, namespace, leader):
            # A failover began meanwhile: the new leader may not have replayed it. Set it again there.
            _tell(told, secret_name, f"The password of Secret {secret_name} was set on {leader}, which no "
                  "longer leads or is being replaced; it is set again once the database can take it", logger,
                  body, warning=False)
            return Outcome.WAITING, None
        done = f"set on role {role} on the leader {leader}"
    else:
        done = "taken (Redis reads it when it starts)"
    then = rolls(arch, spec, secret_name)
    record = secrets.applied_record(password, secrets.generate_salt())
    keys = secrets.completion(arch, namespace, secret)
    if not apply.patch_secret_data(client, namespace, secret_name, keys, uid=str(meta.get("uid") or ""),
                                   resource_version=str(meta.get("resourceVersion") or ""),
                                   action="writing the rotated connection keys to",
                                   annotations={secrets.APPLIED_ANNOTATION: record}):
        # Written since it was read (maybe another new password): the next run reads it again and sets
        # whatever it holds then; setting the same password twice changes nothing.
        logger.info("Secret %s changed while its password was applied; looking again next run", secret_name)
        return Outcome.WAITING, None
    events.emit(body, reasons.PASSWORD_ROTATED,
                f"The new password of Secret {secret_name} was {done}; its connection keys are rewritten and "
                f"{then}")
    return Outcome.ROTATED, record


def rolls(arch: str, spec: ArchitectureSpec, secret: str) -> str:
    """What rolls to read the new password of contract Secret `secret`, for the event."""
    is_cache = secret == names.cache(arch)
    readers = ["the cache pod (it starts empty)"] if is_cache and spec.cache.enabled else []
    if spec.app.enabled and (not is_cache or spec.cache.enabled):
        readers.append("the app pods")
    if not readers:
        return "no pod of this Architecture reads it now (pods of your own read it when they start)"
    return f"{' and '.join(readers)} roll to read it"


def still_leading(client: Any, arch: str, namespace: str, leader: str) -> bool:
    """After the password was set on `leader`: the Architecture's status, read again, still has it lead with
    no failover in flight (the monitor records a failover before its first step)."""
    obj = apply.get(client, names.API_VERSION, names.KIND, namespace, arch)
    status = (obj or {}).get("status") or {}
    return database_wait(status) is None and status.get("currentLeader") == leader


def set_database_password(client: Any, arch: str, namespace: str, uid: str, leader: str, role: str,
                          password: str) -> None:
    """Set `role`'s password on pod `leader` as the superuser, over TLS verified against the
    Architecture's CA (the monitor's way in: failover/act.py). Blocking."""
    pod = observe_pods(client, arch, namespace, uid).pods.get(leader)
    if pod is None or not pod.ip:
        raise LookupError(f"the leader's pod {leader} has no address")
    user, superuser_password = monitor.read_credentials(
        monitor.own_secret(client, arch, namespace, uid, names.db_secret(arch, "superuser")))
    ca = tls.read_ca_cert(monitor.own_secret(client, arch, namespace, uid, names.ca_secret(arch)))
    with _ca_file(ca, f"archop-{namespace}-{arch}-") as ca_file:
        target = Target(host=pod.ip, port=PORT, user=user, password=superuser_password,
                        verify=Verify(names.db_pod_host(arch, leader, namespace), ca_file))
        asyncio.run(act.set_role_password(target, role, password, timeout=SET_PASSWORD_TIMEOUT_SECONDS))


@contextlib.contextmanager
def _ca_file(pem: str, prefix: str) -> Iterator[str]:
    """The CA certificate as a private file (0600) for libpq's sslrootcert, removed afterwards."""
    fd, path = tempfile.mkstemp(prefix=prefix, suffix="-ca.crt")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(pem)
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)

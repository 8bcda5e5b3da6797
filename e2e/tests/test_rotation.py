"""Password rotation with writes running (docs/connecting.md, "Rotation").

One Architecture with the whole request path: two app pods (each with its CDN sidecar), Redis, the Ingress,
and a database with one follower. For N-db-app, then for N-cache, a writer POSTs /users through the ingress
controller every 0.1 s (each request bounded by 2 s) from before the change until 20 s after the last pod
rolled, while `password` is patched to a new random one (48 hex characters, like a generated one). The
tests prove, for each:

- the operator tells it: a PasswordRotated event naming the Secret, no PasswordRotationFailed;
- it records the new password (annotation archop.io/applied-password, checked with build/secrets.records)
  and rewrites the Secret's connection keys from it (`uri` and the others; `url`);
- the pods that read it roll (their pod template's revision annotation changes and the rollout completes),
  and each new pod has the new password in its environment (DATABASE_URL and DATABASE_RO_URL; REDIS_URL),
  checked inside the pod;
- the server takes the new password and refuses the old one: a TCP login to N-db-rw with verify-full from
  the leader's postgres container ("password authentication failed"); AUTH to the new Redis from each new
  app pod. The app has its cache again (/readyz says "up", a read is a Redis HIT);
- the writes went on: every disruption the writer saw after the change (a failed write, or a silence over
  1 s), measured from its start by bench.failover.harness.rto, is at most the measured p95 RTO of a leader
  process kill (bench/results/failover.json, kill-postmaster, dataDurability required): a rotation costs
  no more than a failover. Every acknowledged user is in the database.

Finally neither the old nor the new passwords appear in the status, the events, the operator's logs or the
stack's logs. The passwords are fed to the pods on stdin, never on a command line, and compared, never
printed: the assertion messages carry booleans and key names only.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
from dataclasses import dataclass
from functools import partial
from secrets import token_hex
from typing import Any

import pytest
from archop import names
from archop.build.app import DB_PASSWORD_ANNOTATION
from archop.build.cache import PASSWORD_ANNOTATION as CACHE_PASSWORD_ANNOTATION
from archop.build.secrets import APPLIED_ANNOTATION, cache_keys, database_keys, records
from conftest import (
    ROOT,
    IngressWriter,
    architecture_events,
    assert_no_leaks,
    condition,
    get_json,
    http_call,
    kubectl,
    leak_texts,
    secret_data,
    secret_value,
    serving_stack,
    superuser_sql,
    wait_for,
)

from bench.failover.harness import OUTAGE_GAP_S, rto

NAME = "rot"
READY_TIMEOUT = 600  # initdb, a base backup, the app's first readiness
ROTATED_TIMEOUT = 180  # the check runs every 10 s; it waits while the database is not ready
ROLLOUT_TIMEOUT = 300
AFTER_ROLLOUT_S = 20  # the writer keeps going this long after the last pod rolled
CLEAN_S = 2.0  # writes acknowledged this long with no failure flow again (as harness._writes_flow)
Log = list[tuple[int, float]]  # the writer's (attempt, time) of each acknowledged or failed write
APP_PYTHON = "/opt/venv/bin/python"  # the demo app image's (Dockerfile)

# In a new app pod: whether both database URLs carry the password given on stdin. Prints True or False.
DB_URL_CHECK = (
    "import os, sys, urllib.parse as u; new = sys.stdin.read().strip(); "
    "print(all(u.unquote(u.urlsplit(os.environ[k]).password or '') == new "
    "for k in ('DATABASE_URL', 'DATABASE_RO_URL')))"
)
# In a new app pod, given "old new" on stdin: whether REDIS_URL carries the new password, then what the
# cache server answers to each (TLS verified against the contract's CA, its name checked), as
# "True refused pong" when all is well. Never a password in the output.
REDIS_CHECK = """
import os, sys, urllib.parse
import redis
from redis.exceptions import AuthenticationError, ResponseError
old, new = sys.stdin.read().split()
url = urllib.parse.urlsplit(os.environ["REDIS_URL"])

def ping(password):
    client = redis.Redis(host=url.hostname, port=url.port, password=password, ssl=True,
                         ssl_ca_certs=os.environ["ARCHOP_CA_FILE"], ssl_cert_reqs="required",
                         ssl_check_hostname=True, socket_timeout=5, socket_connect_timeout=5)
    try:
        return "pong" if client.ping() else "no"
    except AuthenticationError:
        return "refused"
    except ResponseError as exc:
        return "refused" if str(exc).startswith("WRONGPASS") else type(exc).__name__
    except Exception as exc:
        return type(exc).__name__
    finally:
        client.close()

print(urllib.parse.unquote(url.password or "") == new, ping(old), ping(new))
"""
# In the leader's postgres container: a TCP login through N-db-rw ({host}) as the app user, verify-full
# against the CA of the database pods, with the password read from stdin (never on a command line).
LOGIN = (
    "read -r password; "
    'for d in /usr/lib/postgresql/*/bin; do [ -d "$d" ] && PATH="$d:$PATH"; done; '
    'PGPASSWORD="$password" PGCONNECT_TIMEOUT=5 psql "host={host} port=5432 dbname=app user=$APP_USER '
    'sslmode=verify-full sslrootcert=$ARCHOP_TLS_DIR/ca.crt" -XAtc "select current_user"'
)


@pytest.fixture(scope="module")
def site(namespace: str) -> str:
    return serving_stack(namespace, NAME, READY_TIMEOUT)


@dataclass
class Rotation:
    """One password change and what was seen around it."""

    secret: str
    old: str
    new: str
    record_before: str
    templates_before: dict[str, dict[str, str]]  # Deployment: its pod template's annotations
    patched_at: float
    writer: IngressWriter


def record_of(namespace: str, secret: str) -> str:
    obj = get_json("secret", secret, namespace=namespace)
    return str((obj["metadata"].get("annotations") or {}).get(APPLIED_ANNOTATION) or "")


def template_annotations(namespace: str, deployment: str) -> dict[str, str]:
    dep = get_json("deployment", deployment, namespace=namespace)
    return dict(dep["spec"]["template"]["metadata"].get("annotations") or {})


def revised(namespace: str, deployment: str, annotation: str, before: dict[str, str]) -> bool:
    """The Deployment's pod template carries another `annotation` than `before` did."""
    return template_annotations(namespace, deployment).get(annotation) != before.get(annotation)


def set_password(namespace: str, secret: str, password: str) -> None:
    """What a user does (docs/connecting.md): patch `password` alone. The patch goes in on stdin."""
    patch = json.dumps({"stringData": {"password": password}})
    kubectl("patch", "secret", secret, "-n", namespace, "--type", "merge", "--patch-file", "/dev/stdin",
            stdin=patch)


def told(namespace: str, reason: str, secret: str) -> list[dict[str, Any]]:
    """The events with this reason about the Architecture that name Secret `secret`."""
    return [e for e in architecture_events(namespace, NAME, reason)
            if f"Secret {secret} " in e.get("message", "")]


def rotated(namespace: str, secret: str) -> list[dict[str, Any]]:
    """PasswordRotated events for `secret`; a PasswordRotationFailed one fails the test at once."""
    failed = told(namespace, "PasswordRotationFailed", secret)
    if failed:
        pytest.fail(f"PasswordRotationFailed: {failed[0].get('message')}")
    return told(namespace, "PasswordRotated", secret)


def rotate(namespace: str, host: str, secret: str, annotation: str, deployments: list[str]) -> Rotation:
    """Patch a new password into `secret` with the writer running; wait for the operator to rotate it, for
    `annotation` to change on every one of `deployments`' pod templates and for their rollouts, then keep
    writing AFTER_ROLLOUT_S more seconds."""
    old = secret_value(namespace, secret, "password")
    before = {d: template_annotations(namespace, d) for d in deployments}
    record_before = record_of(namespace, secret)
    new = token_hex(24)
    writer = IngressWriter(host).start()
    try:
        wait_for(writer.steady, 120, "20 writes in a row acknowledged through the ingress", interval=0.5)
        patched_at = time.time()
        set_password(namespace, secret, new)
        wait_for(lambda: rotated(namespace, secret), ROTATED_TIMEOUT, f"a PasswordRotated event for {secret}")
        for d in deployments:
            wait_for(partial(revised, namespace, d, annotation, before[d]), 120,
                     f"a new {annotation} on the pod template of {d}")
        for d in deployments:
            kubectl("rollout", "status", f"deployment/{d}", "-n", namespace,
                    f"--timeout={ROLLOUT_TIMEOUT}s", timeout=ROLLOUT_TIMEOUT + 30)
        until = time.time() + AFTER_ROLLOUT_S
        wait_for(lambda: any(t >= until for _, t in writer.acks()), AFTER_ROLLOUT_S + 120,
                 f"writes acknowledged {AFTER_ROLLOUT_S} s after the rollout", interval=1)
    finally:
        writer.stop()
    return Rotation(secret, old, new, record_before, before, patched_at, writer)


def current_pods(namespace: str, deployment: str) -> list[str]:
    """The pods of the Deployment's current ReplicaSet that are not going away."""
    dep = get_json("deployment", deployment, namespace=namespace)
    revision = dep["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
    selector = ",".join(f"{k}={v}" for k, v in dep["spec"]["selector"]["matchLabels"].items())

    def current(rs: dict[str, Any]) -> bool:
        owners = {o.get("uid") for o in rs["metadata"].get("ownerReferences") or []}
        rs_revision = (rs["metadata"].get("annotations") or {}).get("deployment.kubernetes.io/revision")
        return dep["metadata"]["uid"] in owners and rs_revision == revision

    sets = [rs for rs in get_json("replicasets", "-l", selector, namespace=namespace)["items"] if current(rs)]
    assert len(sets) == 1, f"{deployment}: no single ReplicaSet of revision {revision}"
    template_hash = sets[0]["metadata"]["labels"]["pod-template-hash"]
    pods = get_json("pods", "-l", f"{selector},pod-template-hash={template_hash}", namespace=namespace)
    return sorted(p["metadata"]["name"] for p in pods["items"] if not p["metadata"].get("deletionTimestamp"))


def in_app_pod(namespace: str, pod: str, program: str, stdin: str) -> str:
    return kubectl("exec", "-i", "-n", namespace, pod, "-c", "app", "--", APP_PYTHON, "-c", program,
                   stdin=stdin, timeout=60).stdout.strip()


def failover_rto_p95() -> float:
    """The measured p95 RTO of a leader's postmaster killed (kill -9), dataDurability required."""
    rows = json.loads((ROOT / "bench" / "results" / "failover.json").read_text())
    row = next((r for r in rows
                if r["scenario"] == "kill-postmaster" and r.get("data_durability") == "required"), None)
    assert row is not None, "bench/results/failover.json: no kill-postmaster row with dataDurability required"
    return float(row["rto_p95_s"])


def disruption_start(acks: Log, errors: Log, since: float) -> float | None:
    """When the writes were first held up after `since`: the last acknowledgement before the first failed
    write, or the start of the first silence longer than OUTAGE_GAP_S, whichever came first. None: never."""
    times = sorted(t for _, t in acks)
    starts = []
    first_error = min((t for _, t in errors if t > since), default=None)
    if first_error is not None:
        starts.append(max((t for t in times if t < first_error), default=since))
    starts += [a for a, b in zip(times, times[1:], strict=False) if b > since and b - a > OUTAGE_GAP_S][:1]
    return min(starts, default=None)


def flowing_again(acks: Log, errors: Log, after: float) -> float | None:
    """The first acknowledgement after `after` that begins CLEAN_S seconds of writes acknowledged with no
    failure and no silence longer than OUTAGE_GAP_S (harness._writes_flow's test). None: none does."""
    times = sorted(t for _, t in acks if t > after)
    failures = [t for _, t in errors if t > after]
    for k, first in enumerate(times):
        last = first
        for t in times[k + 1:]:
            if t - last > OUTAGE_GAP_S or last - first >= CLEAN_S:
                break
            last = t
        if last - first >= CLEAN_S and not any(first < f <= last for f in failures):
            return first
    return None


def outages(acks: Log, errors: Log, since: float) -> list[tuple[float, float]]:
    """Each disruption of the writes after `since`: (its RTO, how long it lasted).

    The RTO is harness.rto's, as for a failover: from the disruption's start (disruption_start) to the first
    acknowledgement after its longest silence, or after its first failure when its silences were all short
    (writes failing fast and in between succeeding count as blips). It lasted until the writes flowed again
    (flowing_again), and rto sees only that far: a rotation is several events (the password set, then each
    pod replaced), and a short blip at each must not add up to one outage spanning the whole roll."""
    out: list[tuple[float, float]] = []
    start = disruption_start(acks, errors, since)
    while start is not None:
        end = flowing_again(acks, errors, start)
        if end is None:
            out.append((rto(acks, errors, start), float("inf")))
            break
        seen_acks, seen_errors = [a for a in acks if a[1] <= end], [e for e in errors if e[1] <= end]
        out.append((rto(seen_acks, seen_errors, start), end - start))
        following = disruption_start(acks, errors, end)
        start = following if following is not None and following > start else None
    return out


def leader(namespace: str) -> str:
    return str(get_json("architectures.archop.io", NAME, namespace=namespace)["status"]["currentLeader"])


def stored_users(namespace: str, ids: list[int]) -> set[int]:
    """Which of these user ids the leader has."""
    listed = "{" + ",".join(str(i) for i in ids) + "}"
    sql = f"select id from users where id = any('{listed}'::bigint[]);"
    return {int(x) for x in superuser_sql(namespace, leader(namespace), sql).split()}


def is_ready(namespace: str) -> bool:
    arch = get_json("architectures.archop.io", NAME, namespace=namespace)
    return (condition(arch, "Ready") or {}).get("status") == "True"


def check_writes(namespace: str, host: str, rotation: Rotation) -> None:
    """The outage since the change is within a failover's, and every acknowledged user was stored."""
    acks, errors = rotation.writer.acks(), rotation.writer.errors()
    assert any(t > rotation.patched_at for _, t in acks), "no write acknowledged after the change"
    held_up = outages(acks, errors, rotation.patched_at)
    bound = failover_rto_p95()
    measured = [(round(r, 1), round(d, 1)) for r, d in held_up]
    assert max((r for r, _ in held_up), default=0.0) <= bound, (
        f"the rotation of {rotation.secret} held the writes up longer than the p95 RTO of a leader process "
        f"kill ({bound} s): (RTO, lasted) of each disruption {measured}; failed writes since the change: "
        f"{rotation.writer.failures(rotation.patched_at)}")
    ids = rotation.writer.ids()
    missing = sorted(set(ids) - stored_users(namespace, ids))
    assert not missing, f"{len(missing)} of {len(ids)} acknowledged users are not stored: {missing[:9]}"
    status, _, user = http_call(host, "GET", f"/users/{ids[-1]}", headers={"X-Consistency": "strong"})
    assert status == 200 and user["id"] == ids[-1], (status, user)


# ------------------------------------------------------------------------------------------ N-db-app


def check_secret_rotated(namespace: str, rotation: Rotation, url_key: str) -> dict[str, str]:
    """The Secret's record is of the new password (and no longer of the old), and its `password` and
    `url_key` carry the new one; returns the Secret's data. Booleans only: a failure never prints a
    password."""
    record = record_of(namespace, rotation.secret)
    assert record and record != rotation.record_before, "the record did not change"
    assert records(record, rotation.new), "the record is not of the new password"
    assert not records(record, rotation.old), "the record is of the old password"
    data = secret_data(namespace, rotation.secret)
    holds_new = data.get("password") == rotation.new
    assert holds_new, "the Secret's password is not the one patched in"
    url = urllib.parse.urlsplit(data.get(url_key, ""))
    url_has_new = urllib.parse.unquote(url.password or "") == rotation.new
    assert url_has_new, f"{url_key} does not carry the new password"
    return data


@pytest.fixture(scope="module")
def db_rotation(namespace: str, site: str) -> Rotation:
    return rotate(namespace, site, f"{NAME}-db-app", DB_PASSWORD_ANNOTATION, [f"{NAME}-app"])


def test_the_database_rotation_is_told(namespace: str, db_rotation: Rotation) -> None:
    events = told(namespace, "PasswordRotated", db_rotation.secret)
    assert len(events) == 1, [e.get("message") for e in events]
    message = events[0].get("message", "")
    assert "set on role app on the leader" in message and "the app pods roll" in message, message
    assert not told(namespace, "PasswordRotationFailed", db_rotation.secret)


def test_the_database_secret_records_the_new_password(namespace: str, db_rotation: Rotation) -> None:
    data = check_secret_rotated(namespace, db_rotation, "uri")
    want = database_keys(NAME, namespace, data["username"], db_rotation.new)
    stale = sorted(key for key, value in want.items() if data.get(key) != value)
    assert not stale, f"keys not rewritten from the new password: {stale}"


def test_the_app_pods_roll_onto_the_new_password(namespace: str, db_rotation: Rotation) -> None:
    deployment = f"{NAME}-app"
    before = db_rotation.templates_before[deployment].get(DB_PASSWORD_ANNOTATION)
    after = template_annotations(namespace, deployment).get(DB_PASSWORD_ANNOTATION)
    assert before and after and after != before, (before, after)
    pods = current_pods(namespace, deployment)
    assert len(pods) == 2, pods
    carry = {pod: in_app_pod(namespace, pod, DB_URL_CHECK, db_rotation.new + "\n") for pod in pods}
    assert set(carry.values()) == {"True"}, f"the database URLs carry the new password, per pod: {carry}"
    wait_for(lambda: is_ready(namespace), 120, "Ready=True after the roll")


def login(namespace: str, pod: str, password: str) -> subprocess.CompletedProcess[str]:
    host = names.service_host(names.db_rw(NAME), namespace)
    return kubectl("exec", "-i", "-n", namespace, pod, "-c", "postgres", "--", "bash", "-c",
                   LOGIN.format(host=host), stdin=password + "\n", timeout=60, check=False)


def test_the_database_takes_the_new_password_only(namespace: str, db_rotation: Rotation) -> None:
    pod = leader(namespace)
    old = login(namespace, pod, db_rotation.old)
    assert old.returncode != 0 and "password authentication failed" in old.stderr, (
        f"the old password: exit {old.returncode}, {old.stderr.strip()}")
    new = login(namespace, pod, db_rotation.new)
    assert new.returncode == 0 and new.stdout.strip() == "app", (
        f"the new password: exit {new.returncode}, {new.stderr.strip()}")


def test_writes_go_on_through_the_database_rotation(namespace: str, site: str, db_rotation: Rotation) -> None:
    check_writes(namespace, site, db_rotation)


# ------------------------------------------------------------------------------------------ N-cache


@pytest.fixture(scope="module")
def cache_rotation(namespace: str, site: str) -> Rotation:
    return rotate(namespace, site, f"{NAME}-cache", CACHE_PASSWORD_ANNOTATION,
                  [f"{NAME}-cache", f"{NAME}-app"])


def test_the_cache_rotation_is_told(namespace: str, cache_rotation: Rotation) -> None:
    events = told(namespace, "PasswordRotated", cache_rotation.secret)
    assert len(events) == 1, [e.get("message") for e in events]
    message = events[0].get("message", "")
    assert "the cache pod" in message and "the app pods roll" in message, message
    assert not told(namespace, "PasswordRotationFailed", cache_rotation.secret)


def test_the_cache_secret_records_the_new_password(namespace: str, cache_rotation: Rotation) -> None:
    data = check_secret_rotated(namespace, cache_rotation, "url")
    want = cache_keys(NAME, namespace, cache_rotation.new)
    stale = sorted(key for key, value in want.items() if data.get(key) != value)
    assert not stale, f"keys not rewritten from the new password: {stale}"


def test_the_cache_and_app_pods_roll_onto_the_new_password(namespace: str, cache_rotation: Rotation) -> None:
    for deployment in (f"{NAME}-cache", f"{NAME}-app"):
        before = cache_rotation.templates_before[deployment].get(CACHE_PASSWORD_ANNOTATION)
        after = template_annotations(namespace, deployment).get(CACHE_PASSWORD_ANNOTATION)
        assert before and after and after != before, (deployment, before, after)
    assert len(current_pods(namespace, f"{NAME}-cache")) == 1
    pods = current_pods(namespace, f"{NAME}-app")
    assert len(pods) == 2, pods
    seen = {pod: in_app_pod(namespace, pod, REDIS_CHECK, f"{cache_rotation.old} {cache_rotation.new}\n")
            for pod in pods}
    assert set(seen.values()) == {"True refused pong"}, (
        f"per app pod: REDIS_URL carries the new password, Redis answers the old one, the new one: {seen}")


def test_the_app_has_its_cache_again(namespace: str, site: str, cache_rotation: Rotation) -> None:
    """Both app pods report the cache up (the ingress spreads the calls over them), and a read comes from
    Redis: written through one pod, read back with its consistency token until Redis answers it."""

    def cache_up() -> bool:
        try:
            answers = [http_call(site, "GET", "/readyz") for _ in range(6)]
        except OSError:
            return False
        return all(status == 200 and isinstance(body, dict) and body.get("cache") == "up"
                   for status, _, body in answers)

    wait_for(cache_up, 60, "/readyz reporting the cache up on every call")
    status, headers, user = http_call(site, "POST", "/users", {"name": "after-the-cache-rotation"})
    assert status == 201, (status, user)
    token = headers["x-commit-lsn"]

    def hit() -> bool:
        status, headers, body = http_call(site, "GET", f"/users/{user['id']}", headers={"X-Min-LSN": token})
        assert status == 200 and body["id"] == user["id"], (status, body)
        return headers.get("x-app-cache") == "HIT"

    wait_for(hit, 60, "a read answered from Redis (X-App-Cache: HIT)", interval=0.5)


def test_writes_go_on_through_the_cache_rotation(namespace: str, site: str, cache_rotation: Rotation) -> None:
    check_writes(namespace, site, cache_rotation)


# ------------------------------------------------------------------------------------------ both


def test_no_password_leaks(namespace: str, db_rotation: Rotation, cache_rotation: Rotation) -> None:
    """Neither the new passwords nor the old ones appear in the status, the events, the operator's logs or
    the logs of the stack's containers."""
    passwords = {"new database password": db_rotation.new, "old database password": db_rotation.old,
                 "new cache password": cache_rotation.new, "old cache password": cache_rotation.old}
    assert_no_leaks(passwords, leak_texts(namespace, NAME))

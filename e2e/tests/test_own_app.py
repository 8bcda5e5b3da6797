"""Your own app on the stack (docs/connecting.md, "Your own app on the stack"): examples/own-app.yaml.

The example names an image that exists only in its story (registry.example.com/team/shop-api). The test
keeps the example's app as it is (args, port, probe paths, env, envFrom, no CDN) but for its image, the
demo app's (it has Python and psycopg), and its command, which runs a small program of the test's own
(PROGRAM below, handed in through the example's ConfigMap) serving that port and those paths. The example's
Secret and ConfigMap are created with it. The test adds one app pod, a database with one follower (enough
for a failover), no cache (an app tells by REDIS_URL being absent) and an ingress host of its namespace.

The tests prove:
- the app runs as the example says (its image, command, args, port and probe paths, no CDN sidecar) and as
  the stack holds any app (uid 10001), with its own configuration (a value, a key of its Secret, a
  ConfigMap by envFrom) and the connection contract (DATABASE_URL, DATABASE_RO_URL, ARCHOP_CA_FILE);
- through the ingress controller it writes to the leader with DATABASE_URL and reads back from a follower
  with DATABASE_RO_URL, over TLS verified against the contract's CA;
- it survives a leader failover (bench.failover.harness.run_once, kill-postmaster): a visit written before
  the fault (seen on the follower first) is read after it, and new visits are written to the new leader.
"""

from __future__ import annotations

import copy
import hashlib
import urllib.error
from secrets import token_hex
from typing import Any

import pytest
from conftest import (
    apply_manifest,
    example,
    get_json,
    http_call,
    kubectl,
    operator_env,
    wait_for,
)

from bench.failover.harness import Arch, run_once

ARCH = "architectures.archop.io"
READY_TIMEOUT = 600
SERVE_TIMEOUT = 300
PYTHON = "/opt/venv/bin/python"  # the demo app image's (Dockerfile)
BOOT = "import os; exec(compile(os.environ['OWN_APP_SOURCE'], 'own-app', 'exec'))"
GREETING = "hello from shop-api-config"

# The own app: an HTTP server on the port its args name (--listen :9000). /ready and /live answer 200;
# /config tells what it was given (no secret: the payments key as a SHA-256); POST /visits writes a row
# through DATABASE_URL (to the leader only: target_session_attrs=read-write); GET /visits/<id> reads it
# through DATABASE_URL or, with ?from=ro, through DATABASE_RO_URL. Database errors answer 503 with the
# error's class; the URLs never leave the process.
PROGRAM = r'''
import hashlib, http.server, json, os, sys
import psycopg

PORT = int(sys.argv[sys.argv.index("--listen") + 1].rpartition(":")[2])
CONTRACT = ("DATABASE_URL", "DATABASE_RO_URL", "REDIS_URL", "ARCHOP_CA_FILE")


def one(url, *statements):
    """Run the statements (query, params) on one connection; the last one's first row."""
    with psycopg.connect(url, connect_timeout=3, autocommit=True) as conn:
        for query, params in statements:
            cursor = conn.execute(query, params)
        return cursor.fetchone()


class Handler(http.server.BaseHTTPRequestHandler):
    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        path, _, query = self.path.partition("?")
        if path in ("/ready", "/live"):
            return self.reply(200, {"status": "ok"})
        if path == "/config":
            key = os.environ.get("PAYMENT_API_KEY", "")
            return self.reply(200, {
                "log_level": os.environ.get("LOG_LEVEL"),
                "greeting": os.environ.get("SHOP_GREETING"),
                "payments_key_sha256": hashlib.sha256(key.encode()).hexdigest() if key else None,
                "contract": sorted(k for k in CONTRACT if k in os.environ),
                "ca_file": os.environ.get("ARCHOP_CA_FILE"),
                "uid": os.getuid(),
            })
        if path.startswith("/visits/") and path[8:].isdigit():
            url = os.environ["DATABASE_RO_URL" if query == "from=ro" else "DATABASE_URL"]
            try:
                row = one(url, ("select id, pg_is_in_recovery() from visits where id = %s",
                                (int(path[8:]),)))
            except psycopg.errors.UndefinedTable:
                row = None
            except psycopg.Error as exc:
                return self.reply(503, {"error": type(exc).__name__})
            if row is None:
                return self.reply(404, {"error": "no such visit"})
            return self.reply(200, {"id": row[0], "in_recovery": row[1]})
        return self.reply(404, {"error": "no such path"})

    def do_POST(self):
        if self.path != "/visits":
            return self.reply(404, {"error": "no such path"})
        url = os.environ["DATABASE_URL"] + "&target_session_attrs=read-write"
        try:
            row = one(url, ("create table if not exists visits (id bigserial primary key, at timestamptz "
                            "not null default now())", None),
                      ("insert into visits default values returning id, pg_is_in_recovery()", None))
        except psycopg.Error as exc:
            return self.reply(503, {"error": type(exc).__name__})
        return self.reply(201, {"id": row[0], "in_recovery": row[1]})


http.server.ThreadingHTTPServer(("", PORT), Handler).serve_forever()
'''


@pytest.fixture(scope="module")
def payments_key() -> str:
    return token_hex(16)


@pytest.fixture(scope="module")
def shop(namespace: str, payments_key: str) -> dict[str, Any]:
    """examples/own-app.yaml, with the demo app's image running PROGRAM, its Secret and ConfigMap, Ready
    and answering through the ingress; returns the Architecture as applied."""
    app_image = operator_env("ARCHOP_APP_IMAGE")
    assert app_image, "the operator has no ARCHOP_APP_IMAGE"
    obj = copy.deepcopy(example("own-app"))
    spec = obj["spec"]
    app = spec["app"]
    # What the test relies on from the example: were it to change, PROGRAM must follow.
    assert (app["port"], app["readinessPath"], app["livenessPath"], app["args"]) == (
        9000, "/ready", "/live", ["serve", "--listen", ":9000"]), app
    assert spec["cdn"] == {"enabled": False}, spec["cdn"]
    config_map = app["envFrom"][0]["configMapRef"]["name"]
    key_ref = next(e for e in app["env"] if e["name"] == "PAYMENT_API_KEY")["valueFrom"]["secretKeyRef"]
    apply_manifest({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": config_map},
                    "data": {"SHOP_GREETING": GREETING, "OWN_APP_SOURCE": PROGRAM}}, "-n", namespace)
    apply_manifest({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": key_ref["name"]},
                    "stringData": {key_ref["key"]: payments_key}}, "-n", namespace)
    app.update(image=app_image, command=[PYTHON, "-c", BOOT], replicas=1)
    spec["ingress"]["host"] = f"{namespace}.archop.test"
    spec["database"] = {"followers": 1, "storage": {"size": "256Mi"}}
    spec["cache"] = {"enabled": False}
    apply_manifest(obj, "-n", namespace)
    name = obj["metadata"]["name"]
    kubectl("wait", "--for=condition=Ready", f"{ARCH}/{name}", "-n", namespace,
            f"--timeout={READY_TIMEOUT}s", timeout=READY_TIMEOUT + 30)
    wait_for(lambda: answer(obj, "GET", "/ready")[0] == 200, SERVE_TIMEOUT, "/ready through the ingress")
    return obj


def answer(shop: dict[str, Any], method: str, path: str) -> tuple[int, Any]:
    """(status, body) of a request to the app through the ingress; (0, what) when nothing answered."""
    try:
        status, _, body = http_call(shop["spec"]["ingress"]["host"], method, path)
    except (urllib.error.URLError, OSError) as exc:
        return 0, type(exc).__name__
    return status, body


def test_the_app_runs_as_the_example_says(namespace: str, shop: dict[str, Any], payments_key: str) -> None:
    name, app = shop["metadata"]["name"], shop["spec"]["app"]
    pod = get_json("deployment", f"{name}-app", namespace=namespace)["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["app"], "a CDN sidecar with cdn.enabled false"
    container = pod["containers"][0]
    assert (container["image"], container["command"], container["args"]) == (
        app["image"], app["command"], app["args"])
    # The API server adds scheme: HTTP to an httpGet probe.
    assert container["readinessProbe"]["httpGet"] | {"scheme": "HTTP"} == {"path": "/ready", "port": 9000,
                                                                           "scheme": "HTTP"}
    assert container["livenessProbe"]["httpGet"] | {"scheme": "HTTP"} == {"path": "/live", "port": 9000,
                                                                          "scheme": "HTTP"}
    service = get_json("service", f"{name}-app", namespace=namespace)
    assert [p["targetPort"] for p in service["spec"]["ports"]] == [9000]

    status, config = answer(shop, "GET", "/config")
    assert status == 200, config
    assert config == {
        "log_level": "info",
        "greeting": GREETING,
        "payments_key_sha256": hashlib.sha256(payments_key.encode()).hexdigest(),
        "contract": ["ARCHOP_CA_FILE", "DATABASE_RO_URL", "DATABASE_URL"],  # no REDIS_URL: no cache
        "ca_file": "/etc/archop-db-ca/ca.crt",
        "uid": 10001,
    }, config


def visit(shop: dict[str, Any]) -> int | None:
    """A new visit written through the ingress (on the leader); its id, or None when it failed."""
    status, body = answer(shop, "POST", "/visits")
    if status == 201 and body["in_recovery"] is False:
        return int(body["id"])
    return None


def read_back(shop: dict[str, Any], visit_id: int, source: str) -> bool:
    """The visit is read through DATABASE_URL (source rw: the leader) or DATABASE_RO_URL (ro: a follower)."""
    status, body = answer(shop, "GET", f"/visits/{visit_id}" + ("?from=ro" if source == "ro" else ""))
    return status == 200 and body == {"id": visit_id, "in_recovery": source == "ro"}


def test_the_app_writes_to_the_leader_and_reads_from_a_follower(shop: dict[str, Any]) -> None:
    visit_id = wait_for(lambda: visit(shop), 60, "POST /visits answered 201 by the leader")
    assert visit_id is not None
    assert read_back(shop, visit_id, "rw")
    wait_for(lambda: read_back(shop, visit_id, "ro"), 60, "the visit read from a follower")


def test_the_app_survives_a_leader_failover(namespace: str, shop: dict[str, Any]) -> None:
    name = shop["metadata"]["name"]
    before = wait_for(lambda: visit(shop), 60, "a visit before the fault")
    assert before is not None
    wait_for(lambda: read_back(shop, before, "ro"), 60, "the visit replayed by the follower")

    arch = Arch(name=name, namespace=namespace, followers=1)
    result = run_once(arch, "kill-postmaster", hold_s=0)
    assert result.new_leader != result.old_leader, "no failover"
    assert not result.split_brain and result.split_brain_direct == [], "two primaries at once"
    # The harness's clients are labelled as the app tier (for the NetworkPolicies), so while they run the
    # app's Service may send them requests: gone before the app is judged.
    wait_for(lambda: not get_json("pods", "-l", "app.kubernetes.io/name=archop-bench",
                                  namespace=namespace)["items"], 120, "the harness's client pods gone")

    wait_for(lambda: read_back(shop, before, "rw"), SERVE_TIMEOUT, "the first visit read from the new leader")
    after = wait_for(lambda: visit(shop), 60, "a visit written to the new leader")
    assert after is not None and after > before
    wait_for(lambda: read_back(shop, after, "ro"), 120, "the new visit read from a follower (the old leader)")

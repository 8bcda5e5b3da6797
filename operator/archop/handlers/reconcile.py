"""Reconcile one Architecture: parse the spec, build every child, check that every existing child is this
Architecture's, create Secrets once (and keep the connection keys of N-db-app and N-cache in line with the
passwords their servers have), apply, prune, then tell the story in events, status and metrics. Also the
delete handler (volumes per reclaimPolicy).

A password changed in N-db-app or N-cache is not the reconcile's to apply: the servers must have it before
any pod is given it, and that is the periodic check's (handlers/passwords.py), which then runs the
reconcile. Until then the reconcile leaves that Secret's keys as they are, and the pods' templates keep
the revision of the password they run with (build/secrets.py, PasswordRevisions).

Ownership (archop.ownership, the confused-deputy rule): before anything is written, every child is read by
name. If any existing one is not this Architecture's (a user's own Service `shop-db-rw`, a Secret
`shop-db-app` from elsewhere), nothing at all is applied, created or pruned: children address each other by
name (Service DNS names, Secret and ConfigMap references), so applying "the rest" would wire this
Architecture's pods to the foreign object (the app would send the database password to whatever backs a
foreign `shop-db-rw`), and a half-applied stack is a half-taken-over one. The Architecture says so in
ChildrenOwned=False (reason ForeignObject), one Warning event per object, and status.foreignObjects; the
reconcile ends as a kopf retry (Blocked) and looks again every ownership.RETRY_SECONDS, so it goes ahead by
itself once the object is deleted or renamed. A running stack whose child is replaced behind its back keeps
running as it is (nothing is changed or removed) until then.

The ingress host (archop.hosts) is different: the Ingress is a leaf nothing else refers to. Without the
host, the rest of the stack is applied, the Ingress is not (one this Architecture had is pruned), IngressReady
is False (reason IngressHostTaken) and the reconcile retries the same way.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

import kopf

from archop import apply, config, events, hosts, images, metrics, names, ownership, reasons, status
from archop.build import absent_optional_children, build_all, cdn, secrets, tls
from archop.spec import ArchitectureSpec

COMPONENT = "architecture"  # the metrics label of this handler

_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
_FACTORS = {None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
            "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


def quantity_bytes(text: str) -> float:
    m = _QUANTITY.match(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a storage quantity")
    return float(m.group(1)) * _FACTORS[m.group(2)]


def unsafe_changes(old: ArchitectureSpec, new: ArchitectureSpec) -> list[str]:
    """Changes that would destroy data or cannot be carried out. The CRD refuses them too; this is the
    second line for objects admitted before a rule existed."""
    problems = []
    if quantity_bytes(new.database.storage_size) < quantity_bytes(old.database.storage_size):
        problems.append(f"database.storage.size may not shrink ({old.database.storage_size} -> "
                        f"{new.database.storage_size}); set it back to {old.database.storage_size} or more")
    if new.database.storage_class != old.database.storage_class:
        problems.append("database.storage.storageClassName is immutable; set it back to "
                        f"{old.database.storage_class or '(unset)'}")
    return problems


def deployed_storage(statefulset: dict[str, Any] | None) -> tuple[str, str | None] | None:
    """(size, storage class) of the database's volume template as deployed, or None before the first apply."""
    templates = ((statefulset or {}).get("spec") or {}).get("volumeClaimTemplates") or []
    if not templates:
        return None
    pvc = templates[0].get("spec") or {}
    return str(pvc["resources"]["requests"]["storage"]), pvc.get("storageClassName")


def keep_volume_template(manifests: list[dict[str, Any]], statefulset: str, size: str) -> None:
    """A StatefulSet's volume template is immutable: keep the deployed size (growth goes to the PVCs)."""
    for m in manifests:
        if m["kind"] == "StatefulSet" and m["metadata"]["name"] == statefulset:
            for template in m["spec"].get("volumeClaimTemplates") or []:
                template["spec"]["resources"]["requests"]["storage"] = size


def _grow_volumes(client: Any, body: dict[str, Any], name: str, namespace: str, size: str) -> None:
    grown, refused = apply.grow_volumes(client, name, namespace, size,
                                        lambda a, b: quantity_bytes(a) < quantity_bytes(b))
    if grown:
        events.emit(body, reasons.VOLUMES_GROWN, f"Asked for {size} on {', '.join(grown)}")
    if refused:
        events.emit(body, reasons.VOLUME_GROWTH_REFUSED, "; ".join(refused), warning=True)


def deployed_image(statefulset: dict[str, Any] | None) -> str | None:
    """The image of the postgres container as deployed, or None before the first apply."""
    pod = (((statefulset or {}).get("spec") or {}).get("template") or {}).get("spec") or {}
    return next((c.get("image") for c in pod.get("containers") or [] if c.get("name") == "postgres"), None)


def data_major(current_status: Mapping[str, Any]) -> int | None:
    """status.postgresMajor, the major version the monitor last saw the servers report; None before that."""
    value = current_status.get("postgresMajor")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def keep_database_image(manifests: list[dict[str, Any]], statefulset: str, image: str) -> None:
    """Every container of the database StatefulSet keeps `image` (postgres and the fence agent run the same
    one): a refused image changes nothing in the pod template, so no pod is restarted onto it."""
    for m in manifests:
        if m["kind"] == "StatefulSet" and m["metadata"]["name"] == statefulset:
            for container in m["spec"]["template"]["spec"]["containers"]:
                container["image"] = image


def summary(manifests: list[dict[str, Any]], pruned: list[dict[str, Any]]) -> str:
    """A one-line account of an apply: "Applied 16 children (Deployment x2, Service x6, ...)"."""
    kinds = Counter(m["kind"] for m in manifests)
    text = f"Applied {len(manifests)} children ({', '.join(f'{k} x{n}' for k, n in sorted(kinds.items()))})"
    if pruned:
        text += "; removed " + ", ".join(f"{m['kind']} {m['metadata']['name']}" for m in pruned)
    return text


class Blocked(kopf.TemporaryError):
    """The reconcile did what it safely could and stopped short: a child's name is taken by a foreign
    object, or the ingress host by another Architecture. Conditions and events say so already; kopf retries
    after ownership.RETRY_SECONDS, which is how the operator notices that the obstacle is gone."""

    def __init__(self, message: str) -> None:
        super().__init__(message, delay=ownership.RETRY_SECONDS)


def reconcile_status(
    name: str, namespace: str, spec: ArchitectureSpec, current: dict[str, Any], generation: int, now: str,
    foreign: Iterable[str] = (), host: dict[str, str] | None = None, applied: bool = True,
    refusal: images.MajorRefusal | None = None,
) -> dict[str, Any]:
    """The status patch of a reconcile: what was applied (unless `applied` is False: a foreign object
    stopped it), what stands in its way (`foreign`: children whose names are taken, status.foreignObjects;
    `host`: the ingress host decision, status.ingressHost), the Postgres image it did not roll out
    (`refusal`, status.majorUpgradeRefused; only from a reconcile that applied), and starting conditions for
    a new object.

    Conditions are written only while some are missing: after that the monitor daemon owns them (it turns
    foreignObjects and ingressHost into conditions, status.ownership_conditions, and majorUpgradeRefused
    into DatabaseReady, report.database_condition), and a reconcile holding an older copy must not
    overwrite its fresher view.
    """
    patch: dict[str, Any] = {"foreignObjects": sorted(foreign), "ingressHost": host}
    if applied:
        patch.update({
            "observedGeneration": generation,
            "endpoints": status.endpoints(name, namespace, spec),
            "followersDesired": spec.database.followers,
            "majorUpgradeRefused": refusal.to_status() if refusal is not None else None,
        })
    conditions = list(current.get("conditions") or [])
    have = {c.get("type") for c in conditions}
    if not set(reasons.CONDITION_TYPES) <= have:
        conditions = status.initial_conditions(conditions, generation, now)
        conditions = status.ownership_conditions(conditions, spec, patch, generation, now)
        patch["conditions"] = status.summarise(conditions, generation, now)
    if "followers" not in current:
        patch["followers"] = status.ratio(0, spec.database.followers)
    if "appReady" not in current:
        patch["appReady"] = status.ratio(0, spec.app.replicas if spec.app.enabled else 0)
    return patch


def _followers_of(body: dict[str, Any] | None) -> int | None:
    if not body:
        return None
    return ArchitectureSpec.parse(body.get("spec")).database.followers


def host_decision(body: Mapping[str, Any], index: Mapping[str, Iterable[hosts.Claim]] | None
                  ) -> hosts.Decision | None:
    """May this Architecture publish its ingress host? None when its Ingress is disabled. `index` is kopf's
    `ingress_hosts` index (main.py); without it (outside kopf) only this Architecture's own claim counts."""
    entry = hosts.index_entry(body)
    if not entry:
        return None
    ((host, me),) = entry.items()
    store = (index or {}).get(host, ())
    try:
        claims = tuple(store)
    except RuntimeError:  # kopf updated the index (on its event loop) while this thread copied it
        claims = tuple(store)
    return hosts.decide(host, me, claims)


def without_ingress(spec: ArchitectureSpec) -> ArchitectureSpec:
    """The spec to build from when the host is refused: no Ingress (one applied earlier is pruned, unless
    the decision is only Pending)."""
    return replace(spec, ingress=replace(spec.ingress, enabled=False))


def foreign_children(found: Mapping[tuple[str, str, str], dict[str, Any] | None], arch: str, uid: str
                     ) -> dict[str, str]:
    """{"Kind name": why it is not ours} for every existing child that is not this Architecture's."""
    return {f"{kind} {child}": ownership.why_foreign(obj, arch)
            for (_, kind, child), obj in sorted(found.items())
            if obj is not None and not ownership.owned(obj, kind, arch, uid)}


def reconcile(
    name: str,
    namespace: str,
    body: dict[str, Any],
    spec: dict[str, Any],
    status_: dict[str, Any],
    generation: int,
    logger: logging.Logger | logging.LoggerAdapter,
    old: dict[str, Any] | None = None,
    ingress_hosts: Mapping[str, Iterable[hosts.Claim]] | None = None,
) -> None:
    """Bring the children of Architecture `name` in line with its spec. Idempotent; kopf retries errors."""
    started = time.monotonic()
    metrics.reconcile_total.labels(COMPONENT).inc()
    try:
        _reconcile(name, namespace, body, spec, status_, generation, logger, old, ingress_hosts)
    except Blocked as exc:
        # Not a failure of the operator: the specific Warning events were posted when the obstacle appeared.
        logger.warning("%s", exc)
        raise
    except kopf.PermanentError as exc:
        metrics.reconcile_errors_total.labels(COMPONENT).inc()
        events.emit(body, reasons.RECONCILE_FAILED, str(exc), warning=True)
        raise
    except kopf.TemporaryError as exc:
        metrics.reconcile_errors_total.labels(COMPONENT).inc()
        events.emit(body, reasons.RECONCILE_FAILED, f"{exc}; retrying", warning=True)
        raise
    finally:
        metrics.reconcile_duration_seconds.labels(COMPONENT).observe(time.monotonic() - started)


def _reconcile(
    name: str,
    namespace: str,
    body: dict[str, Any],
    raw_spec: dict[str, Any],
    current_status: dict[str, Any],
    generation: int,
    logger: logging.Logger | logging.LoggerAdapter,
    old: dict[str, Any] | None,
    ingress_hosts: Mapping[str, Iterable[hosts.Claim]] | None = None,
) -> None:
    settings = config.settings()
    try:
        spec = ArchitectureSpec.parse(raw_spec)
    except (TypeError, ValueError) as exc:
        raise kopf.PermanentError(f"spec cannot be read: {exc}") from exc
    client = apply.api()
    uid = str((body.get("metadata") or {}).get("uid") or "")
    current = dict(current_status or {})

    # The host decision goes into the status first (when it changed), whatever happens below: other
    # Architectures asking for the same host wait until this one's decision shows (hosts.py, rule 2).
    host = host_decision(body, ingress_hosts)
    host_record = host.record() if host is not None else None
    if host_record != current.get("ingressHost"):
        apply.patch_status(client, name, namespace, {"ingressHost": host_record})
        if host is not None and not host.granted:
            events.emit(body, reasons.INGRESS_HOST_TAKEN, hosts.refusal(host_record or {}), warning=True)

    # The Secrets first: the pod templates carry the revisions of their password records.
    generated = secrets.build_secrets(name, namespace)
    found_secrets = apply.read_children(client, generated)
    records = planned_records(name, namespace, generated, found_secrets)
    conf = cdn.nginx_conf(spec) if spec.cdn.enabled else ""
    manifests = build_all(name, namespace, spec if host is None or host.granted else without_ingress(spec),
                          settings, conf, current_leader=current.get("currentLeader"),
                          passwords=secrets.PasswordRevisions.of(name, records))
    leftovers = absent_optional_children(name, namespace, manifests)

    # Ownership: every child, as it is now, before anything is written.
    found = apply.read_children(client, manifests)
    found_leftovers = apply.read_children(client, leftovers)
    found_tls = apply.read_children(client, tls.stubs(name, namespace))
    foreign = foreign_children({**found, **found_secrets, **found_tls}, name, uid)
    if foreign:
        known = set(current.get("foreignObjects") or [])
        for child, why in foreign.items():
            if child not in known:
                events.emit(body, reasons.FOREIGN_OBJECT,
                            f"{child} exists and is not this Architecture's ({why}): nothing is applied "
                            "until it is deleted or renamed", warning=True)
        apply.patch_status(client, name, namespace,
                           reconcile_status(name, namespace, spec, current, generation, status.now_iso(),
                                            foreign=foreign, host=host_record, applied=False))
        raise Blocked(f"not applied: {', '.join(foreign)} not this Architecture's; looking again in "
                      f"{ownership.RETRY_SECONDS}s")

    # What is deployed is the truth to compare with (kopf's last-handled copy may predate defaults).
    deployed = deployed_storage(found.get(("apps/v1", "StatefulSet", names.db(name))))
    if deployed is not None:
        size, storage_class = deployed
        was = replace(spec, database=replace(spec.database, storage_size=size, storage_class=storage_class))
        problems = unsafe_changes(was, spec)
        if problems:
            message = "; ".join(problems)
            events.emit(body, reasons.UNSAFE_CHANGE_REFUSED, message, warning=True)
            raise kopf.PermanentError(message)
        keep_volume_template(manifests, names.db(name), size)
        if quantity_bytes(size) < quantity_bytes(spec.database.storage_size):
            _grow_volumes(client, body, name, namespace, spec.database.storage_size)
    # The Postgres major version never changes under running data (archop/images.py): an image of another
    # major is not rolled out, the rest of the spec is.
    image = images.database_image(spec.database.image, settings.postgres_image,
                                  deployed_image(found.get(("apps/v1", "StatefulSet", names.db(name)))),
                                  data_major(current))
    if image.refusal is not None:
        keep_database_image(manifests, names.db(name), image.image)
        if image.refusal.to_status() != current.get("majorUpgradeRefused"):
            events.emit(body, reasons.MAJOR_UPGRADE_REFUSED, image.refusal.message(), warning=True)

    created, completed = [], []
    for secret in generated:
        existing = found_secrets[("v1", "Secret", secret["metadata"]["name"])]
        if existing is not None:
            completed += _complete_secret(client, name, namespace, existing,
                                          records.get(secret["metadata"]["name"]), logger)
            continue
        if not apply.create_if_absent(client, secret, owner=body):
            # 409: someone created it since it was read. Never use a Secret not checked: read it again.
            raise kopf.TemporaryError(f"Secret {secret['metadata']['name']} appeared after the ownership "
                                      "check; checking again", delay=1)
        created.append(secret["metadata"]["name"])
    certificates = _tls(client, body, name, namespace, found_tls,
                        workloads={(m["kind"], m["metadata"]["name"]) for m in manifests})
    created += [s["metadata"]["name"] for s in certificates.create]
    if created:
        events.emit(body, reasons.SECRETS_CREATED, f"Created Secrets {', '.join(created)}")
    if completed:
        events.emit(body, reasons.SECRETS_UPDATED,
                    f"Wrote connection keys from the applied passwords: {'; '.join(completed)}")
    manifests.append(certificates.bundle)
    tls.stamp(manifests, certificates)

    for child in apply.apply_all(client, manifests, owner=body, existing={**found, **found_tls}):
        events.emit(body, reasons.FOREIGN_OBJECT,
                    f"{child} did not exist when checked but did when applied: someone created it in "
                    "between, and it now carries this Architecture's fields and owner reference. Check who "
                    "created it",
                    warning=True)
    # While the host is Pending, the Ingress is left as it is (neither applied nor removed): two stacks that
    # shared a host before this check existed keep serving until the order has decided between them.
    pending = host is not None and host.state == hosts.PENDING
    pruned = [stub for stub in leftovers
              if not (pending and stub["kind"] == "Ingress")
              and _ours(found_leftovers, stub, name, uid, logger)
              and apply.delete(client, stub, uid=_uid(found_leftovers, stub))]
    # A retry while the host stays refused applies the same generation again: no news, no event.
    again = host is not None and not host.granted and current.get("observedGeneration") == generation
    if not again or pruned:
        events.emit(body, reasons.CHILDREN_APPLIED, summary(manifests, pruned))

    before = _followers_of(old)
    if before is not None and before != spec.database.followers:
        events.emit(body, reasons.FOLLOWERS_SCALED,
                    f"Followers scaled from {before} to {spec.database.followers}")

    apply.patch_status(client, name, namespace,
                       reconcile_status(name, namespace, spec, current, generation, status.now_iso(),
                                        host=host_record, refusal=image.refusal))
    logger.info("reconciled generation %s: %s", generation, summary(manifests, pruned))
    if host is not None and not host.granted:
        raise Blocked(f"applied without the Ingress: {hosts.refusal(host.record())}; looking again in "
                      f"{ownership.RETRY_SECONDS}s")


def planned_records(arch: str, namespace: str, generated: list[dict[str, Any]],
                    found: Mapping[tuple[str, str, str], dict[str, Any] | None],
                    salt: Callable[[], str] = secrets.generate_salt) -> dict[str, str | None]:
    """{contract Secret: the record of its applied password once this reconcile is done}: a new Secret's
    own; an unrecorded one's, recorded now (a fresh salt); any other's as it is (a changed password keeps
    the record of the one the servers have until the periodic check applied it)."""
    out: dict[str, str | None] = {}
    contract = secrets.contract_secrets(arch)
    for secret in generated:
        secret_name = secret["metadata"]["name"]
        if secret_name not in contract:
            continue
        existing = found.get(("v1", "Secret", secret_name))
        if existing is None:
            out[secret_name] = secrets.record_of(secret)
        elif secrets.password_state(arch, namespace, existing) is secrets.PasswordState.UNRECORDED:
            out[secret_name] = secrets.applied_record(secrets.password_of(existing) or "", salt())
        else:
            out[secret_name] = secrets.record_of(existing)
    return out


def _complete_secret(client: Any, name: str, namespace: str, existing: dict[str, Any], record: str | None,
                     logger: logging.Logger | logging.LoggerAdapter) -> list[str]:
    """Write the connection keys (build/secrets.py, the contract) that an existing Secret lacks or holds
    differently, derived from its own password as its servers have it, and its password's `record` when it
    had none (planned_records). Nothing while its password is changed and not yet applied: the keys keep the
    password the servers accept until handlers/passwords.py has applied the new one. `existing` was read for
    the ownership check (so it is this Architecture's); the patch carries its uid and resourceVersion. What
    was written, as "Secret (keys)" for the event: key names only, never values."""
    meta = existing.get("metadata") or {}
    secret_name = str(meta.get("name") or "")
    if secrets.lacks_password(name, existing):
        logger.warning("Secret %s has no password: its connection keys are not written", secret_name)
        return []
    if (secret_name in secrets.contract_secrets(name)
            and secrets.password_state(name, namespace, existing) is secrets.PasswordState.CHANGED):
        logger.info("Secret %s holds a password its servers do not have yet: the password check applies it, "
                    "then writes its connection keys", secret_name)
        return []
    data = secrets.completion(name, namespace, existing)
    annotations = ({secrets.APPLIED_ANNOTATION: record}
                   if record is not None and record != secrets.record_of(existing) else {})
    if not data and not annotations:
        return []
    if not apply.patch_secret_data(client, namespace, secret_name, data, uid=str(meta.get("uid") or ""),
                                   resource_version=str(meta.get("resourceVersion") or ""),
                                   action="writing connection keys to", annotations=annotations):
        raise kopf.TemporaryError(f"Secret {secret_name} changed after it was read; checking again", delay=1)
    written = sorted(data) + (["the record of its applied password"] if annotations else [])
    return [f"Secret {secret_name} ({', '.join(written)})"]


# What each tier's pods do once its server certificate is reissued (tls.stamp changes their pod template).
_RESTART = {names.DATABASE: "the database pods restart one by one to load it",
            names.CACHE: "the cache pod is replaced to load it"}


def _tls(client: Any, body: dict[str, Any], name: str, namespace: str,
         found: Mapping[tuple[str, str, str], dict[str, Any] | None],
         workloads: set[tuple[str, str]]) -> tls.TlsPlan:
    """The CA and server certificate Secrets (build/tls.py): created when absent, a server certificate
    reissued when tls.due says so. `found` holds them as read for the ownership check (so they are this
    Architecture's); `workloads` are the (kind, name) this reconcile applies. Messages name Secrets and
    reasons, never their contents. The periodic check (handlers/certificates.py) renews through here too."""
    try:
        plan = tls.plan(name, namespace, found)
    except tls.TlsError as exc:
        raise kopf.TemporaryError(str(exc), delay=ownership.RETRY_SECONDS) from None
    for secret in plan.create:
        if not apply.create_if_absent(client, secret, owner=body):
            raise kopf.TemporaryError(f"Secret {secret['metadata']['name']} appeared after the ownership "
                                      "check; checking again", delay=1)
    for issued in plan.replace:
        secret_name = issued.server.secret
        meta = (found.get(("v1", "Secret", secret_name)) or {}).get("metadata") or {}
        if not apply.replace_secret_data(client, issued.secret, uid=str(meta.get("uid") or ""),
                                         resource_version=str(meta.get("resourceVersion") or "")):
            raise kopf.TemporaryError(f"Secret {secret_name} changed after it was read; checking again",
                                      delay=1)
        component = issued.server.component
        then = (_RESTART.get(component, "its pods restart to load it") if issued.server.workload in workloads
                else f"no {component} pod runs now")
        events.emit(body, reasons.SERVER_CERTIFICATE_RENEWED,
                    f"Reissued the {component} server certificate in Secret {secret_name} "
                    f"({issued.renewal.value}); {then}")
    return plan


def _uid(found: Mapping[tuple[str, str, str], dict[str, Any] | None], stub: dict[str, Any]) -> str:
    obj = found.get((stub["apiVersion"], stub["kind"], stub["metadata"]["name"])) or {}
    return str((obj.get("metadata") or {}).get("uid") or "")


def _ours(found: Mapping[tuple[str, str, str], dict[str, Any] | None], stub: dict[str, Any], arch: str,
          uid: str, logger: logging.Logger | logging.LoggerAdapter) -> bool:
    """Prune only what exists and is this Architecture's; a foreign object of that name is left alone (the
    spec does not want the name, so it stands in nobody's way)."""
    obj = found.get((stub["apiVersion"], stub["kind"], stub["metadata"]["name"]))
    if obj is None:
        return False
    if not ownership.owned(obj, stub["kind"], arch, uid):
        logger.info("not pruning %s %s: not this Architecture's (%s)", stub["kind"], stub["metadata"]["name"],
                    ownership.why_foreign(obj, arch))
        return False
    return True


def delete(
    name: str,
    namespace: str,
    body: dict[str, Any],
    spec: dict[str, Any],
    logger: logging.Logger | logging.LoggerAdapter,
) -> None:
    """Before the finalizer goes: volumes deleted or kept per reclaimPolicy. Everything else is owned by
    the Architecture and left to the garbage collector."""
    parsed = ArchitectureSpec.parse(spec)
    client = apply.api()
    uid = str((body.get("metadata") or {}).get("uid") or "")
    if parsed.database.reclaim_policy == "Delete":
        volumes = apply.delete_volumes(client, name, namespace)
        message = f"Deleting; volumes deleted: {', '.join(volumes) or 'none'}"
    else:
        # Kept volumes are useless without the passwords inside them: keep the database Secrets too. Only
        # this Architecture's (a Secret of that name that is someone else's is not touched), each by uid.
        kept = []
        for secret in sorted(ownership.retained_secrets(name)):
            obj = apply.get(client, "v1", "Secret", namespace, secret)
            if obj is None or not ownership.owned(obj, "Secret", name, uid):
                continue
            if apply.release(client, "v1", "Secret", namespace, secret, uid=obj["metadata"]["uid"]):
                kept.append(secret)
        message = f"Deleting; volumes kept (reclaimPolicy Retain) with Secrets {', '.join(kept) or 'none'}"
    events.emit(body, reasons.DELETING, message)
    metrics.forget_architecture(namespace, name)
    logger.info(message)

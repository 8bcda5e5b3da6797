{{/*
The operator's RBAC rules, one named template per role. They are exactly operator/archop/permissions.py
(NEEDS): operator/tests/test_permissions.py renders the chart in both modes and compares, and also checks that
the operator's source makes no API call that table does not declare. Change permissions.py first, then here.
No wildcards, no verb the code does not use.
*/}}

{{/* kopf itself, where the Architectures are: the watch stream (list, watch), its finalizer and its progress
and diff-base annotations (patch; it keeps no state in the status), and Events (it only ever creates them).
Scanning is disabled and peering standalone, so no CRDs, Namespaces or KopfPeerings are read. */}}
{{- define "archop.rules.framework" -}}
- apiGroups: ["archop.io"]
  resources: ["architectures"]
  verbs: ["list", "watch", "patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}

{{/* archop's own calls (operator/archop/apply.py), where the Architectures are. */}}
{{- define "archop.rules.application" -}}
# The claim annotation (read, then a conditional write); the one-shot switchover annotation is removed.
- apiGroups: ["archop.io"]
  resources: ["architectures"]
  verbs: ["get", "patch"]
- apiGroups: ["archop.io"]
  resources: ["architectures/status"]
  verbs: ["patch"]
# Database pods: observed by label, role labels moved on failover, deleted to restart one.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "patch", "delete"]
# Generated credentials: created once, read by name, released (owner references dropped) when the volumes
# are kept. Never listed or watched; deleted by the garbage collector with their Architecture.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create", "patch"]
# Database volumes: grown when spec.database.storage.size grows, deleted with reclaimPolicy Delete.
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["list", "patch", "delete"]
# Children: read by name first (the ownership check: an object of a child's name that is not this
# Architecture's is never changed or deleted), server-side apply (patch, and create when the object is
# new), pruning of optional children (delete).
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "create", "patch", "delete"]
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "create", "patch"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "create", "patch", "delete"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "create", "patch", "delete"]
- apiGroups: ["networking.k8s.io"]
  resources: ["ingresses"]
  verbs: ["get", "create", "patch", "delete"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "create", "patch", "delete"]
# Is the release that claimed an Architecture still alive (operator/archop/handlers/claim.py)? Its Lease,
# by name, read only.
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  resourceNames: ["archop-operator"]
  verbs: ["get"]
{{- end }}

{{/* Cluster-scoped objects the operator reads: whether a database pod's node is Ready (failover). */}}
{{- define "archop.rules.nodes" -}}
- apiGroups: [""]
  resources: ["nodes"]
  verbs: ["list"]
{{- end }}

{{/* The operator's own Lease in the release namespace (operator/archop/election.py). create cannot be
limited by name (the object does not exist yet); everything else is limited to that Lease. */}}
{{- define "archop.rules.leaderElection" -}}
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["create"]
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  resourceNames: ["archop-operator"]
  verbs: ["get", "update"]
{{- end }}

{{/* The subjects of every binding: the operator's service account. */}}
{{- define "archop.rbacSubjects" -}}
- kind: ServiceAccount
  name: {{ include "archop.serviceAccountName" . }}
  namespace: {{ .Release.Namespace }}
{{- end }}

{{/*
One archop release per cluster. Every release watches Architectures in all namespaces, so a second one
would act on the same Architectures as the first (each fencing and promoting on its own). Installing or
upgrading fails while an operator Deployment of another release exists anywhere in the cluster; upgrading
the same release finds only its own Deployment and goes on.

Helm's `lookup` answers nothing without a cluster (`helm template`, `--dry-run=client`): the chart then
renders, and the operator's own check takes over at run time (the claim annotation archop.io/operator,
operator/archop/handlers/claim.py).
*/}}

{{/*
archop.otherRelease: the first operator Deployment of another release in a DeploymentList, as
"<namespace>/<release>/<deployment>", or nothing. Pure, so operator/tests/test_chart.py can feed it lists.
Arguments: (dict "deployments" <a DeploymentList, or an empty dict> "name" <app.kubernetes.io/name>
"release" <this release's name> "namespace" <this release's namespace>).
*/}}
{{- define "archop.otherRelease" -}}
{{- $found := "" }}
{{- range $d := (get .deployments "items" | default (list)) }}
{{- $meta := get $d "metadata" | default (dict) }}
{{- $labels := get $meta "labels" | default (dict) }}
{{- $release := get $labels "app.kubernetes.io/instance" }}
{{- $ns := get $meta "namespace" }}
{{- if and (not $found) (eq (get $labels "app.kubernetes.io/name") $.name) (eq (get $labels "app.kubernetes.io/component") "operator") }}
{{- if not (and (eq $ns $.namespace) (eq $release $.release)) }}
{{- $found = printf "%s/%s/%s" $ns $release (get $meta "name") }}
{{- end }}
{{- end }}
{{- end }}
{{- $found }}
{{- end }}

{{/* archop.singleRelease: fail with what to do when another release runs an operator. */}}
{{- define "archop.singleRelease" -}}
{{- $deployments := lookup "apps/v1" "Deployment" "" "" | default (dict) }}
{{- $args := dict "deployments" $deployments "name" (include "archop.name" .) "release" .Release.Name "namespace" .Release.Namespace }}
{{- include "archop.failOnOtherRelease" (dict "other" (include "archop.otherRelease" $args) "release" .Release.Name "namespace" .Release.Namespace) }}
{{- end }}

{{/* archop.failOnOtherRelease: the message, given "other" as archop.otherRelease prints it. */}}
{{- define "archop.failOnOtherRelease" -}}
{{- with .other }}
{{- $parts := splitList "/" . }}
{{- $ns := index $parts 0 }}
{{- $rel := index $parts 1 }}
{{- fail (printf "another archop release already runs an operator in namespace %s (release %s, Deployment %s). Every release watches Architectures in all namespaces, so two would manage the same ones. Uninstall it first (helm uninstall %s -n %s), or upgrade that release instead of installing %s in namespace %s (helm upgrade %s charts/archop -n %s)." $ns $rel (index $parts 2) $rel $ns $.release $.namespace $rel $ns) }}
{{- end }}
{{- end }}

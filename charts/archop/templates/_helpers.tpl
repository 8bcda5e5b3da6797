{{/* The app.kubernetes.io/name of the operator pods: fixed, the operands' NetworkPolicies select it. */}}
{{- define "archop.name" -}}
{{- .Chart.Name }}
{{- end }}

{{/* Fully qualified app name. The release name is used as is when it already contains the chart name. */}}
{{- define "archop.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := .Chart.Name }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "archop.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: stable, never change them between releases (Deployment selectors are immutable). */}}
{{- define "archop.selectorLabels" -}}
app.kubernetes.io/name: {{ include "archop.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "archop.labels" -}}
helm.sh/chart: {{ include "archop.chart" . }}
{{ include "archop.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: archop
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "archop.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "archop.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator image: repository@digest when a digest is set, else repository:tag (tag defaults to appVersion). */}}
{{- define "archop.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The helm test pod (templates/tests): admitted by the operator's NetworkPolicy to the health and metrics ports. */}}
{{- define "archop.testPodSelector" -}}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: test
{{- end }}

{{/* The selector labels as k=v,k=v: ARCHOP_OPERATOR_POD_LABELS, how the operands' NetworkPolicies admit the operator. */}}
{{- define "archop.selectorLabelsCSV" -}}
{{- $labels := include "archop.selectorLabels" . | fromYaml }}
{{- $pairs := list }}
{{- range $k, $v := $labels }}
{{- $pairs = append $pairs (printf "%s=%s" $k $v) }}
{{- end }}
{{- join "," $pairs }}
{{- end }}

{{/* A label map as k=v,k=v (sorted by key). */}}
{{- define "archop.labelsCSV" -}}
{{- $pairs := list }}
{{- range $k, $v := . }}
{{- $pairs = append $pairs (printf "%s=%s" $k $v) }}
{{- end }}
{{- join "," $pairs }}
{{- end }}

{{/* The ingress controller's and the cluster DNS's pod labels: the values, or the defaults the operator uses. */}}
{{- define "archop.ingressControllerLabels" -}}
{{- toYaml (.Values.operandNetworkPolicies.ingressController.podLabels | default (dict "app" "traefik")) }}
{{- end }}
{{- define "archop.clusterDNSLabels" -}}
{{- toYaml (.Values.clusterDNS.podLabels | default (dict "k8s-app" "kube-dns")) }}
{{- end }}

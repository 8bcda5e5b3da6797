{{/*
The operator's settings, one ARCHOP_* variable each; the names are exactly those operator/archop/config.py
reads (Settings.from_env). The lease timing rules of Settings.validate are checked here too, so a bad
combination fails at install instead of crash-looping the pods.
*/}}
{{- define "archop.env" -}}
{{- $le := .Values.leaderElection }}
{{- if not (gt (int $le.leaseDurationSeconds) (int $le.renewDeadlineSeconds)) }}
{{- fail (printf "leaderElection.leaseDurationSeconds (%v) must be greater than leaderElection.renewDeadlineSeconds (%v)" $le.leaseDurationSeconds $le.renewDeadlineSeconds) }}
{{- end }}
{{- if not (gt (mulf $le.renewDeadlineSeconds 1.0) (mulf $le.retryPeriodSeconds 1.2)) }}
{{- fail (printf "leaderElection.renewDeadlineSeconds (%v) must exceed 1.2 x leaderElection.retryPeriodSeconds (%v)" $le.renewDeadlineSeconds $le.retryPeriodSeconds) }}
{{- end }}
{{- if and (gt (int .Values.replicaCount) 1) (not $le.enabled) }}
{{- fail "replicaCount > 1 needs leaderElection.enabled=true: two operators without a Lease would both reconcile" }}
{{- end }}
- name: ARCHOP_POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: ARCHOP_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: ARCHOP_POSTGRES_IMAGE
  value: {{ .Values.images.postgres | quote }}
- name: ARCHOP_REDIS_IMAGE
  value: {{ .Values.images.redis | quote }}
- name: ARCHOP_NGINX_IMAGE
  value: {{ .Values.images.nginx | quote }}
- name: ARCHOP_APP_IMAGE
  value: {{ .Values.images.app | quote }}
- name: ARCHOP_METRICS_PORT
  value: {{ .Values.metrics.port | quote }}
- name: ARCHOP_HEALTH_PORT
  value: {{ .Values.health.port | quote }}
- name: ARCHOP_KOPF_LIVENESS_PORT
  value: {{ .Values.operator.kopfLivenessPort | quote }}
- name: ARCHOP_MONITOR_INTERVAL_SECONDS
  value: {{ .Values.operator.monitorIntervalSeconds | quote }}
- name: ARCHOP_LEADER_ELECTION
  value: {{ .Values.leaderElection.enabled | quote }}
- name: ARCHOP_LEASE_DURATION_SECONDS
  value: {{ $le.leaseDurationSeconds | quote }}
- name: ARCHOP_RENEW_DEADLINE_SECONDS
  value: {{ $le.renewDeadlineSeconds | quote }}
- name: ARCHOP_RETRY_PERIOD_SECONDS
  value: {{ $le.retryPeriodSeconds | quote }}
{{- with .Values.watchNamespaces }}
- name: ARCHOP_WATCH_NAMESPACES
  value: {{ join "," . | quote }}
{{- end }}
- name: ARCHOP_OPERATOR_POD_LABELS
  value: {{ include "archop.selectorLabelsCSV" . | quote }}
{{- with .Values.operandNetworkPolicies }}
- name: ARCHOP_INGRESS_NAMESPACE
  value: {{ .ingressController.namespace | quote }}
- name: ARCHOP_INGRESS_POD_LABELS
  value: {{ include "archop.labelsCSV" (include "archop.ingressControllerLabels" $ | fromYaml) | quote }}
{{- with .ingressController.cidrs }}
- name: ARCHOP_INGRESS_CIDRS
  value: {{ join "," . | quote }}
{{- end }}
{{- with .metricsScraperNamespaces }}
- name: ARCHOP_METRICS_SCRAPER_NAMESPACES
  value: {{ join "," . | quote }}
{{- end }}
{{- end }}
- name: ARCHOP_DNS_NAMESPACE
  value: {{ .Values.clusterDNS.namespace | quote }}
- name: ARCHOP_DNS_POD_LABELS
  value: {{ include "archop.labelsCSV" (include "archop.clusterDNSLabels" . | fromYaml) | quote }}
{{- end }}

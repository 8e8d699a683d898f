{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "cronwork.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name. Truncated to 52 so that suffixes such as "-scheduler" and
"-migrate" still fit in 63 characters.
*/}}
{{- define "cronwork.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "cronwork.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Common labels. Call with (dict "ctx" $ "component" "scheduler"); component optional. */}}
{{- define "cronwork.labels" -}}
helm.sh/chart: {{ include "cronwork.chart" .ctx }}
{{ include "cronwork.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Values.image.tag | default .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: cronwork
{{- end }}

{{/* Selector labels (immutable on Deployments: never add to these). */}}
{{- define "cronwork.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cronwork.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end }}

{{- define "cronwork.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "cronwork.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The ServiceAccount of the migration hook Job. A chart-created ServiceAccount is an
ordinary release resource, which does not exist yet when pre-install hooks run, so
the Job gets its own hook ServiceAccount; an existing one (create=false) is used as is.
*/}}
{{- define "cronwork.migrationServiceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- printf "%s-migrate" (include "cronwork.fullname" .) }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Secret referenced by the Deployments. */}}
{{- define "cronwork.secretName" -}}
{{- .Values.existingSecret | default (include "cronwork.fullname" .) }}
{{- end }}

{{/* Secret referenced by the migration Job: the hook copy, or the existing Secret. */}}
{{- define "cronwork.migrationSecretName" -}}
{{- .Values.existingSecret | default (printf "%s-migrate" (include "cronwork.fullname" .)) }}
{{- end }}

{{- define "cronwork.schedulesConfigMapName" -}}
{{- printf "%s-schedules" (include "cronwork.fullname" .) }}
{{- end }}

{{- define "cronwork.migrationConfigMapName" -}}
{{- printf "%s-migrate" (include "cronwork.fullname" .) }}
{{- end }}

{{- define "cronwork.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion | toString) }}
{{- end }}

{{/*
Secret data, shared by the release Secret and the migration hook's copy. Empty values
are left out so that an unset optional setting stays unset in the container.
*/}}
{{- define "cronwork.secretData" -}}
{{- $s := .Values.secrets -}}
CRONWORK_DATABASE_URL: {{ required "secrets.databaseUrl is required (or set existingSecret)" $s.databaseUrl | b64enc | quote }}
CRONWORK_REDIS_URL: {{ required "secrets.redisUrl is required (or set existingSecret)" $s.redisUrl | b64enc | quote }}
{{- with $s.sentryDsn }}
CRONWORK_SENTRY_DSN: {{ . | b64enc | quote }}
{{- end }}
{{- with $s.slackWebhookUrl }}
CRONWORK_SLACK_WEBHOOK_URL: {{ . | b64enc | quote }}
{{- end }}
{{- with $s.dashboardToken }}
CRONWORK_DASHBOARD_TOKEN: {{ . | b64enc | quote }}
{{- end }}
{{- with $s.dashboardReadonlyToken }}
CRONWORK_DASHBOARD_READONLY_TOKEN: {{ . | b64enc | quote }}
{{- end }}
{{- end }}

{{/*
A dashboard served by more than one pod (the web Deployment, an Ingress over the
schedulers) needs one admin token for all: each pod would otherwise make its own.
*/}}
{{- define "cronwork.requireDashboardToken" -}}
{{- $d := .Values.dashboard -}}
{{- if and (or $d.web.enabled $d.ingress.enabled) (not .Values.existingSecret) -}}
{{- $_ := required "secrets.dashboardToken is required with dashboard.web or dashboard.ingress (or set existingSecret with CRONWORK_DASHBOARD_TOKEN)" .Values.secrets.dashboardToken -}}
{{- end -}}
{{- end }}

{{/* schedules.yaml data, shared by the release ConfigMap and the migration hook's copy. */}}
{{- define "cronwork.schedulesData" -}}
schedules.yaml: |-
{{ .Values.schedules | trimSuffix "\n" | indent 2 }}
{{- end }}

{{/*
Pod template annotations that roll pods when their configuration changes. With
existingSecret the chart cannot see the content, so only a rename rolls pods.
*/}}
{{- define "cronwork.checksumAnnotations" -}}
checksum/schedules: {{ .Values.schedules | sha256sum }}
{{- if .Values.existingSecret }}
checksum/secret: {{ printf "existing:%s" .Values.existingSecret | sha256sum }}
{{- else }}
checksum/secret: {{ include "cronwork.secretData" . | sha256sum }}
{{- end }}
{{- end }}

{{- define "cronwork.metricsAnnotations" -}}
{{- if .Values.metrics.podAnnotations -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .Values.config.httpPort | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end }}

{{/* Environment shared by every cronwork container. Call with (dict "ctx" $ "extra" list). */}}
{{- define "cronwork.env" -}}
{{- $v := .ctx.Values -}}
- name: CRONWORK_SCHEDULES_FILE
  value: /etc/cronwork/schedules.yaml
- name: CRONWORK_HTTP_PORT
  value: {{ $v.config.httpPort | quote }}
- name: CRONWORK_LEASE_TTL
  value: {{ $v.config.leaseTtl | quote }}
- name: CRONWORK_LOG_LEVEL
  value: {{ $v.config.logLevel | quote }}
- name: CRONWORK_LOG_FORMAT
  value: {{ $v.config.logFormat | quote }}
- name: CRONWORK_DATA_DIR
  value: /tmp/cronwork
{{- with $v.config.sentryEnvironment }}
- name: CRONWORK_SENTRY_ENVIRONMENT
  value: {{ . | quote }}
{{- end }}
- name: CRONWORK_SENTRY_RELEASE
  value: {{ $v.config.sentryRelease | default ($v.image.tag | default .ctx.Chart.AppVersion) | toString | quote }}
{{- with $v.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- with .extra }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Default pod anti-affinity from a preset (soft|hard|none), used when affinity is empty. */}}
{{- define "cronwork.affinity" -}}
{{- $c := index .ctx.Values .component -}}
{{- if $c.affinity }}
{{- toYaml $c.affinity }}
{{- else if eq $c.podAntiAffinityPreset "soft" }}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "cronwork.selectorLabels" . | nindent 12 }}
{{- else if eq $c.podAntiAffinityPreset "hard" }}
podAntiAffinity:
  requiredDuringSchedulingIgnoredDuringExecution:
    - topologyKey: kubernetes.io/hostname
      labelSelector:
        matchLabels:
          {{- include "cronwork.selectorLabels" . | nindent 10 }}
{{- end }}
{{- end }}

{{/* Volumes shared by every cronwork pod. Call with (dict "ctx" $ "configMap" name). */}}
{{- define "cronwork.volumes" -}}
- name: schedules
  configMap:
    name: {{ .configMap }}
- name: tmp
  emptyDir:
    sizeLimit: {{ .ctx.Values.tmpSizeLimit }}
{{- end }}

{{- define "cronwork.volumeMounts" -}}
- name: schedules
  mountPath: /etc/cronwork
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- end }}

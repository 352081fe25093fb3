{{/* Names and labels shared by every template. */}}

{{- define "capstan.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: `<release>-capstan`, or just `<release>` when it already says capstan. */}}
{{- define "capstan.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "capstan.selectorLabels" -}}
app.kubernetes.io/name: {{ include "capstan.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: manager
{{- end }}

{{- define "capstan.labels" -}}
{{ include "capstan.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: capstan
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "capstan.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "capstan.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "capstan.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{- define "capstan.leaseName" -}}
{{- default (include "capstan.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/*
The controllers to run, as a list: `controllers`, or every controller in capstan.controllerRules.
Fails with the known names when one is unknown.
*/}}
{{- define "capstan.controllers" -}}
{{- $known := include "capstan.controllerRules" . | fromYaml }}
{{- $enabled := .Values.controllers | default (keys $known | sortAlpha) }}
{{- range $enabled }}
{{- if not (hasKey $known .) }}
{{- fail (printf "controllers: unknown controller %q; this chart knows: %s" . (keys $known | sortAlpha | join ", ")) }}
{{- end }}
{{- end }}
{{- toYaml (dict "controllers" $enabled) }}
{{- end }}

{{/* Refuses combinations the schema cannot express. */}}
{{- define "capstan.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) }}
{{- fail "replicaCount > 1 needs leaderElection.enabled=true: without a leader every replica would reconcile" }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.service.enabled) }}
{{- fail "metrics.serviceMonitor.enabled needs metrics.service.enabled=true: the ServiceMonitor selects that Service" }}
{{- end }}
{{- end }}

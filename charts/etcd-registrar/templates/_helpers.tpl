{{/* Chart name, truncated to a DNS label. */}}
{{- define "etcd-registrar.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: <release>-<chart>, or the release name when it already contains the chart name. */}}
{{- define "etcd-registrar.fullname" -}}
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

{{- define "etcd-registrar.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every resource. */}}
{{- define "etcd-registrar.labels" -}}
helm.sh/chart: {{ include "etcd-registrar.chart" . }}
app.kubernetes.io/name: {{ include "etcd-registrar.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of the operator pod (never helm.sh/chart: selectors are immutable). */}}
{{- define "etcd-registrar.selectorLabels" -}}
app.kubernetes.io/name: {{ include "etcd-registrar.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "etcd-registrar.etcdSelectorLabels" -}}
app.kubernetes.io/name: {{ include "etcd-registrar.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: etcd
{{- end }}

{{- define "etcd-registrar.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "etcd-registrar.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "etcd-registrar.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "etcd-registrar.etcdName" -}}
{{- printf "%s-etcd" (include "etcd-registrar.fullname" . | trunc 58 | trimSuffix "-") }}
{{- end }}

{{/* Comma-separated etcd endpoints: the configured ones, else the bundled etcd, else none
(the operator's own default, http://127.0.0.1:2379). */}}
{{- define "etcd-registrar.etcdEndpoints" -}}
{{- if .Values.etcd.endpoints }}
{{- join "," .Values.etcd.endpoints }}
{{- else if .Values.etcd.enabled }}
{{- printf "http://%s.%s.svc:2379" (include "etcd-registrar.etcdName" .) .Release.Namespace }}
{{- end }}
{{- end }}

{{/* Where the etcd credentials are mounted. */}}
{{- define "etcd-registrar.credentialsDir" -}}
/etc/etcd-registrar/etcd
{{- end }}

{{/* True (non-empty) when any etcd credential Secret is configured. */}}
{{- define "etcd-registrar.hasCredentials" -}}
{{- if or .Values.etcd.tls.ca.secretName .Values.etcd.tls.client.secretName .Values.etcd.auth.password.secretName }}true{{- end }}
{{- end }}

{{/* Rules the operator needs in each watched namespace (or cluster-wide). */}}
{{- define "etcd-registrar.namespacedRules" -}}
# Pods: the registry follows their readiness. Read only: the operator never writes pods...
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
{{- if .Values.readinessGate.enabled }}
# ... except the one condition, etcd-registrar.io/registered, of a pod that declares it as a
# readiness gate (DESIGN guarantee 7's exception).
- apiGroups: [""]
  resources: ["pods/status"]
  verbs: ["patch"]
{{- end }}
# Events about bad annotations, conflicts and registrations (core/v1 Events).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["etcd-registrar.io"]
  resources: ["serviceregistrations"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["etcd-registrar.io"]
  resources: ["serviceregistrations/status"]
  verbs: ["get", "patch"]
{{- end }}

{{/* Cluster-scoped reads kopf makes: CRDs (resource discovery) in every mode. */}}
{{- define "etcd-registrar.crdRules" -}}
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get", "list", "watch"]
{{- end }}

{{/* The cluster's identity: the UID of the kube-system namespace, and nothing else of it. */}}
{{- define "etcd-registrar.clusterIdentityRules" -}}
- apiGroups: [""]
  resources: ["namespaces"]
  resourceNames: ["kube-system"]
  verbs: ["get"]
{{- end }}

{{/* Fail early on values that contradict each other (the schema checks each one alone). */}}
{{- define "etcd-registrar.validate" -}}
{{- if and .Values.etcd.auth.password.secretName (not .Values.etcd.auth.username) }}
{{- fail "etcd.auth.username is required when etcd.auth.password.secretName is set" }}
{{- end }}
{{- if and .Values.etcd.auth.username (not .Values.etcd.auth.password.secretName) }}
{{- fail "etcd.auth.password.secretName is required when etcd.auth.username is set (the password is read from that Secret)" }}
{{- end }}
{{- if and .Values.serviceMonitor.enabled (not .Values.metrics.enabled) }}
{{- fail "serviceMonitor.enabled needs metrics.enabled=true" }}
{{- end }}
{{- if and .Values.podDisruptionBudget.enabled (not (kindIs "invalid" .Values.podDisruptionBudget.minAvailable)) (not (kindIs "invalid" .Values.podDisruptionBudget.maxUnavailable)) }}
{{- fail "podDisruptionBudget: set minAvailable or maxUnavailable, not both" }}
{{- end }}
{{- if and .Values.metrics.enabled (eq (int .Values.metrics.port) (int .Values.health.port)) }}
{{- fail "metrics.port and health.port must differ" }}
{{- end }}
{{- $endpoints := include "etcd-registrar.etcdEndpoints" . }}
{{- if and (or .Values.etcd.tls.ca.secretName .Values.etcd.tls.client.secretName) $endpoints (not (hasPrefix "https://" $endpoints)) }}
{{- fail "etcd.tls is set but etcd.endpoints are not https:// URLs" }}
{{- end }}
{{- end }}

{{/*
The owner id: the value; else the one the installed Deployment already uses (an upgrade keeps
its registry, whatever helm may read); else <namespace>-<release>-<cluster>, <cluster> the
first 8 characters of the kube-system namespace's UID, so that the same release in two
clusters sharing one etcd never shares one; else (helm template, or a helm user who may not
read kube-system) <namespace>-<release>.
*/}}
{{- define "etcd-registrar.ownerId" -}}
{{- if .Values.ownerId }}
{{- .Values.ownerId | trunc 63 | trimSuffix "-" -}}
{{- else }}
{{- $installed := "" }}
{{- $deployment := lookup "apps/v1" "Deployment" .Release.Namespace (include "etcd-registrar.fullname" .) }}
{{- range (dig "spec" "template" "spec" "containers" (list) $deployment) }}
{{- range (get . "env" | default (list)) }}
{{- if eq (get . "name") "ETCD_REGISTRAR_OWNER_ID" }}{{ $installed = get . "value" }}{{ end }}
{{- end }}
{{- end }}
{{- $base := printf "%s-%s" .Release.Namespace .Release.Name }}
{{- $cluster := dig "metadata" "uid" "" (lookup "v1" "Namespace" "" "kube-system") | trunc 8 }}
{{- if $installed }}
{{- $installed -}}
{{- else if $cluster }}
{{- printf "%s-%s" ($base | trunc 54 | trimSuffix "-") $cluster -}}
{{- else }}
{{- $base | trunc 63 | trimSuffix "-" -}}
{{- end }}
{{- end }}
{{- end }}

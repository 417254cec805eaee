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

{{/* Comma-separated etcd endpoints: the configured ones, else the bundled etcd
(etcd-registrar.validate refuses neither). */}}
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

{{/* The operator's settings, as environment variables: the operator, `kubectl exec ...
etcd-registrar doctor` and the `helm test` pod read the same ones. */}}
{{- define "etcd-registrar.env" -}}
{{- $credentials := include "etcd-registrar.credentialsDir" . }}
{{- $endpoints := include "etcd-registrar.etcdEndpoints" . }}
{{- with .Values.watchNamespaces }}
- name: ETCD_REGISTRAR_NAMESPACE
  value: {{ join "," . | quote }}
{{- end }}
- name: ETCD_REGISTRAR_ETCD_ENDPOINTS
  value: {{ $endpoints | quote }}
- name: ETCD_REGISTRAR_ETCD_TIMEOUT
  value: {{ .Values.etcd.timeout | quote }}
{{- if .Values.etcd.tls.ca.secretName }}
- name: ETCD_REGISTRAR_ETCD_CA
  value: {{ printf "%s/ca.crt" $credentials }}
{{- end }}
{{- if .Values.etcd.tls.client.secretName }}
- name: ETCD_REGISTRAR_ETCD_CERT
  value: {{ printf "%s/tls.crt" $credentials }}
- name: ETCD_REGISTRAR_ETCD_KEY
  value: {{ printf "%s/tls.key" $credentials }}
{{- end }}
{{- if .Values.etcd.auth.password.secretName }}
- name: ETCD_REGISTRAR_ETCD_USERNAME
  value: {{ .Values.etcd.auth.username | quote }}
- name: ETCD_REGISTRAR_ETCD_PASSWORD_FILE
  value: {{ printf "%s/password" $credentials }}
{{- end }}
- name: ETCD_REGISTRAR_DEFAULT_TTL
  value: {{ .Values.ttl | quote }}
- name: ETCD_REGISTRAR_DEFAULT_FORMAT
  value: {{ .Values.format | quote }}
{{- with .Values.prefix }}
- name: ETCD_REGISTRAR_DEFAULT_PREFIX
  value: {{ . | quote }}
{{- end }}
- name: ETCD_REGISTRAR_RESYNC
  value: {{ .Values.resync | quote }}
- name: ETCD_REGISTRAR_OWNER_ID
  value: {{ include "etcd-registrar.ownerId" . | quote }}
# A new configuration of this release (a higher revision) takes over from the old one;
# another release with the same owner id is refused (high-availability.md).
- name: ETCD_REGISTRAR_INSTALLATION
  value: {{ printf "%s/%s" .Release.Namespace .Release.Name | quote }}
- name: ETCD_REGISTRAR_CONFIG_GENERATION
  value: {{ .Release.Revision | quote }}
{{- with .Values.policy.allowedPrefixes }}
- name: ETCD_REGISTRAR_ALLOWED_PREFIX
  value: {{ join "," . | quote }}
{{- end }}
- name: ETCD_REGISTRAR_MAX_KEYS_PER_NAMESPACE
  value: {{ .Values.policy.maxKeysPerNamespace | quote }}
- name: ETCD_REGISTRAR_MAX_CLAIMS_PER_NAMESPACE
  value: {{ .Values.policy.maxClaimsPerNamespace | quote }}
- name: ETCD_REGISTRAR_CLAIMS
  value: {{ .Values.policy.claims | quote }}
- name: ETCD_REGISTRAR_MAX_VALUE_BYTES
  value: {{ .Values.policy.maxValueBytes | quote }}
- name: ETCD_REGISTRAR_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
- name: ETCD_REGISTRAR_LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
- name: ETCD_REGISTRAR_DRY_RUN
  value: {{ .Values.dryRun | quote }}
- name: ETCD_REGISTRAR_READINESS_GATE
  value: {{ .Values.readinessGate.enabled | quote }}
{{- with .Values.podSelector }}
- name: ETCD_REGISTRAR_POD_SELECTOR
  value: {{ . | quote }}
{{- end }}
- name: ETCD_REGISTRAR_METRICS_PORT
  value: {{ ternary .Values.metrics.port 0 .Values.metrics.enabled | quote }}
- name: ETCD_REGISTRAR_HEALTH_PORT
  value: {{ .Values.health.port | quote }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The etcd credentials' volume mount and volume (nothing without credentials). */}}
{{- define "etcd-registrar.credentialsMount" -}}
{{- if include "etcd-registrar.hasCredentials" . }}
- name: etcd-credentials
  mountPath: {{ include "etcd-registrar.credentialsDir" . }}
  readOnly: true
{{- end }}
{{- end }}

{{- define "etcd-registrar.credentialsVolume" -}}
{{- if include "etcd-registrar.hasCredentials" . }}
# Credentials from existing Secrets, as files only (0440, group fsGroup).
- name: etcd-credentials
  projected:
    defaultMode: 0440
    sources:
      {{- with .Values.etcd.tls.ca }}
      {{- if .secretName }}
      - secret:
          name: {{ .secretName }}
          items:
            - key: {{ .key }}
              path: ca.crt
      {{- end }}
      {{- end }}
      {{- with .Values.etcd.tls.client }}
      {{- if .secretName }}
      - secret:
          name: {{ .secretName }}
          items:
            - key: {{ .certKey }}
              path: tls.crt
            - key: {{ .keyKey }}
              path: tls.key
      {{- end }}
      {{- end }}
      {{- with .Values.etcd.auth.password }}
      {{- if .secretName }}
      - secret:
          name: {{ .secretName }}
          items:
            - key: {{ .key }}
              path: password
      {{- end }}
      {{- end }}
{{- end }}
{{- end }}

{{/* Rules the operator needs in each watched namespace (or cluster-wide), and no more:
tests/e2e/test_chart.py names the call that uses each grant (doctor.py checks the same list). */}}
{{- define "etcd-registrar.namespacedRules" -}}
# Pods: the registry follows their readiness (a list, then a watch). Read only: the operator
# never writes pods...
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
{{- if .Values.readinessGate.enabled }}
# ... except the one condition, etcd-registrar.io/registered, of a pod that declares it as a
# readiness gate (docs/annotations.md). RBAC cannot narrow this to one condition:
# admissionPolicy.enabled does.
- apiGroups: [""]
  resources: ["pods/status"]
  verbs: ["patch"]
{{- end }}
# Events about bad annotations, conflicts and registrations: core/v1, posted once each.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
- apiGroups: ["etcd-registrar.io"]
  resources: ["serviceregistrations"]
  verbs: ["list", "watch"]
- apiGroups: ["etcd-registrar.io"]
  resources: ["serviceregistrations/status"]
  verbs: ["patch"]
{{- end }}

{{/* Cluster-scoped reads in every mode: CRDs (kopf's resource discovery) and namespaces
(the service ranges an administrator assigns in their etcd-registrar.io/claims annotation;
kopf also notices watched namespaces being created or deleted). */}}
{{- define "etcd-registrar.clusterRules" -}}
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
# The cluster's identity (kube.py cluster_identity): the kube-system namespace, nothing else.
- apiGroups: [""]
  resources: ["namespaces"]
  resourceNames: ["kube-system"]
  verbs: ["get"]
{{- end }}

{{/* Fail early on values that contradict each other (the schema checks each one alone). */}}
{{- define "etcd-registrar.validate" -}}
{{- if not (or .Values.etcd.endpoints .Values.etcd.enabled) }}
{{- fail "etcd.endpoints is required: set the etcd client URLs (e.g. --set etcd.endpoints={https://10.0.0.1:2379}), or etcd.enabled=true to try the chart out with a bundled etcd" }}
{{- end }}
{{- if and .Values.etcd.auth.password.secretName (not .Values.etcd.auth.username) }}
{{- fail "etcd.auth.username is required when etcd.auth.password.secretName is set" }}
{{- end }}
{{- if and .Values.etcd.auth.username (not .Values.etcd.auth.password.secretName) }}
{{- fail "etcd.auth.password.secretName is required when etcd.auth.username is set (the password is read from that Secret)" }}
{{- end }}
{{- if and .Values.serviceMonitor.enabled (not .Values.metrics.enabled) }}
{{- fail "serviceMonitor.enabled needs metrics.enabled=true" }}
{{- end }}
{{- if and .Values.prometheusRule.enabled (not .Values.metrics.enabled) }}
{{- fail "prometheusRule.enabled needs metrics.enabled=true (its alerts read the metrics)" }}
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

{{/*
Named templates of the tokenbroker chart. The public ones, for sidecar mode, are
"tokenbroker.sidecarContainer" and "tokenbroker.sidecarVolumes" (at the end);
the others are internal.
*/}}

{{- define "tokenbroker.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tokenbroker.fullname" -}}
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

{{- define "tokenbroker.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tokenbroker.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tokenbroker.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tokenbroker.labels" -}}
helm.sh/chart: {{ include "tokenbroker.chart" . }}
{{ include "tokenbroker.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "tokenbroker.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tokenbroker.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tokenbroker.image" -}}
{{- $img := .Values.image }}
{{- if $img.digest }}
{{- printf "%s@%s" $img.repository $img.digest }}
{{- else }}
{{- printf "%s:%s" $img.repository ($img.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
tokenbroker.isSecretName: non-empty when a variable name denotes a secret.
The explicit names are the settings docs/configuration.md marks (secret) that
the patterns miss; the patterns catch the rest and future ones. The chart check
(deploy/deploytest, chartcheck) renders every (secret) setting of
docs/configuration.md into `config` and expects this to refuse it.
*/}}
{{- define "tokenbroker.isSecretName" -}}
{{- if or (has . (list "BROKER_REDIS_URL")) (regexMatch "(^|_)(SECRET|PASSWORD|PASSWD|CREDENTIALS?)(_|$)|_(TOKEN|KEYS?)$" .) }}true{{ end }}
{{- end }}

{{/*
tokenbroker.envValue: a value of `config` or `secrets` as an environment
variable's string: lists joined with commas, whole numbers without exponent.
*/}}
{{- define "tokenbroker.envValue" -}}
{{- if kindIs "slice" . }}
{{- join "," . }}
{{- else if kindIs "float64" . }}
{{- int64 . }}
{{- else if kindIs "invalid" . }}
{{- else }}
{{- toString . }}
{{- end }}
{{- end }}

{{/* Variables the chart sets itself. */}}
{{- define "tokenbroker.chartManaged" -}}
{{- list "BROKER_LISTEN_ADDR" "BROKER_METRICS_ADDR" "BROKER_DATA_DIR" "BROKER_CONFIG_FILE" | toJson }}
{{- end }}

{{/*
tokenbroker.validate fails the rendering, with one line that says what to
change, on values that would give a broker that cannot start or that would put
a secret into a ConfigMap. Every template that the chart always renders
includes it (the ConfigMap).
*/}}
{{- define "tokenbroker.validate" -}}
{{- $v := .Values }}
{{- if not (has $v.store.type (list "embedded" "vault-redis")) }}
{{- fail (printf "store.type: %q is not embedded or vault-redis" $v.store.type) }}
{{- end }}
{{- $managed := include "tokenbroker.chartManaged" . | fromJsonArray }}
{{- range $k, $val := $v.config }}
{{- if not (regexMatch "^BROKER_[A-Z0-9_]+$" $k) }}
{{- fail (printf "config.%s: not a BROKER_* variable (docs/configuration.md lists them)" $k) }}
{{- end }}
{{- if include "tokenbroker.isSecretName" $k }}
{{- fail (printf "config.%s holds a secret and would land in a ConfigMap: put it in `secrets` or in the Secret named by `existingSecret`" $k) }}
{{- end }}
{{- if has $k $managed }}
{{- fail (printf "config.%s is set by the chart (ports, store.type); remove it" $k) }}
{{- end }}
{{- if not (or (kindIs "string" $val) (kindIs "bool" $val) (kindIs "float64" $val) (kindIs "int64" $val) (kindIs "slice" $val)) }}
{{- fail (printf "config.%s: want a string, boolean, number or list" $k) }}
{{- end }}
{{- end }}
{{- range $k, $val := $v.secrets }}
{{- if not (regexMatch "^BROKER_[A-Z0-9_]+$" $k) }}
{{- fail (printf "secrets.%s: not a BROKER_* variable (docs/configuration.md lists them)" $k) }}
{{- end }}
{{- end }}
{{- range $v.extraEnv }}
{{- if and (hasKey . "value") (include "tokenbroker.isSecretName" .name) }}
{{- fail (printf "extraEnv %s: a secret as a literal value; use valueFrom.secretKeyRef" .name) }}
{{- end }}
{{- end }}
{{- if not (or $v.config.BROKER_AUTH_JWKS_URL $v.secrets.BROKER_AUTH_HS256_SECRET $v.existingSecret) }}
{{- fail "caller authentication: set config.BROKER_AUTH_JWKS_URL, or BROKER_AUTH_HS256_SECRET in `secrets` or in the Secret named by `existingSecret`" }}
{{- end }}
{{- if eq $v.store.type "embedded" }}
{{- if and $v.deployment.enabled (or (gt (int $v.replicaCount) 1) $v.autoscaling.enabled) }}
{{- fail (printf "store.type=embedded runs exactly one replica (replicaCount=%v, autoscaling.enabled=%v): use store.type=vault-redis for more" $v.replicaCount $v.autoscaling.enabled) }}
{{- end }}
{{- if or $v.config.BROKER_VAULT_ADDR $v.secrets.BROKER_REDIS_URL }}
{{- fail "BROKER_VAULT_ADDR or BROKER_REDIS_URL is set: set store.type=vault-redis" }}
{{- end }}
{{- else }}
{{- if not $v.config.BROKER_VAULT_ADDR }}
{{- fail "store.type=vault-redis needs config.BROKER_VAULT_ADDR" }}
{{- end }}
{{- if not (or $v.existingSecret $v.secrets.BROKER_REDIS_URL) }}
{{- fail "store.type=vault-redis needs BROKER_REDIS_URL in `secrets` or in the Secret named by `existingSecret`" }}
{{- end }}
{{- if not (or $v.existingSecret $v.secrets.BROKER_ENCRYPTION_KEY) }}
{{- fail "store.type=vault-redis needs BROKER_ENCRYPTION_KEY (the same on every replica) in `secrets` or in the Secret named by `existingSecret`" }}
{{- end }}
{{- if and $v.config.BROKER_VAULT_KUBERNETES_ROLE (not $v.config.BROKER_VAULT_KUBERNETES_TOKEN_PATH) (not $v.serviceAccount.automountToken) }}
{{- fail "config.BROKER_VAULT_KUBERNETES_ROLE (Vault Kubernetes auth) logs in with the service account token: set serviceAccount.automountToken=true" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
tokenbroker.container renders the broker's container as one list item.
Arguments: a dict with "root" (the chart's context) and "sidecar" (bool).
Service mode names its ports http and metrics; sidecar mode names them
tb-http and tb-metrics, so that they cannot clash with the application's.
*/}}
{{- define "tokenbroker.container" -}}
{{- $root := .root }}
{{- $v := $root.Values }}
{{- $http := ternary "tb-http" "http" .sidecar }}
{{- $metrics := ternary "tb-metrics" "metrics" .sidecar }}
{{- $host := ternary $v.sidecar.listenHost "0.0.0.0" .sidecar -}}
- name: tokenbroker
  image: {{ include "tokenbroker.image" $root | quote }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  {{- if and .sidecar $v.sidecar.native }}
  restartPolicy: Always
  {{- end }}
  ports:
    - name: {{ $http }}
      containerPort: {{ $v.ports.http }}
      protocol: TCP
    - name: {{ $metrics }}
      containerPort: {{ $v.ports.metrics }}
      protocol: TCP
  env:
    - name: BROKER_LISTEN_ADDR
      value: {{ printf "%s:%v" $host $v.ports.http | quote }}
    - name: BROKER_METRICS_ADDR
      value: {{ printf "0.0.0.0:%v" $v.ports.metrics | quote }}
    {{- if eq $v.store.type "embedded" }}
    - name: BROKER_DATA_DIR
      value: /data
    {{- end }}
    {{- with $v.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  envFrom:
    - configMapRef:
        name: {{ include "tokenbroker.fullname" $root }}
    {{- if $v.secrets }}
    - secretRef:
        name: {{ include "tokenbroker.fullname" $root }}
    {{- end }}
    {{- if $v.existingSecret }}
    - secretRef:
        name: {{ $v.existingSecret }}
    {{- end }}
  startupProbe:
    httpGet:
      path: {{ $v.probes.startup.path }}
      port: {{ $metrics }}
    periodSeconds: {{ $v.probes.startup.periodSeconds }}
    failureThreshold: {{ $v.probes.startup.failureThreshold }}
    timeoutSeconds: {{ $v.probes.startup.timeoutSeconds }}
  livenessProbe:
    httpGet:
      path: {{ $v.probes.liveness.path }}
      port: {{ $metrics }}
    periodSeconds: {{ $v.probes.liveness.periodSeconds }}
    failureThreshold: {{ $v.probes.liveness.failureThreshold }}
    timeoutSeconds: {{ $v.probes.liveness.timeoutSeconds }}
  readinessProbe:
    httpGet:
      path: {{ $v.probes.readiness.path }}
      port: {{ $metrics }}
    periodSeconds: {{ $v.probes.readiness.periodSeconds }}
    failureThreshold: {{ $v.probes.readiness.failureThreshold }}
    timeoutSeconds: {{ $v.probes.readiness.timeoutSeconds }}
  resources:
    {{- toYaml $v.resources | nindent 4 }}
  securityContext:
    {{- toYaml $v.securityContext | nindent 4 }}
  {{- if or (eq $v.store.type "embedded") $v.extraVolumeMounts }}
  volumeMounts:
    {{- if eq $v.store.type "embedded" }}
    - name: tokenbroker-data
      mountPath: /data
    {{- end }}
    {{- with $v.extraVolumeMounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
{{- end }}

{{/*
tokenbroker.volumes: the pod volumes the container mounts, as list items
(nothing on vault-redis without extraVolumes).
*/}}
{{- define "tokenbroker.volumes" -}}
{{- $v := .Values }}
{{- if eq $v.store.type "embedded" }}
- name: tokenbroker-data
  {{- if $v.store.embedded.existingClaim }}
  persistentVolumeClaim:
    claimName: {{ $v.store.embedded.existingClaim }}
  {{- else }}
  emptyDir:
    sizeLimit: {{ $v.store.embedded.sizeLimit }}
  {{- end }}
{{- end }}
{{- with $v.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
tokenbroker.sidecarContainer — sidecar mode.

Renders the broker's container spec, as one list item, to add to another
workload's pod. Call it with this chart's context: `.` inside this chart, or
`.Subcharts.tokenbroker` from a chart that depends on this one (so the
container uses this chart's values, under the `tokenbroker:` key of the
parent's values). With sidecar.native=true (the default) the container has
restartPolicy: Always and belongs under initContainers (a native sidecar,
Kubernetes 1.29+: started before the application, stopped after it); with
false, put it under containers.

  spec:
    serviceAccountName: {{ include "tokenbroker.serviceAccountName" .Subcharts.tokenbroker }}
    initContainers:
      {{- include "tokenbroker.sidecarContainer" .Subcharts.tokenbroker | nindent 6 }}
    containers:
      - name: app   # calls http://127.0.0.1:8080/proxy/...
    volumes:
      {{- include "tokenbroker.sidecarVolumes" .Subcharts.tokenbroker | nindent 6 }}

The container reads its settings from this chart's ConfigMap and Secrets, so
install the chart too (deployment.enabled=false installs only those and the
ServiceAccount). Its API listens on sidecar.listenHost (127.0.0.1: the pod's
containers only); its ports are named tb-http and tb-metrics, and its probes use
tb-metrics. The embedded store keeps one file per pod: with more than one
replica of the workload, use store.type=vault-redis. The pod's security
context should run as non-root as this chart's podSecurityContext does (fsGroup
65532 for the embedded store's volume).
templates/sidecar-example.yaml shows a whole Deployment.
*/}}
{{- define "tokenbroker.sidecarContainer" -}}
{{- include "tokenbroker.container" (dict "root" . "sidecar" true) }}
{{- end }}

{{/*
tokenbroker.sidecarVolumes — sidecar mode: the volumes the sidecar container
mounts, as list items for the pod's volumes (the embedded store's data folder;
nothing on vault-redis without extraVolumes). Same argument as
tokenbroker.sidecarContainer.
*/}}
{{- define "tokenbroker.sidecarVolumes" -}}
{{- include "tokenbroker.volumes" . }}
{{- end }}

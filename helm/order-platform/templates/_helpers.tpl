{{/* vim: set filetype=mustache: */}}

{{- define "op.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "op.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "op.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels every object carries. */}}
{{- define "op.labels" -}}
helm.sh/chart: {{ include "op.chart" . }}
app.kubernetes.io/name: {{ include "op.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: order-platform
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of the whole release (network policies select on these). */}}
{{- define "op.releaseSelector" -}}
app.kubernetes.io/name: {{ include "op.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/*
The components. Each entry: values key, resource name suffix, and what it needs:
  web       serves HTTP on .port (Service, HTTP probes, route target); /metrics on that port
  metrics   (processes without an HTTP API) the prefix of its *_METRICS_HOST/_PORT settings:
            /metrics on .metricsPort (container port "metrics", Service, ServiceMonitor)
  secrets   env var name -> the connection (connections.<name>) it holds the URL of
The resource name suffix is also the component label, which the ServiceMonitor makes the
Prometheus `job` (auth, orders, orders-events, event-consumer, worker: what the rules and the
dashboards select on).
Call with (dict "root" $ "key" "auth").
*/}}
{{- define "op.components" -}}
auth:
  name: auth
  web: true
  configMap: auth
  secrets:
    AUTH_DATABASE_URL: authDatabase
    AUTH_REDIS_URL: redis
orders:
  name: orders
  web: true
  configMap: orders
  secrets:
    ORDERS_DATABASE_URL: ordersDatabase
    ORDERS_REDIS_URL: redis
    ORDERS_AMQP_URL: amqp
ordersEvents:
  name: orders-events
  web: false
  metrics: ORDERS_EVENTS_METRICS
  configMap: orders
  secrets:
    ORDERS_DATABASE_URL: ordersDatabase
    ORDERS_REDIS_URL: redis
    ORDERS_AMQP_URL: amqp
eventConsumer:
  name: event-consumer
  web: false
  metrics: CONSUMER_METRICS
  configMap: event-consumer
  secrets:
    CONSUMER_AMQP_URL: amqp
    CONSUMER_REDIS_URL: redis
    CONSUMER_CELERY_BROKER_URL: celeryBroker
worker:
  name: worker
  web: false
  metrics: WORKER_METRICS
  configMap: worker
  secrets:
    WORKER_CELERY_BROKER_URL: celeryBroker
    WORKER_AMQP_URL: amqp
{{- end -}}

{{- define "op.componentLabels" -}}
{{ include "op.labels" .root }}
app.kubernetes.io/component: {{ .name }}
{{- end -}}

{{- define "op.componentSelector" -}}
{{ include "op.releaseSelector" .root }}
app.kubernetes.io/component: {{ .name }}
{{- end -}}

{{/* image reference: (dict "root" $ "image" .Values.auth.image) */}}
{{- define "op.image" -}}
{{- $registry := .root.Values.image.registry -}}
{{- $tag := default (default .root.Chart.AppVersion .root.Values.image.tag) .image.tag -}}
{{- if .image.digest -}}
{{- printf "%s%s@%s" (ternary "" (printf "%s/" $registry) (empty $registry)) .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s%s:%s" (ternary "" (printf "%s/" $registry) (empty $registry)) .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* The release's own Secret of connection values given as strings (never existingSecret). */}}
{{- define "op.connectionsSecret" -}}
{{- printf "%s-connections" (include "op.fullname" .) -}}
{{- end -}}

{{- define "op.jwtSecret" -}}
{{- default (printf "%s-jwt" (include "op.fullname" .)) .Values.jwt.existingSecret -}}
{{- end -}}

{{- define "op.serviceAccountName" -}}
{{- if .root.Values.serviceAccount.create -}}
{{- printf "%s-%s" (include "op.fullname" .root) .name -}}
{{- else -}}
{{- default "default" .root.Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "op.authUrl" -}}
{{- printf "http://%s-auth.%s.svc:%d" (include "op.fullname" .) .Release.Namespace (int .Values.auth.port) -}}
{{- end -}}

{{/* The pod-level security context of every workload: restricted Pod Security Standard. */}}
{{- define "op.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
fsGroup: {{ .Values.securityContext.fsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "op.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: {{ .Values.securityContext.readOnlyRootFilesystem }}
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Standard OTEL_* variables: the only telemetry configuration (STYLE.md). With telemetry off
     no endpoint is set, so nothing is exported, while logs keep their trace ids. */}}
{{- define "op.telemetryEnv" -}}
OTEL_SERVICE_NAME: {{ .name | quote }}
{{- if .root.Values.telemetry.enabled }}
OTEL_EXPORTER_OTLP_ENDPOINT: {{ .root.Values.telemetry.otlpEndpoint | quote }}
OTEL_EXPORTER_OTLP_PROTOCOL: {{ .root.Values.telemetry.otlpProtocol | quote }}
{{- end }}
OTEL_PROPAGATORS: "tracecontext,baggage"
OTEL_RESOURCE_ATTRIBUTES: {{ printf "service.namespace=order-platform,deployment.environment=%s,k8s.namespace.name=%s" .root.Values.environment .root.Release.Namespace | quote }}
{{- end -}}

{{/* One egress rule: a data service port, to its peers (all destinations when none). */}}
{{- define "op.np.egressTo" -}}
- ports:
    - port: {{ .port }}
      protocol: TCP
  {{- with .to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}


{{/* --- connections ------------------------------------------------------------------------
Each connection (connections.<name>) reaches a service as one URL variable, from the first of:
  url: {secretKeyRef: {name, key}}   that Secret's key (CloudNativePG's `<cluster>-app`/`uri`)
  url: "<string>"                    the string, kept in the release's Secret
  host (+ port, username, password, database/vhost, options): the URL assembled in the pod
                                     with Kubernetes' $(VAR) expansion; each part a string or
                                     {secretKeyRef: {name, key}} (the RabbitMQ operator's
                                     `<cluster>-default-user`); a password string is kept in
                                     the release's Secret
  connections.existingSecret / connections.values (the one-Secret form, key <prefix>-url)
celeryBroker without url and host takes redis's parts with its own database.
*/}}
{{- define "op.connectionTypes" -}}
authDatabase: {prefix: auth-database, legacy: authDatabaseUrl, kind: postgresql, var: AUTH_DATABASE}
ordersDatabase: {prefix: orders-database, legacy: ordersDatabaseUrl, kind: postgresql, var: ORDERS_DATABASE}
redis: {prefix: redis, legacy: redisUrl, kind: redis, var: REDIS}
amqp: {prefix: amqp, legacy: amqpUrl, kind: amqp, var: AMQP}
celeryBroker: {prefix: celery-broker, legacy: celeryBrokerUrl, kind: redis, var: CELERY_BROKER}
{{- end -}}

{{/* The effective values of one connection: (dict "root" $ "conn" "redis") */}}
{{- define "op.connection" -}}
{{- $all := .root.Values.connections -}}
{{- $c := index $all .conn -}}
{{- if and (eq .conn "celeryBroker") (not $c.url) (not $c.host) (not $all.redis.url) $all.redis.host -}}
{{- $c = merge (dict "database" $c.database "options" (default $all.redis.options $c.options)) (omit $all.redis "database" "options") -}}
{{- end -}}
{{- toYaml $c -}}
{{- end -}}

{{/* How a connection is given: secretUrl | url | parts | legacy */}}
{{- define "op.connectionMode" -}}
{{- $c := include "op.connection" . | fromYaml -}}
{{- if kindIs "map" $c.url -}}secretUrl
{{- else if $c.url -}}url
{{- else if $c.host -}}parts
{{- else -}}legacy
{{- end -}}
{{- end -}}

{{/* Whether a connection has anything to connect to (NOTES warns otherwise). */}}
{{- define "op.connectionGiven" -}}
{{- $mode := include "op.connectionMode" . -}}
{{- $type := index (include "op.connectionTypes" . | fromYaml) .conn -}}
{{- if or (ne $mode "legacy") .root.Values.connections.existingSecret (index .root.Values.connections.values $type.legacy) -}}true{{- end -}}
{{- end -}}

{{/* The keys a release-owned Secret holds for these connections:
     (dict "root" $ "conns" (list "authDatabase" ...)) */}}
{{- define "op.connectionSecretData" -}}
{{- $root := .root -}}
{{- $types := include "op.connectionTypes" . | fromYaml -}}
{{- range $conn := .conns }}
{{- $type := index $types $conn }}
{{- $c := include "op.connection" (dict "root" $root "conn" $conn) | fromYaml }}
{{- $mode := include "op.connectionMode" (dict "root" $root "conn" $conn) }}
{{- if eq $mode "url" }}
{{ $type.prefix }}-url: {{ $c.url | quote }}
{{- else if and (eq $mode "legacy") (not $root.Values.connections.existingSecret) }}
{{ $type.prefix }}-url: {{ index $root.Values.connections.values $type.legacy | quote }}
{{- else if and (eq $mode "parts") $c.password (not (kindIs "map" $c.password)) }}
{{ $type.prefix }}-password: {{ $c.password | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The env entries that give one connection's URL to a container:
     (dict "root" $ "conn" "amqp" "env" "ORDERS_AMQP_URL" "secret" <release-owned Secret>) */}}
{{- define "op.connectionEnv" -}}
{{- $type := index (include "op.connectionTypes" . | fromYaml) .conn -}}
{{- $c := include "op.connection" . | fromYaml -}}
{{- $mode := include "op.connectionMode" . -}}
{{- if eq $mode "secretUrl" }}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      name: {{ required (printf "connections.%s.url.secretKeyRef.name" .conn) $c.url.secretKeyRef.name }}
      key: {{ required (printf "connections.%s.url.secretKeyRef.key" .conn) $c.url.secretKeyRef.key }}
{{- else if eq $mode "url" }}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: {{ $type.prefix }}-url
{{- else if eq $mode "parts" }}
{{- $parts := dict }}
{{- $names := list "username" "password" "host" "port" (ternary "vhost" "database" (eq $type.kind "amqp")) }}
{{- range $part := $names }}
{{- $value := index $c $part }}
{{- $var := printf "OP_%s_%s" $type.var (upper $part) }}
{{- if kindIs "map" $value }}
- name: {{ $var }}
  valueFrom:
    secretKeyRef:
      name: {{ $value.secretKeyRef.name }}
      key: {{ $value.secretKeyRef.key }}
{{- $_ := set $parts $part (printf "$(%s)" $var) }}
{{- else if and (eq $part "password") $value }}
- name: {{ $var }}
  valueFrom:
    secretKeyRef:
      name: {{ $.secret }}
      key: {{ $type.prefix }}-password
{{- $_ := set $parts $part (printf "$(%s)" $var) }}
{{- else if and (eq $part "vhost") $value }}
{{- $_ := set $parts $part (urlquery $value) }}
{{- else }}
{{- $_ := set $parts $part (toString (default "" $value)) }}
{{- end }}
{{- end }}
{{- $scheme := "postgresql+asyncpg" }}
{{- if ne $type.kind "postgresql" }}{{ $scheme = default $type.kind $c.scheme }}{{ end }}
{{- $auth := "" }}
{{- if $parts.password }}
{{- $auth = printf "%s:%s@" $parts.username $parts.password }}
{{- else if $parts.username }}
{{- $auth = printf "%s@" $parts.username }}
{{- end }}
{{- $hostPort := ternary (printf "%s:%s" $parts.host $parts.port) $parts.host (ne $parts.port "") }}
{{- $path := ternary $parts.vhost $parts.database (eq $type.kind "amqp") }}
- name: {{ .env }}
  value: {{ printf "%s://%s%s/%s%s" $scheme $auth $hostPort $path (ternary (printf "?%s" $c.options) "" (not (empty $c.options))) | quote }}
{{- else }}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      name: {{ default .secret .root.Values.connections.existingSecret }}
      key: {{ $type.prefix }}-url
{{- end }}
{{- end -}}

{{/* extraEnv / extraVolumes / extraVolumeMounts: the global list, then the workload's.
     (dict "root" $ "workload" .Values.auth "field" "extraEnv") */}}
{{- define "op.extra" -}}
{{- $items := concat (default list (index .root.Values .field)) (default list (index .workload .field)) -}}
{{- with $items }}
{{- toYaml . }}
{{- end }}
{{- end -}}

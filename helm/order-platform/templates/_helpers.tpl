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
  secrets   env var name -> key in the connections Secret
The resource name suffix is also the component label, which the ServiceMonitor makes the
Prometheus `job` (auth, orders, orders-relay, event-consumer, worker: what the rules and the
dashboards select on).
Call with (dict "root" $ "key" "auth").
*/}}
{{- define "op.components" -}}
auth:
  name: auth
  web: true
  configMap: auth
  secrets:
    AUTH_DATABASE_URL: auth-database-url
    AUTH_REDIS_URL: redis-url
orders:
  name: orders
  web: true
  configMap: orders
  secrets:
    ORDERS_DATABASE_URL: orders-database-url
    ORDERS_REDIS_URL: redis-url
    ORDERS_AMQP_URL: amqp-url
ordersRelay:
  name: orders-relay
  web: false
  metrics: ORDERS_RELAY_METRICS
  configMap: orders
  secrets:
    ORDERS_DATABASE_URL: orders-database-url
    ORDERS_REDIS_URL: redis-url
    ORDERS_AMQP_URL: amqp-url
eventConsumer:
  name: event-consumer
  web: false
  metrics: CONSUMER_METRICS
  configMap: event-consumer
  secrets:
    CONSUMER_AMQP_URL: amqp-url
    CONSUMER_REDIS_URL: redis-url
    CONSUMER_CELERY_BROKER_URL: celery-broker-url
worker:
  name: worker
  web: false
  metrics: WORKER_METRICS
  configMap: worker
  secrets:
    WORKER_CELERY_BROKER_URL: celery-broker-url
    WORKER_AMQP_URL: amqp-url
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

{{- define "op.connectionsSecret" -}}
{{- default (printf "%s-connections" (include "op.fullname" .)) .Values.connections.existingSecret -}}
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

#!/usr/bin/env bash
# A local Kubernetes cluster with the whole platform: kind + Gateway API (Envoy Gateway) +
# dev data services + kube-prometheus-stack + the order-platform chart with values-dev.yaml.
# Needs docker, kind (>= 0.24, for NetworkPolicy), kubectl and helm (>= 3.8). Idempotent.
#   SKIP_MONITORING=1  skip kube-prometheus-stack (saves ~1 GiB of memory)
#   SKIP_BUILD=1       use images already loaded into the cluster
#   SKIP_APP=1         stop before the images and the chart (for `tilt up -f tilt/Tiltfile`)
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER="${KIND_CLUSTER:-order-platform}"
NAMESPACE="${NAMESPACE:-order-platform}"
RELEASE="${RELEASE:-order-platform}"
TAG="${IMAGE_TAG:-dev}"
ENVOY_GATEWAY_VERSION="${ENVOY_GATEWAY_VERSION:-v1.2.4}"
KPS_VERSION="${KPS_VERSION:-66.3.1}"
SERVICES=(auth orders event-consumer worker gateway)

for tool in docker kind kubectl helm; do
    command -v "$tool" >/dev/null || { echo "kind-up needs $tool on PATH" >&2; exit 1; }
done
step() { printf '\n==> %s\n' "$*"; }

step "cluster $CLUSTER"
if ! kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    kind create cluster --name "$CLUSTER" --config k8s/kind-cluster.yaml
fi
kubectl config use-context "kind-$CLUSTER" >/dev/null

step "Envoy Gateway $ENVOY_GATEWAY_VERSION (and the Gateway API CRDs)"
helm upgrade --install eg oci://docker.io/envoyproxy/gateway-helm \
    --version "$ENVOY_GATEWAY_VERSION" -n envoy-gateway-system --create-namespace --wait
kubectl wait --timeout=5m -n envoy-gateway-system deployment/envoy-gateway --for=condition=Available
kubectl apply -k k8s/gateway

step "data services (namespace order-data)"
kubectl apply -k k8s/dev-data
for sts in postgres redis rabbitmq; do
    kubectl -n order-data rollout status "statefulset/$sts" --timeout=5m
done

if [[ "${SKIP_MONITORING:-0}" != 1 ]]; then
    step "kube-prometheus-stack $KPS_VERSION (namespace monitoring)"
    helm repo add prometheus-community https://prometheus-community.github.io/helm-charts >/dev/null 2>&1 || true
    helm repo update prometheus-community >/dev/null
    helm upgrade --install kube-prometheus-stack prometheus-community/kube-prometheus-stack \
        --version "$KPS_VERSION" -n monitoring --create-namespace \
        -f k8s/monitoring/kube-prometheus-stack.values.yaml --wait --timeout 10m
fi

if [[ "${SKIP_APP:-0}" == 1 ]]; then
    echo
    echo "cluster ready without the application; now: tilt up -f tilt/Tiltfile"
    exit 0
fi

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    step "images (tag $TAG)"
    for svc in "${SERVICES[@]}"; do
        docker build --target "$svc" -t "order-platform/$svc:$TAG" .
        kind load docker-image --name "$CLUSTER" "order-platform/$svc:$TAG"
    done
fi

step "order-platform chart (release $RELEASE, namespace $NAMESPACE)"
kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl apply -f -
kubectl label namespace "$NAMESPACE" --overwrite pod-security.kubernetes.io/enforce=restricted >/dev/null
set_monitoring=()
if [[ "${SKIP_MONITORING:-0}" == 1 ]]; then
    set_monitoring=(--set serviceMonitor.enabled=false --set prometheusRule.enabled=false)
fi
helm upgrade --install "$RELEASE" helm/order-platform -n "$NAMESPACE" \
    -f helm/order-platform/values-dev.yaml --set image.tag="$TAG" "${set_monitoring[@]}" \
    --wait --timeout 10m

step "smoke test through the gateway"
for _ in $(seq 1 60); do
    if curl -fsS http://localhost:8000/.well-known/jwks.json >/dev/null 2>&1; then break; fi
    sleep 2
done
curl -fsS http://localhost:8000/.well-known/jwks.json >/dev/null && echo "gateway answers"

cat <<MSG

The platform runs in kind cluster "$CLUSTER":
  API (Gateway API / Envoy)  http://localhost:8000   (README walkthrough works as is)
  Grafana                    kubectl -n monitoring port-forward svc/kps-grafana 3000:80   (admin/admin)
  Prometheus                 kubectl -n monitoring port-forward svc/kps-prometheus 9090
  RabbitMQ management        kubectl -n order-data port-forward svc/rabbitmq 15672   (guest/guest)
Remove it all with: make kind-down
MSG

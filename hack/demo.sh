#!/usr/bin/env bash
# `make demo`: the local cluster, the operator, a demo Deployment and ServiceRegistration, and
# the registry printed live (as a consumer's etcd watch sees it) while the workload changes.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
BIN=$ROOT/.venv/bin
NS=demo
PREFIX=/service_registry_discovery

# DEMO_NODE=real: the Deployment runs on the real node (hack/realnode-up.sh) as the demo app
# with an HTTP readiness probe, and readiness is switched through the app, not a status patch.
DEMO_NODE=${DEMO_NODE:-kwok}
POD_EXTRA=""
CONTAINER_EXTRA=""
PORT=80
IMAGE=registry.k8s.io/pause:3.10
if [ "$DEMO_NODE" = real ]; then
  hack/realnode-up.sh
  source .cluster/realnode/node.env
  IMAGE=$DEMO_IMAGE
  PORT=8080
  POD_EXTRA="nodeSelector: {${NODE_LABEL%%=*}: ${NODE_LABEL#*=}}
      tolerations: [{key: $TAINT_KEY, operator: Exists, effect: NoSchedule}]"
  CONTAINER_EXTRA="readinessProbe: {httpGet: {path: /ready, port: http}, periodSeconds: 1, failureThreshold: 1}"
else
  hack/cluster-up.sh
fi
export KUBECONFIG=$ROOT/.cluster/kubeconfig
export ETCD_REGISTRAR_ETCD_ENDPOINTS=$(cat .cluster/etcd-endpoints)
source hack/versions.env
KUBECTL=${ETCD_REGISTRAR_CACHE:-$HOME/.cache/etcd-registrar}/k8s-${K8S_VERSION}/kubectl
[ -x "$KUBECTL" ] || KUBECTL=kubectl
k() { "$KUBECTL" "$@"; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

step "CRD and demo namespace"
k apply -f crds/
k wait --for=condition=Established crd/serviceregistrations.etcd-registrar.io >/dev/null
k create namespace "$NS" --dry-run=client -o yaml | k apply -f - >/dev/null
k -n "$NS" delete deployment goods --ignore-not-found --wait=true >/dev/null

step "Operator (log: .cluster/logs/operator.log)"
"$BIN/etcd-registrar" run --namespace "$NS" --owner-id demo --metrics-port 0 --health-port 18081 \
  > .cluster/logs/operator.log 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -sf localhost:18081/readyz >/dev/null && break; sleep 0.2; done

step "Live registry under $PREFIX/goods/ (etcd-registrar watch, a consumer's view)"
"$BIN/etcd-registrar" watch goods --prefix "$PREFIX" 2>/dev/null | sed -u 's/^/    registry> /' &
pids+=($!)

wait_keys() {  # until etcd holds exactly $1 keys for goods
  for _ in $(seq 150); do
    n=$("$BIN/etcd-registrar" ls goods --owner-id demo --json | "$BIN/python" -c 'import json,sys; print(len(json.load(sys.stdin)))')
    [ "$n" = "$1" ] && return 0
    sleep 0.2
  done
  echo "registry did not reach $1 keys" >&2; return 1
}

step "ServiceRegistration goods: prefix $PREFIX, TTL 3 s, format address"
k -n "$NS" apply -f - <<EOF
apiVersion: etcd-registrar.io/v1alpha1
kind: ServiceRegistration
metadata: {name: goods}
spec: {prefix: $PREFIX, ttl: 3, format: address}
EOF

step "Deployment goods: 3 replicas, opted in by one annotation"
k -n "$NS" apply -f - <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: goods}
spec:
  replicas: 3
  selector: {matchLabels: {app: goods}}
  template:
    metadata:
      labels: {app: goods}
      annotations: {etcd-registrar.io/service: goods}
    spec:
      terminationGracePeriodSeconds: 0
      $POD_EXTRA
      containers:
      - name: app
        image: $IMAGE
        imagePullPolicy: IfNotPresent
        ports: [{name: http, containerPort: $PORT}]
        $CONTAINER_EXTRA
EOF
wait_keys 3

step "Scale to 4"
k -n "$NS" scale deployment goods --replicas 4 >/dev/null
wait_keys 4

step "Scale back to 3"
k -n "$NS" scale deployment goods --replicas 3 >/dev/null
wait_keys 3

POD=$(k -n "$NS" get pods -l app=goods -o jsonpath='{.items[0].metadata.name}')
set_ready() {
  if [ "$DEMO_NODE" = real ]; then  # the app's readiness endpoint; the kubelet's probe follows
    curl -fsS -X POST "http://$(k -n "$NS" get pod "$POD" -o jsonpath='{.status.podIP}'):$PORT/ready/$([ "$1" = True ] && echo on || echo off)" >/dev/null
  else  # kwok: what a kubelet would write
    k -n "$NS" patch pod "$POD" --subresource=status --type=strategic \
      -p "{\"status\":{\"conditions\":[{\"type\":\"Ready\",\"status\":\"$1\"}]}}" >/dev/null
  fi
}
step "Pod $POD goes unready (its key must go)"
set_ready False
wait_keys 2
step "Pod $POD is ready again (its key comes back)"
set_ready True
wait_keys 3

step "Summary"
# the status writer runs each second: wait for it to count the three keys
k -n "$NS" wait sreg/goods --for=jsonpath='{.status.endpoints}'=3 --timeout=15s >/dev/null
k -n "$NS" get sreg
echo
"$BIN/etcd-registrar" ls --owner-id demo
echo
echo "The cluster keeps running: KUBECONFIG=$KUBECONFIG; stop it with 'make cluster-down'."

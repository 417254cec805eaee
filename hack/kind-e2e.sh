#!/usr/bin/env bash
# `make kind-e2e`, for users with Docker: the e2e suite against a kind cluster that runs the
# operator image and the Helm chart (with the chart's optional etcd as the registry).
#   1. kind cluster "etcd-registrar-e2e" from kind-config.yaml (reused when it exists)
#   2. docker build of the image the chart references by default (values.yaml image.repository
#      : Chart.yaml appVersion), kind load, helm upgrade --install with etcd.enabled=true
#   3. the registry etcd forwarded to 127.0.0.1 (kubectl port-forward, stopped on exit)
#   4. a smoke check of the installed operator: `etcd-registrar doctor` inside its pod, and a
#      Deployment registered in etcd and deregistered when deleted
#   5. pytest -m e2e tests/e2e with KUBECONFIG and ETCD_REGISTRAR_ETCD_ENDPOINTS set, which
#      tests/harness.py (Cluster.ensure_up) accepts as an external cluster
# Needs docker (with a running daemon), kind, helm, kubectl, curl and the venv (`make venv`).
# Extra arguments go to pytest, e.g. `hack/kind-e2e.sh -k doctor`. The cluster is kept for
# the next run; remove it with `kind delete cluster --name etcd-registrar-e2e`.
set -euo pipefail
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KIND_CLUSTER="${KIND_CLUSTER:-etcd-registrar-e2e}"
RELEASE=etcd-registrar
# The release namespace, and the only namespace the installed operator watches: the e2e
# tests start their own operators (owner id = test namespace) in namespaces of their own,
# and a second, cluster-wide operator would hold their keys too (a killed test operator's
# keys would then never expire).
NAMESPACE=etcd-registrar
CHART="${REPO_ROOT}/charts/etcd-registrar"
CRD_NAME=serviceregistrations.etcd-registrar.io
VENV="${REPO_ROOT}/.venv"
PYTHON="${VENV}/bin/python"
SMOKE=smoke

# Deselected on kind, with the reason: they depend on kwok, not on Kubernetes.
DESELECT=(
  # Asserts that a Ready=False set through the status subresource stays: true with kwok,
  # while a real kubelet owns the Ready condition and writes its own back (status sync, <=10 s).
  tests/e2e/test_cluster_smoke.py::test_ready_condition_patched_via_status_sticks
  # Checks kwok's stages against the kubelet's Ready rule (hack/kwok/stages.yaml); on kind the
  # kubelet itself applies it, and owns the ContainersReady condition the test patches.
  tests/e2e/test_readiness_gate.py::test_local_cluster_computes_ready_from_the_gates
)

WORK="$(mktemp -d "${TMPDIR:-/tmp}/etcd-registrar-kind-e2e.XXXXXX")"
KUBECONFIG_FILE="${WORK}/kubeconfig"
PF_PID=""
cleanup() {
  if [[ -n "${PF_PID}" ]]; then
    kill "${PF_PID}" 2>/dev/null || true
    wait "${PF_PID}" 2>/dev/null || true
  fi
  rm -rf "${WORK}"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

k() { "${KUBECTL}" --kubeconfig "${KUBECONFIG_FILE}" "$@"; }

poll() { # poll TIMEOUT COMMAND...: until COMMAND succeeds; status 1 after TIMEOUT seconds
  local deadline=$(($(date +%s) + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    (($(date +%s) < deadline)) || return 1
    sleep 0.5
  done
}

# --- preflight ------------------------------------------------------------------------------

for tool in docker kind helm curl; do
  command -v "${tool}" >/dev/null || die "'${tool}' not found: make kind-e2e needs Docker, kind, helm, kubectl and curl"
done
KUBECTL="$(kubectl_bin)"
[[ -x "${VENV}/bin/pytest" ]] || die "${VENV}/bin/pytest missing: run 'make venv'"
docker info >/dev/null 2>&1 || die "the Docker daemon is not reachable ('docker info' fails)"

# The pinned helm (`make tools`) when built, else the one on PATH; exported as $HELM, which
# tests/e2e/test_chart.py uses too.
HELM="${ETCD_REGISTRAR_CACHE}/helm-${HELM_VERSION}/helm"
if [[ ! -x "${HELM}" ]]; then
  HELM="$(command -v helm)"
  found="$("${HELM}" version --template '{{.Version}}' 2>/dev/null || echo unknown)"
  if [[ "${found}" != "${HELM_VERSION}" ]]; then
    log "warning: using helm ${found} from PATH; the chart tests were written against helm" \
      "${HELM_VERSION} (hack/versions.env; 'make tools' builds it)"
  fi
fi
export HELM

# The image the chart deploys by default: values.yaml image.repository, and image.tag or else
# Chart.yaml appVersion (the same rule as the chart's etcd-registrar.image helper).
IMAGE="$("${PYTHON}" - "${CHART}" <<'EOF'
import sys
from pathlib import Path

import yaml

chart = Path(sys.argv[1])
values = yaml.safe_load((chart / "values.yaml").read_text())
app_version = yaml.safe_load((chart / "Chart.yaml").read_text())["appVersion"]
print(f"{values['image']['repository']}:{values['image']['tag'] or app_version}")
EOF
)"

# --- cluster ----------------------------------------------------------------------------------

clusters="$(kind get clusters 2>/dev/null)"
if grep -qx "${KIND_CLUSTER}" <<<"${clusters}"; then
  log "reusing kind cluster ${KIND_CLUSTER}"
else
  log "creating kind cluster ${KIND_CLUSTER}"
  # --kubeconfig: leave ~/.kube/config (and its current context) alone.
  kind create cluster --name "${KIND_CLUSTER}" --config "${REPO_ROOT}/kind-config.yaml" \
    --kubeconfig "${KUBECONFIG_FILE}" --wait 120s
fi
kind get kubeconfig --name "${KIND_CLUSTER}" >"${KUBECONFIG_FILE}"
chmod 600 "${KUBECONFIG_FILE}"

# --- image --------------------------------------------------------------------------------------

log "building ${IMAGE}"
docker build -t "${IMAGE}" "${REPO_ROOT}"
kind load docker-image "${IMAGE}" --name "${KIND_CLUSTER}"
# Recorded on the pod template, so a rebuilt image (same tag) rolls the operator over.
IMAGE_ID="$(docker image inspect --format '{{.Id}}' "${IMAGE}")"

# --- chart ----------------------------------------------------------------------------------------

# The chart installs the CRD unless one exists that another owner (kubectl apply, another
# release) created: Helm refuses to adopt it, so the chart leaves it alone then.
INSTALL_CRD=true
if k get crd "${CRD_NAME}" >/dev/null 2>&1; then
  owner="$(k get crd "${CRD_NAME}" -o jsonpath='{.metadata.annotations.meta\.helm\.sh/release-name}/{.metadata.annotations.meta\.helm\.sh/release-namespace}')"
  if [[ "${owner}" != "${RELEASE}/${NAMESPACE}" ]]; then
    log "CRD ${CRD_NAME} exists outside this release: installing the chart with crds.enabled=false"
    INSTALL_CRD=false
  fi
fi

log "installing the chart (release ${RELEASE}, namespace ${NAMESPACE}, etcd.enabled=true)"
# image.pullPolicy=Never: run exactly the image just loaded, never a pulled one.
"${HELM}" upgrade --install "${RELEASE}" "${CHART}" \
  --kubeconfig "${KUBECONFIG_FILE}" \
  --namespace "${NAMESPACE}" --create-namespace \
  --set etcd.enabled=true \
  --set image.pullPolicy=Never \
  --set "watchNamespaces={${NAMESPACE}}" \
  --set "crds.enabled=${INSTALL_CRD}" \
  --set-string "podAnnotations.kind-e2e/image-id=${IMAGE_ID}" \
  --wait --timeout 5m
if [[ "${INSTALL_CRD}" == false ]]; then
  k apply -f "${REPO_ROOT}/crds/${CRD_NAME}.yaml"
fi
k wait --for=condition=Established "crd/${CRD_NAME}" --timeout=60s

selected() { # selected KIND COMPONENT -> the release's object of that component, as kind/name
  k -n "${NAMESPACE}" get "$1" -o name \
    -l "app.kubernetes.io/instance=${RELEASE},app.kubernetes.io/component=$2"
}
OPERATOR="$(selected deployment operator)"
ETCD_SERVICE="$(selected service etcd)"
[[ -n "${OPERATOR}" && -n "${ETCD_SERVICE}" ]] || die "the release has no operator Deployment or etcd Service"

# --- registry etcd on the host ------------------------------------------------------------------

ETCD_PORT="$(free_port)"
ENDPOINT="http://127.0.0.1:${ETCD_PORT}"
k -n "${NAMESPACE}" port-forward --address 127.0.0.1 "${ETCD_SERVICE}" "${ETCD_PORT}:2379" \
  >"${WORK}/port-forward.log" 2>&1 &
PF_PID=$!
poll 30 etcd_healthy "${ENDPOINT}" ||
  die "port-forward to ${ETCD_SERVICE}: $(cat "${WORK}/port-forward.log")"
log "registry etcd forwarded to ${ENDPOINT}"

# --- smoke check of the installed operator -----------------------------------------------------

log "etcd-registrar doctor inside ${OPERATOR}"
# No flags: doctor inherits the operator's settings (watchNamespaces included) from the pod.
k -n "${NAMESPACE}" exec "${OPERATOR}" -- etcd-registrar doctor

registered() { # registered -> "key=value" lines the installed operator holds for ${SMOKE}
  "${VENV}/bin/etcd-registrar" ls "${SMOKE}" --json --etcd-endpoints "${ENDPOINT}" \
    --owner-id "${NAMESPACE}-${RELEASE}" | "${PYTHON}" -c \
    'import json, sys; print("\n".join(sorted(r["key"] + "=" + r["value"] for r in json.load(sys.stdin))))'
}
smoke_registered() { # smoke_registered EXPECTED
  [[ "$(registered)" == "$1" ]]
}

log "registering Deployment ${SMOKE} through the installed operator"
k -n "${NAMESPACE}" apply -f - >/dev/null <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: ${SMOKE}}
spec:
  replicas: 1
  selector: {matchLabels: {app: ${SMOKE}}}
  template:
    metadata:
      labels: {app: ${SMOKE}}
      annotations: {etcd-registrar.io/service: ${SMOKE}}
    spec:
      terminationGracePeriodSeconds: 0
      containers:
        - name: app
          image: registry.k8s.io/pause:3.10
          ports: [{name: http, containerPort: 80}]
EOF
k -n "${NAMESPACE}" rollout status "deployment/${SMOKE}" --timeout=120s
POD="$(k -n "${NAMESPACE}" get pods -l "app=${SMOKE}" -o jsonpath='{.items[0].metadata.name} {.items[0].status.podIP}')"
read -r POD_NAME POD_IP <<<"${POD}"
EXPECTED="/services/${SMOKE}/${POD_NAME}=${POD_IP}:80"
poll 30 smoke_registered "${EXPECTED}" ||
  die "expected ${EXPECTED} in etcd, got: $(registered)"
log "registered: ${EXPECTED}"
k -n "${NAMESPACE}" delete "deployment/${SMOKE}" --wait=true >/dev/null
poll 30 smoke_registered "" || die "key still in etcd after the Deployment went: $(registered)"
log "deregistered after the Deployment was deleted"

# --- the e2e suite ------------------------------------------------------------------------------

deselect=()
for test_id in "${DESELECT[@]}"; do deselect+=(--deselect "${test_id}"); done
log "running the e2e suite against kind (deselected: ${DESELECT[*]})"
cd "${REPO_ROOT}"
KUBECONFIG="${KUBECONFIG_FILE}" \
  ETCD_REGISTRAR_ETCD_ENDPOINTS="${ENDPOINT}" \
  "${VENV}/bin/pytest" -q -m e2e tests/e2e "${deselect[@]}" "$@"

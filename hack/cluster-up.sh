#!/usr/bin/env bash
# Start a real local Kubernetes control plane without Docker, all on 127.0.0.1 with free
# ports, state in <repo>/.cluster/:
#   etcd-k8s        Kubernetes' backing etcd: etcd ${ETCD_VERSION} built by hack/build-tools.sh.
#                   Not Debian's 3.4.23: it lacks RequestWatchProgress, and kube-apiserver
#                   1.34 (WatchList on by default) then fails every watch sent without a
#                   resourceVersion (or with "0") and with bookmarks, e.g. all of kwok's:
#                   "a watch stream was requested by the client but the required storage
#                   feature RequestWatchProgress is disabled"; pods took 30 s+ to start.
#   etcd-registry   the registry etcd the operator writes to -> .cluster/etcd-endpoints
#                   (Debian etcd, or $ETCD_REGISTRAR_REGISTRY_ETCD_BIN)
#   kube-apiserver, kube-controller-manager, kube-scheduler (built by hack/build-tools.sh)
#   kwok            simulated kubelets for the fake nodes below (pods get IPs, Running, Ready;
#                   Ready waits for readiness gates: hack/kwok/stages.yaml)
# Admin kubeconfig: .cluster/kubeconfig. PIDs: .cluster/pids/, logs: .cluster/logs/.
# Idempotent: returns at once when the recorded cluster is running and healthy; anything
# else (a stale .cluster/ from a dead run, a half-dead cluster) is stopped and recreated.
set -euo pipefail
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NODE_COUNT="${ETCD_REGISTRAR_NODES:-2}"
SERVICE_CIDR=10.96.0.0/16
POD_CIDR=10.244.0.1/16
KWOK_NODE_SELECTOR=kwok.x-k8s.io/node=fake
REGISTRY_ETCD_BIN="${ETCD_REGISTRAR_REGISTRY_ETCD_BIN:-$(command -v etcd || echo "etcd (run 'make deps')")}"

T0="$(now_ms)"

preflight() {
  local b
  for b in "${K8S_BINARIES[@]}"; do
    [[ -x "${K8S_BIN_DIR}/${b}" ]] || die "${K8S_BIN_DIR}/${b} missing: run 'make tools'"
  done
  [[ -x "${KWOK_BIN_DIR}/kwok" ]] || die "${KWOK_BIN_DIR}/kwok missing: run 'make tools'"
  [[ -x "${ETCD_BIN_DIR}/etcd" ]] || die "${ETCD_BIN_DIR}/etcd missing: run 'make tools'"
  [[ -x "${REGISTRY_ETCD_BIN}" ]] || die "'${REGISTRY_ETCD_BIN}' not executable"
  for b in openssl curl python3 setsid flock; do
    command -v "${b}" >/dev/null || die "'${b}' not found: run 'make deps' (hack/install-deps.sh)"
  done
}

# Everything recorded is alive and answering: then there is nothing to do.
cluster_healthy() {
  [[ -f "${CLUSTER_DIR}/ports.env" && -f "${KUBECONFIG_FILE}" ]] || return 1
  # A cluster from before the real node (no kubelet-client certificate) is replaced.
  [[ -f "${PKI_DIR}/kubelet-client.crt" ]] || return 1
  # shellcheck source=/dev/null
  source "${CLUSTER_DIR}/ports.env"
  local c
  for c in "${COMPONENTS[@]}"; do component_pid "${c}" >/dev/null || return 1; done
  etcd_healthy "http://127.0.0.1:${ETCD_K8S_PORT}" >/dev/null 2>&1 || return 1
  etcd_healthy "http://127.0.0.1:${ETCD_REGISTRY_PORT}" >/dev/null 2>&1 || return 1
  https_healthy "${APISERVER_PORT}" /readyz >/dev/null || return 1
  https_healthy "${KCM_PORT}" /healthz >/dev/null || return 1
  https_healthy "${SCHEDULER_PORT}" /healthz >/dev/null || return 1
  nodes_ready
}

nodes_ready() {
  local ready
  ready="$(kc get nodes -l type=kwok \
    -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' |
    grep -c '^True$')" || return 1
  ((ready >= NODE_COUNT))
}

gen_pki() { # openssl's chatter and errors go to .cluster/logs/pki.log
  mkdir -p "${PKI_DIR}"
  local p="${PKI_DIR}"
  (
    cd "${p}"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key 2>>"${LOG_DIR}/pki.log"
    openssl req -x509 -new -key ca.key -subj "/CN=etcd-registrar-local-ca" -days 3650 \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -out ca.crt 2>>"${LOG_DIR}/pki.log"
    issue() { # issue NAME SUBJECT EXTENSIONS
      openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key" 2>>"${LOG_DIR}/pki.log"
      openssl req -new -key "$1.key" -subj "$2" 2>>"${LOG_DIR}/pki.log" |
        openssl x509 -req -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
          -extfile <(printf '%b' "$3") -out "$1.crt" 2>>"${LOG_DIR}/pki.log"
    }
    issue apiserver "/CN=kube-apiserver" \
      "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n"
    issue admin "/O=system:masters/CN=kubernetes-admin" \
      "keyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n"
    # The API server's identity towards kubelets (exec, logs, port-forward on the real node).
    issue kubelet-client "/CN=kube-apiserver-kubelet-client" \
      "keyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n"
    # Request-header (front proxy) client cert: without it every component logs
    # "missing content for CA bundle ...requestheader-client-ca-file" over and over.
    issue front-proxy-client "/CN=front-proxy-client" \
      "keyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n"
    # ServiceAccount token signing key pair (TokenRequest API, bound tokens).
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out sa.key 2>>"${LOG_DIR}/pki.log"
    openssl pkey -in sa.key -pubout -out sa.pub 2>>"${LOG_DIR}/pki.log"
    chmod 600 ./*.key
  )
}

write_kubeconfig() {
  local b64="base64 -w0"
  cat >"${KUBECONFIG_FILE}" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:${APISERVER_PORT}
    certificate-authority-data: $(${b64} "${PKI_DIR}/ca.crt")
users:
- name: admin
  user:
    client-certificate-data: $(${b64} "${PKI_DIR}/admin.crt")
    client-key-data: $(${b64} "${PKI_DIR}/admin.key")
contexts:
- name: local
  context: {cluster: local, user: admin}
current-context: local
EOF
  chmod 600 "${KUBECONFIG_FILE}"
}

start_etcd() { # start_etcd NAME BINARY CLIENT_PORT PEER_PORT [EXTRA_ARGS...]
  local name="$1" bin="$2" cport="$3" pport="$4"
  shift 4
  mkdir -p "${CLUSTER_DIR}/${name}"
  start_daemon "${name}" "${bin}" "$@" \
    --name "${name}" \
    --data-dir "${CLUSTER_DIR}/${name}/data" \
    --listen-client-urls "http://127.0.0.1:${cport}" \
    --advertise-client-urls "http://127.0.0.1:${cport}" \
    --listen-peer-urls "http://127.0.0.1:${pport}" \
    --initial-advertise-peer-urls "http://127.0.0.1:${pport}" \
    --initial-cluster "${name}=http://127.0.0.1:${pport}" \
    --initial-cluster-state new \
    --logger zap --log-outputs stderr
}

start_control_plane() {
  local p="${PKI_DIR}"
  start_daemon kube-apiserver "${K8S_BIN_DIR}/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:${ETCD_K8S_PORT}" \
    --bind-address 127.0.0.1 --secure-port "${APISERVER_PORT}" \
    --cert-dir "${p}" --tls-cert-file "${p}/apiserver.crt" --tls-private-key-file "${p}/apiserver.key" \
    --client-ca-file "${p}/ca.crt" \
    --authorization-mode Node,RBAC \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "${p}/sa.pub" \
    --service-account-signing-key-file "${p}/sa.key" \
    --service-cluster-ip-range "${SERVICE_CIDR}" \
    --requestheader-client-ca-file "${p}/ca.crt" \
    --requestheader-allowed-names front-proxy-client \
    --requestheader-username-headers X-Remote-User \
    --requestheader-group-headers X-Remote-Group \
    --requestheader-extra-headers-prefix X-Remote-Extra- \
    --proxy-client-cert-file "${p}/front-proxy-client.crt" \
    --proxy-client-key-file "${p}/front-proxy-client.key" \
    --kubelet-client-certificate "${p}/kubelet-client.crt" --kubelet-client-key "${p}/kubelet-client.key" \
    --kubelet-preferred-address-types InternalIP,Hostname \
    --allow-privileged=true \
    --profiling=false
  wait_until 90 kube-apiserver https_healthy "${APISERVER_PORT}" /readyz
  log "kube-apiserver ready on https://127.0.0.1:${APISERVER_PORT} ($(elapsed "${T0}"))"

  start_daemon kube-controller-manager "${K8S_BIN_DIR}/kube-controller-manager" \
    --kubeconfig "${KUBECONFIG_FILE}" \
    --authentication-kubeconfig "${KUBECONFIG_FILE}" \
    --authorization-kubeconfig "${KUBECONFIG_FILE}" \
    --bind-address 127.0.0.1 --secure-port "${KCM_PORT}" --cert-dir "${CLUSTER_DIR}/kcm" \
    --leader-elect=false \
    --service-account-private-key-file "${p}/sa.key" \
    --root-ca-file "${p}/ca.crt" \
    --use-service-account-credentials=false \
    --service-cluster-ip-range "${SERVICE_CIDR}" \
    --profiling=false

  start_daemon kube-scheduler "${K8S_BIN_DIR}/kube-scheduler" \
    --kubeconfig "${KUBECONFIG_FILE}" \
    --authentication-kubeconfig "${KUBECONFIG_FILE}" \
    --authorization-kubeconfig "${KUBECONFIG_FILE}" \
    --bind-address 127.0.0.1 --secure-port "${SCHEDULER_PORT}" --cert-dir "${CLUSTER_DIR}/scheduler" \
    --leader-elect=false \
    --profiling=false

  # kwok reads ~/.kwok/kwok.yaml when present; point its work dir into .cluster/ so a
  # user's own kwok config cannot change this cluster. All nodes share one pod IP pool
  # (--cidr, handed out from its first address), so pod IPs are distinct cluster-wide.
  # Pod stages from hack/kwok/stages.yaml: kwok's "fast" ones (a pod gets an IP and
  # Running+Ready once: the stage selects pods without status.podIP, so a Ready condition
  # patched later on an ungated pod stays as patched), except that a pod's Ready waits for
  # its readiness gates as a kubelet's does.
  mkdir -p "${CLUSTER_DIR}/kwok"
  KWOK_WORKDIR="${CLUSTER_DIR}/kwok" start_daemon kwok "${KWOK_BIN_DIR}/kwok" \
    --kubeconfig "${KUBECONFIG_FILE}" \
    --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector "${KWOK_NODE_SELECTOR}" \
    --cidr "${POD_CIDR}" \
    --config "${HACK_DIR}/kwok/stages.yaml" \
    --node-lease-duration-seconds 40

  wait_until 60 kube-controller-manager https_healthy "${KCM_PORT}" /healthz
  wait_until 60 kube-scheduler https_healthy "${SCHEDULER_PORT}" /healthz
}

create_nodes() {
  local i manifest=""
  for ((i = 0; i < NODE_COUNT; i++)); do
    # Fake nodes for kwok (selected by the annotation). Capacity defaults to 1M pods.
    manifest+="---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-${i}
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: \"0\"
  labels:
    type: kwok
    kubernetes.io/hostname: kwok-node-${i}
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
status:
  addresses:
  - {type: InternalIP, address: 10.243.0.$((i + 1))}
  - {type: Hostname, address: kwok-node-${i}}
"
  done
  kc apply -f - <<<"${manifest}" >/dev/null
}

main() {
  preflight
  cluster_lock
  if cluster_healthy; then
    log "cluster already up ($(elapsed "${T0}")): KUBECONFIG=${KUBECONFIG_FILE}"
    return
  fi

  # Anything left over (dead or half-alive) is stopped and replaced by a fresh cluster.
  "${HACK_DIR}/cluster-down.sh" --quiet
  rm -rf "${CLUSTER_DIR}"
  mkdir -p "${PID_DIR}" "${LOG_DIR}"

  ETCD_K8S_PORT="$(free_port)"
  ETCD_K8S_PEER_PORT="$(free_port)"
  ETCD_REGISTRY_PORT="$(free_port)"
  ETCD_REGISTRY_PEER_PORT="$(free_port)"
  APISERVER_PORT="$(free_port)"
  KCM_PORT="$(free_port)"
  SCHEDULER_PORT="$(free_port)"
  cat >"${CLUSTER_DIR}/ports.env" <<EOF
ETCD_K8S_PORT=${ETCD_K8S_PORT}
ETCD_K8S_PEER_PORT=${ETCD_K8S_PEER_PORT}
ETCD_REGISTRY_PORT=${ETCD_REGISTRY_PORT}
ETCD_REGISTRY_PEER_PORT=${ETCD_REGISTRY_PEER_PORT}
APISERVER_PORT=${APISERVER_PORT}
KCM_PORT=${KCM_PORT}
SCHEDULER_PORT=${SCHEDULER_PORT}
EOF

  log "starting local cluster in ${CLUSTER_DIR}"
  # Kubernetes' store may skip fsync (a crashed test cluster is recreated anyway); the
  # registry etcd keeps etcd's normal durability since tests kill and restart it.
  start_etcd etcd-k8s "${ETCD_BIN_DIR}/etcd" "${ETCD_K8S_PORT}" "${ETCD_K8S_PEER_PORT}" \
    --unsafe-no-fsync
  start_etcd etcd-registry "${REGISTRY_ETCD_BIN}" "${ETCD_REGISTRY_PORT}" "${ETCD_REGISTRY_PEER_PORT}"
  gen_pki
  write_kubeconfig
  wait_until 30 etcd-k8s etcd_healthy "http://127.0.0.1:${ETCD_K8S_PORT}"
  wait_until 30 etcd-registry etcd_healthy "http://127.0.0.1:${ETCD_REGISTRY_PORT}"
  echo "http://127.0.0.1:${ETCD_REGISTRY_PORT}" >"${CLUSTER_DIR}/etcd-endpoints"
  log "etcd ready ($(elapsed "${T0}"))"

  start_control_plane
  create_nodes
  wait_until 60 kwok nodes_ready
  # Pods of a new namespace need its "default" ServiceAccount (made by the controller
  # manager); waiting for the default namespace's one shows that controller is running.
  wait_until 60 kube-controller-manager kc get serviceaccount default -n default

  log "cluster up in $(elapsed "${T0}")"
  cat >&2 <<EOF
  KUBECONFIG=${KUBECONFIG_FILE}
  registry etcd: $(<"${CLUSTER_DIR}/etcd-endpoints")  (.cluster/etcd-endpoints)
  kubectl: $(kubectl_bin)
EOF
}

main "$@"

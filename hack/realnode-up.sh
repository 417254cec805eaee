#!/usr/bin/env bash
# Put one real node beside kwok's fake ones in the local cluster (started here if needed):
#   containerd  Debian's 1.6: CRI v1, which is all kubelet 1.34 asks of a runtime (its newer
#               calls, e.g. RuntimeConfig for the cgroup driver, fall back when absent). Own
#               socket, root and state in .cluster/realnode/, beside any system containerd.
#   runc        Debian's 1.1, cgroupfs driver. On a cgroup v1 host kubelet 1.34 runs with
#               failCgroupV1: false (its default until 1.35; set explicitly below) and needs
#               the cpu, cpuacct, cpuset and memory hierarchies mounted; pods go under a
#               cgroup root of their own, /etcd-registrar-<id>, which must exist beforehand.
#   CNI         Debian's bridge, host-local, loopback and portmap plugins: pod addresses on a
#               bridge of this cluster's own (er-<id>, a free 10.88.N.0/24), reachable from
#               this machine. The bridge's address is the node's InternalIP.
#   kubelet     built with the control plane (hack/build-tools.sh). Node "realnode", labelled
#               type=realnode and tainted etcd-registrar.io/realnode=true:NoSchedule, so only
#               pods that select and tolerate it land there; kwok keeps all other pods.
#   images      hack/build-images.sh's archives, imported into containerd's k8s.io namespace.
# No kube-proxy runs: iptables DNAT forwards exactly two addresses pods need to the loopback
# addresses the cluster listens on: the `kubernetes` Service (10.96.0.1:443, which in-cluster
# clients use) to the API server, and <gateway>:<port> to the registry etcd.
# Idempotent: returns at once when the node is Ready and its processes are ours. Writes
# .cluster/realnode/node.env (node name, labels, images, the registry etcd as pods reach it).
# Stopped by hack/cluster-down.sh.
set -euo pipefail
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NODE_NAME=realnode
NODE_LABEL=type=realnode
TAINT_KEY=etcd-registrar.io/realnode
SERVICE_IP=10.96.0.1 # the `kubernetes` Service: first address of cluster-up's SERVICE_CIDR
CNI_PLUGINS=(bridge host-local loopback portmap)
T0="$(now_ms)"

preflight() {
  ((EUID == 0)) || die "the real node needs root (containerd, runc, network namespaces, cgroups, iptables)"
  local b
  for b in containerd containerd-shim-runc-v2 ctr runc iptables ip python3 findmnt; do
    command -v "${b}" >/dev/null || die "'${b}' not found: run 'make deps' (hack/install-deps.sh)"
  done
  for b in "${CNI_PLUGINS[@]}"; do
    [[ -x "${CNI_BIN_DIR}/${b}" ]] || die "CNI plugin ${CNI_BIN_DIR}/${b} missing: run 'make deps' (containernetworking-plugins)"
  done
  [[ -x "${K8S_BIN_DIR}/kubelet" ]] || die "${K8S_BIN_DIR}/kubelet missing: run 'make tools'"
  grep -qw overlay /proc/filesystems || die "the kernel has no overlay filesystem (containerd's overlayfs snapshotter needs it)"
  if [[ ! -f /sys/fs/cgroup/cgroup.controllers ]]; then # cgroup v1 (hybrid or legacy)
    local s
    for s in cpu cpuacct cpuset memory; do
      cgroup_v1_mounted "${s}" || die "cgroup v1 hierarchy '${s}' not mounted: kubelet needs cpu, cpuacct, cpuset and memory"
    done
  fi
}

# Whether a cgroup v1 controller is mounted (alone or with others, e.g. cpu,cpuacct).
cgroup_v1_mounted() {
  findmnt -rn -t cgroup -o OPTIONS | tr ',' '\n' | grep -qx "$1"
}

node_ready() {
  [[ "$(kc get node "${NODE_NAME}" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]
}

realnode_healthy() {
  [[ -f "${REALNODE_DIR}/node.env" ]] || return 1
  local c
  for c in "${REALNODE_COMPONENTS[@]}"; do component_pid "${c}" >/dev/null || return 1; done
  node_ready
}

# A /24 in 10.88.0.0/16 that no route or address on this machine overlaps.
free_subnet() {
  ip -4 -j route show table all | python3 -c '
import ipaddress, json, sys
used = [ipaddress.ip_network(r["dst"], strict=False) for r in json.load(sys.stdin)
        if r.get("dst") not in (None, "default")]
for n in ipaddress.ip_network("10.88.0.0/16").subnets(new_prefix=24):
    if not any(n.overlaps(u) for u in used):
        print(n)
        break
else:
    sys.exit("no free /24 in 10.88.0.0/16")'
}

setup_network() {
  SUBNET="$(free_subnet)" || die "no free pod subnet in 10.88.0.0/16"
  GATEWAY="${SUBNET%.0/24}.1"
  ip link add "${BRIDGE}" type bridge || die "cannot create the bridge ${BRIDGE}: the kernel needs bridge support"
  ip addr add "${GATEWAY}/24" dev "${BRIDGE}"
  ip link set "${BRIDGE}" up
  # DNAT to 127.0.0.1 is only routed for packets that arrive on an interface allowing it.
  sysctl -qw "net.ipv4.conf.${BRIDGE}.route_localnet=1"
  iptables -t nat -N "${CHAIN}"
  iptables -t nat -A "${CHAIN}" -d "${SERVICE_IP}/32" -p tcp --dport 443 \
    -j DNAT --to-destination "127.0.0.1:${APISERVER_PORT}"
  iptables -t nat -A "${CHAIN}" -d "${GATEWAY}/32" -p tcp --dport "${ETCD_REGISTRY_PORT}" \
    -j DNAT --to-destination "127.0.0.1:${ETCD_REGISTRY_PORT}"
  iptables -t nat -A PREROUTING -i "${BRIDGE}" -j "${CHAIN}"
  mkdir -p "${REALNODE_DIR}/cni/net.d"
  cat >"${REALNODE_DIR}/cni/net.d/10-etcd-registrar.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "etcd-registrar-${REALNODE_ID}",
  "plugins": [
    {
      "type": "bridge", "bridge": "${BRIDGE}", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": {
        "type": "host-local", "dataDir": "${REALNODE_DIR}/cni/ipam",
        "ranges": [[{"subnet": "${SUBNET}", "gateway": "${GATEWAY}"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
}

start_containerd() {
  local d="${REALNODE_DIR}/containerd" restrict_oom=false
  mkdir -p "${d}"
  # Lowering a process's oom_score_adj (kubelet asks -998 for pod sandboxes) needs
  # CAP_SYS_RESOURCE, which root lacks in some sandboxes (this project's machines among
  # them): without it runc fails every pod with "failed to update /proc/self/oom_score_adj:
  # Permission denied". containerd can clamp the scores to its own instead.
  (((0x$(awk '/^CapEff/ {print $2}' /proc/self/status) >> 24) & 1)) || restrict_oom=true
  cat >"${d}/config.toml" <<EOF
version = 2
root = "${d}/root"
state = "${d}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]
[grpc]
  address = "${CONTAINERD_SOCK}"
[ttrpc]
  address = "${CONTAINERD_SOCK}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "${d}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "${PAUSE_IMAGE}"
  restrict_oom_score_adj = ${restrict_oom}
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "${CNI_BIN_DIR}"
    conf_dir = "${REALNODE_DIR}/cni/net.d"
EOF
  start_daemon containerd containerd --config "${d}/config.toml"
  wait_until 30 containerd ctr_ version
  log "containerd $(containerd --version | awk '{print $3}') ready ($(elapsed "${T0}"))"
}

import_images() {
  local var ref name have
  have="$(ctr_ -n k8s.io images ls -q)"
  for var in PAUSE_IMAGE OPERATOR_IMAGE DEMO_IMAGE; do
    ref="${!var}"
    grep -qxF "${ref}" <<<"${have}" && continue
    name="${ref#localhost/etcd-registrar-}"
    ctr_ -n k8s.io images import "${ETCD_REGISTRAR_CACHE}/images/${name/:/-}.tar" >/dev/null ||
      die "importing ${ref} into containerd failed"
  done
}

# The cgroup root the kubelet puts its pods under must exist in every hierarchy.
make_cgroup_root() {
  [[ -f /sys/fs/cgroup/cgroup.controllers ]] && { mkdir -p "/sys/fs/cgroup${CGROUP_ROOT}"; return; }
  local dir
  while read -r dir; do
    mkdir -p "${dir}${CGROUP_ROOT}"
    # A new cpuset cgroup starts with no CPUs and no memory nodes: give it its parent's.
    if [[ -f "${dir}/cpuset.cpus" ]]; then
      cat "${dir}/cpuset.cpus" >"${dir}${CGROUP_ROOT}/cpuset.cpus"
      cat "${dir}/cpuset.mems" >"${dir}${CGROUP_ROOT}/cpuset.mems"
    fi
  done < <(findmnt -rn -t cgroup -o TARGET)
}

issue_node_cert() {
  local k="${REALNODE_DIR}/kubelet"
  mkdir -p "${k}/pki"
  (
    cd "${k}/pki"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out client.key 2>>"${LOG_DIR}/pki.log"
    openssl req -new -key client.key -subj "/O=system:nodes/CN=system:node:${NODE_NAME}" 2>>"${LOG_DIR}/pki.log" |
      openssl x509 -req -CA "${PKI_DIR}/ca.crt" -CAkey "${PKI_DIR}/ca.key" -CAcreateserial -days 3650 \
        -extfile <(printf 'keyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n') \
        -out client.crt 2>>"${LOG_DIR}/pki.log"
    chmod 600 client.key
  )
  cat >"${k}/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster: {server: "https://127.0.0.1:${APISERVER_PORT}", certificate-authority: "${PKI_DIR}/ca.crt"}
users:
- name: kubelet
  user: {client-certificate: "${k}/pki/client.crt", client-key: "${k}/pki/client.key"}
contexts:
- name: local
  context: {cluster: local, user: kubelet}
current-context: local
EOF
}

start_kubelet() {
  local k="${REALNODE_DIR}/kubelet"
  # What the API server may do on kubelets (exec, logs, port-forward), for its client
  # certificate (hack/cluster-up.sh); the kubelet asks the API server (authorization: Webhook).
  kc apply -f - >/dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: kube-apiserver-kubelet-client}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: system:kubelet-api-admin}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: kube-apiserver-kubelet-client}
EOF
  KUBELET_PORT="$(free_port)"
  KUBELET_HEALTHZ_PORT="$(free_port)"
  cat >"${k}/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: ${GATEWAY}
port: ${KUBELET_PORT}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: ${KUBELET_HEALTHZ_PORT}
# The API server authenticates with its kubelet-client certificate (cluster-up.sh);
# everyone else needs a token the API server vouches for.
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: "${PKI_DIR}/ca.crt"}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://${CONTAINERD_SOCK}
cgroupDriver: cgroupfs
cgroupRoot: ${CGROUP_ROOT}
failCgroupV1: false
failSwapOn: false
registerWithTaints:
- {key: ${TAINT_KEY}, value: "true", effect: NoSchedule}
podLogsDir: ${REALNODE_DIR}/pod-logs
volumePluginDir: ${k}/volume-plugins
resolvConf: /etc/resolv.conf
maxPods: 30
serializeImagePulls: false
# The images exist only here (imported, never pulled): never collect them, and leave
# disk-pressure eviction to a machine that is really full.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%}
EOF
  start_daemon kubelet "${K8S_BIN_DIR}/kubelet" \
    --config "${k}/config.yaml" \
    --kubeconfig "${k}/kubeconfig" \
    --root-dir "${k}/root" \
    --cert-dir "${k}/pki" \
    --hostname-override "${NODE_NAME}" \
    --node-ip "${GATEWAY}" \
    --node-labels "${NODE_LABEL},${TAINT_KEY}=true"
  wait_until 90 kubelet node_ready
}

write_node_env() {
  cat >"${REALNODE_DIR}/node.env" <<EOF
NODE_NAME=${NODE_NAME}
NODE_LABEL=${NODE_LABEL}
TAINT_KEY=${TAINT_KEY}
POD_SUBNET=${SUBNET}
REGISTRY_ETCD_FOR_PODS=http://${SUBNET%.0/24}.1:${ETCD_REGISTRY_PORT}
${IMAGES}
EOF
}

main() {
  cluster_lock
  "${HACK_DIR}/cluster-up.sh"
  preflight
  # shellcheck source=/dev/null
  source "${CLUSTER_DIR}/ports.env"
  # Built (or found in the cache) first: a running node may need images of newer sources.
  IMAGES="$("${HACK_DIR}/build-images.sh")"
  eval "${IMAGES}"
  if realnode_healthy; then
    SUBNET="$(sed -n 's/^POD_SUBNET=//p' "${REALNODE_DIR}/node.env")"
    import_images
    write_node_env
    log "real node already up ($(elapsed "${T0}"))"
    return
  fi
  "${HACK_DIR}/realnode-down.sh" # whatever is left of an earlier one
  mkdir -p "${REALNODE_DIR}"
  setup_network
  start_containerd
  import_images
  make_cgroup_root
  issue_node_cert
  start_kubelet
  write_node_env
  log "real node ${NODE_NAME} Ready in $(elapsed "${T0}"): pods on ${SUBNET} (bridge ${BRIDGE})"
}

main "$@"

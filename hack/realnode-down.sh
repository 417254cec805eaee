#!/usr/bin/env bash
# Stop the real node of hack/realnode-up.sh and undo what it did to this machine: kubelet,
# every pod container (containerd's shims outlive containerd), their network namespaces,
# containerd, the bridge, the iptables chain, the cgroup root and the mounts under
# .cluster/realnode/. Harmless when there is no real node; called by hack/cluster-down.sh.
set -euo pipefail
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

GRACE_SECONDS="${ETCD_REGISTRAR_STOP_GRACE:-10}" # read by stop_pids

# Network namespace paths of the containers containerd knows (the pod sandboxes').
sandbox_netns() {
  local id
  for id in $(ctr_ -n k8s.io containers ls -q); do
    ctr_ -n k8s.io containers info "${id}" | python3 -c '
import json, sys
spec = json.load(sys.stdin).get("Spec") or {}
for ns in (spec.get("linux") or {}).get("namespaces") or []:
    if ns.get("type") == "network" and ns.get("path"):
        print(ns["path"])'
  done
}

# Shims of this containerd, found by its socket in their command line.
our_shims() {
  local dir
  for dir in /proc/[0-9]*; do
    tr '\0' ' ' 2>/dev/null <"${dir}/cmdline" | grep -q -- "containerd-shim.* -address ${CONTAINERD_SOCK} " &&
      echo "${dir#/proc/}"
  done
  return 0
}

main() {
  [[ -d "${REALNODE_DIR}" ]] || return 0
  cluster_lock
  local t0 pid netns=() shims
  t0="$(now_ms)"
  rm -f "${REALNODE_DIR}/node.env"
  if pid="$(component_pid kubelet)"; then stop_pids kubelet "${pid}"; fi
  if component_pid containerd >/dev/null; then
    mapfile -t netns < <(sandbox_netns)
    for pid in $(ctr_ -n k8s.io tasks ls -q); do
      ctr_ -n k8s.io tasks delete --force "${pid}" >/dev/null 2>&1 || true
    done
  fi
  if pid="$(component_pid containerd)"; then stop_pids containerd "${pid}"; fi
  shims="$(our_shims)"
  # shellcheck disable=SC2086 # one PID per word
  [[ -z "${shims}" ]] || { kill -KILL ${shims} 2>/dev/null || true; }
  local ns
  for ns in "${netns[@]}"; do
    umount "${ns}" 2>/dev/null || true
    rm -f "${ns}"
  done
  rm -f "${PID_DIR}/containerd.pid" "${PID_DIR}/kubelet.pid"
  if iptables -t nat -S "${CHAIN}" >/dev/null 2>&1; then
    while iptables -t nat -D PREROUTING -i "${BRIDGE}" -j "${CHAIN}" 2>/dev/null; do :; done
    iptables -t nat -F "${CHAIN}"
    iptables -t nat -X "${CHAIN}"
  fi
  ip link del "${BRIDGE}" 2>/dev/null || true
  # Pod cgroups, deepest first (a cgroup can only be removed once its children are).
  local dir
  while read -r dir; do
    [[ ! -d "${dir}${CGROUP_ROOT}" ]] || find "${dir}${CGROUP_ROOT}" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done < <(findmnt -rn -t cgroup,cgroup2 -o TARGET)
  # Volumes, container root filesystems and snapshots still mounted under .cluster/realnode.
  findmnt -rn -o TARGET | { grep -F "${REALNODE_DIR}/" || true; } | sort -r | xargs -r umount -l
  log "real node down in $(elapsed "${t0}")"
}

main "$@"

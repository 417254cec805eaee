#!/usr/bin/env bash
# Stop the local cluster started by hack/cluster-up.sh: TERM, then KILL after a grace
# period, by the PIDs recorded in .cluster/pids/. Harmless when nothing runs. State and
# logs stay in .cluster/ for inspection; cluster-up replaces them.
#   --quiet   print nothing when there was nothing to stop
set -euo pipefail
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

QUIET=false
[[ "${1:-}" == "--quiet" ]] && QUIET=true
GRACE_SECONDS="${ETCD_REGISTRAR_STOP_GRACE:-10}" # read by stop_pids

# Our processes whose PID file is gone (e.g. `rm -rf .cluster` while running): found by
# this repo's exact .cluster/ path in their command line, so nothing else is touched.
# Prints "PID PROGRAM" per process.
orphans() {
  local dir pid argv0
  for dir in /proc/[0-9]*; do
    pid="${dir#/proc/}"
    [[ "${pid}" == "$$" ]] && continue
    tr '\0' ' ' <"${dir}/cmdline" 2>/dev/null | grep -q -- " .*${CLUSTER_DIR}/" || continue
    argv0="$(tr '\0' '\n' <"${dir}/cmdline" 2>/dev/null | head -n 1)"
    case "${argv0##*/}" in
      etcd | kube-apiserver | kube-controller-manager | kube-scheduler | kwok | kubelet | containerd)
        echo "${pid} ${argv0##*/}"
        ;;
    esac
  done
}

main() {
  local t0 stopped=0
  cluster_lock
  t0="$(now_ms)"
  # The real node first: its kubelet and pods talk to the API server and the registry etcd.
  "${HACK_DIR}/realnode-down.sh"
  local orphan_list
  orphan_list="$(orphans)"
  # Clients first, then the API server, then the etcds it depends on (an API server
  # whose etcd is gone can take long to shut down). The real node's daemons were stopped
  # above; its phase here only catches them when their PID files are gone.
  local phases=("kubelet containerd" "kwok kube-scheduler kube-controller-manager" "kube-apiserver" "etcd-k8s etcd-registry")
  local phase c pid program pids
  for phase in "${phases[@]}"; do
    pids=()
    for c in ${phase}; do
      if pid="$(component_pid "${c}")"; then
        pids+=("${pid}")
      fi
      rm -f "${PID_DIR}/${c}.pid"
    done
    while read -r pid program; do
      [[ -n "${pid}" && " ${phase} " == *" ${program}"[-\ ]* ]] || continue
      [[ " ${pids[*]} " == *" ${pid} "* ]] && continue
      log "stopping unrecorded ${program} (pid ${pid}) of ${CLUSTER_DIR}"
      pids+=("${pid}")
    done <<<"${orphan_list}"
    stopped=$((stopped + ${#pids[@]}))
    stop_pids "${phase}" "${pids[@]}"
  done
  if ((stopped > 0)) || ! ${QUIET}; then
    log "cluster down: stopped ${stopped} process(es) in $(elapsed "${t0}")"
  fi
}

main "$@"

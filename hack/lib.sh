# Shared helpers for hack/*.sh. Source it; do not execute it.
# shellcheck shell=bash disable=SC2034 # variables here are used by the scripts sourcing it

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${HACK_DIR}/.." && pwd)"

# shellcheck source=hack/versions.env
source "${HACK_DIR}/versions.env"

ETCD_REGISTRAR_CACHE="${ETCD_REGISTRAR_CACHE:-${HOME}/.cache/etcd-registrar}"
K8S_BIN_DIR="${ETCD_REGISTRAR_CACHE}/k8s-${K8S_VERSION}"
KWOK_BIN_DIR="${ETCD_REGISTRAR_CACHE}/kwok-${KWOK_VERSION}"
ETCD_BIN_DIR="${ETCD_REGISTRAR_CACHE}/etcd-${ETCD_VERSION}"
ACTIONLINT_BIN_DIR="${ETCD_REGISTRAR_CACHE}/actionlint-${ACTIONLINT_VERSION}"
# kubelet runs only on the real node (hack/realnode-up.sh); built with the rest so the shared
# packages compile once.
K8S_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet)

# ETCD_REGISTRAR_CLUSTER_DIR: a second cluster beside this checkout's (the two-cluster tests).
CLUSTER_DIR="${ETCD_REGISTRAR_CLUSTER_DIR:-${REPO_ROOT}/.cluster}"
PID_DIR="${CLUSTER_DIR}/pids"
LOG_DIR="${CLUSTER_DIR}/logs"
PKI_DIR="${CLUSTER_DIR}/pki"
KUBECONFIG_FILE="${CLUSTER_DIR}/kubeconfig"
# Every component the cluster runs, in start order (stopped in reverse).
COMPONENTS=(etcd-k8s etcd-registry kube-apiserver kube-controller-manager kube-scheduler kwok)

# The real node (hack/realnode-up.sh, stopped by hack/realnode-down.sh). Host-wide names
# (bridge, iptables chain, cgroup root) carry a hash of this checkout's .cluster/, so the
# clusters of several checkouts can each have one.
REALNODE_DIR="${CLUSTER_DIR}/realnode"
REALNODE_COMPONENTS=(containerd kubelet)
REALNODE_ID="$(printf '%s' "${CLUSTER_DIR}" | sha256sum | cut -c1-6)"
BRIDGE="er-${REALNODE_ID}"
CHAIN="ER-${REALNODE_ID}"
CGROUP_ROOT="/etcd-registrar-${REALNODE_ID}"
CONTAINERD_SOCK="${REALNODE_DIR}/containerd/containerd.sock"
CNI_BIN_DIR=/usr/lib/cni # Debian's containernetworking-plugins

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

# Milliseconds since the epoch, for timings.
now_ms() { date +%s%3N; }
elapsed() { # elapsed START_MS -> "12.3s"
  local ms=$(($(now_ms) - $1))
  printf '%d.%01ds' $((ms / 1000)) $((ms % 1000 / 100))
}

# A free TCP port on 127.0.0.1 (the kernel picks one; racy only in theory).
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The executable a component runs (used to check that a recorded PID is still ours).
component_binary() {
  case "$1" in
    etcd-k8s | etcd-registry) echo etcd ;;
    kwok) echo kwok ;;
    *) echo "$1" ;;
  esac
}

# Prints the PID recorded for a component if that process is alive and is the expected
# program (a PID recycled by an unrelated process after a reboot or crash does not count).
component_pid() {
  local name="$1" pid
  [[ -r "${PID_DIR}/${name}.pid" ]] || return 1
  pid="$(<"${PID_DIR}/${name}.pid")"
  [[ "${pid}" =~ ^[0-9]+$ ]] || return 1
  [[ -r "/proc/${pid}/cmdline" ]] || return 1
  # A zombie is dead for our purposes.
  [[ "$(awk '{print $3}' "/proc/${pid}/stat" 2>/dev/null)" != "Z" ]] || return 1
  tr '\0' ' ' <"/proc/${pid}/cmdline" | grep -q -- "$(component_binary "${name}")" || return 1
  tr '\0' ' ' <"/proc/${pid}/cmdline" | grep -q -- "${CLUSTER_DIR}" || return 1
  echo "${pid}"
}

# Start a daemon detached from this shell (own session, no inherited stdio, so callers
# such as subprocess.run(capture_output=True) are not kept waiting), record its PID.
start_daemon() { # start_daemon NAME BINARY ARGS...
  local name="$1"
  shift
  mkdir -p "${PID_DIR}" "${LOG_DIR}"
  # setsid execs in place (this background child is not a group leader): $! is the daemon.
  # fd 9 (the cluster lock, see cluster_lock) must not stay held by the daemon.
  setsid "$@" </dev/null >>"${LOG_DIR}/${name}.log" 2>&1 9<&- &
  echo $! >"${PID_DIR}/${name}.pid"
}

# Serialise cluster-up/cluster-down (two pytest sessions, or make targets in parallel):
# an flock on the hack/ directory itself, so no lock file is left anywhere. Re-entrant for
# the scripts' children through an environment marker.
cluster_lock() {
  [[ -n "${ETCD_REGISTRAR_CLUSTER_LOCKED:-}" ]] && return 0
  exec 9<"${HACK_DIR}"
  if ! flock -w 300 9; then die "another cluster-up/cluster-down held the lock for 300s"; fi
  export ETCD_REGISTRAR_CLUSTER_LOCKED=1
}

# Poll COMMAND... until it succeeds or TIMEOUT seconds pass; on timeout show the log.
wait_until() { # wait_until TIMEOUT NAME COMMAND...
  local timeout="$1" name="$2"
  shift 2
  local deadline=$(($(date +%s) + timeout))
  until "$@" >/dev/null 2>&1; do
    if [[ -n "${name}" && -f "${PID_DIR}/${name}.pid" ]] && ! component_pid "${name}" >/dev/null; then
      tail -n 30 "${LOG_DIR}/${name}.log" >&2 || true
      die "${name} exited during startup (log: ${LOG_DIR}/${name}.log)"
    fi
    if (($(date +%s) >= deadline)); then
      [[ -n "${name}" ]] && { tail -n 30 "${LOG_DIR}/${name}.log" >&2 || true; }
      die "timed out after ${timeout}s waiting for ${name:-condition}: $*"
    fi
    sleep 0.2
  done
}

# kubectl from the cache (matching the server), else the one on PATH.
kubectl_bin() {
  if [[ -x "${K8S_BIN_DIR}/kubectl" ]]; then
    echo "${K8S_BIN_DIR}/kubectl"
  else
    command -v kubectl || die "kubectl not found: run 'make tools'"
  fi
}

kc() { "$(kubectl_bin)" --kubeconfig "${KUBECONFIG_FILE}" "$@"; }

# ctr against the real node's containerd.
ctr_() { ctr --address "${CONTAINERD_SOCK}" "$@"; }

# TERM the PIDs, KILL whatever still runs after $GRACE_SECONDS (default 10).
stop_pids() { # stop_pids LABEL PID...
  local label="$1" grace="${GRACE_SECONDS:-10}"
  shift
  (($# > 0)) || return 0
  kill -TERM "$@" 2>/dev/null || true
  local deadline=$(($(date +%s) + grace)) pid alive
  while :; do
    alive=()
    for pid in "$@"; do
      if [[ -e "/proc/${pid}" && "$(awk '{print $3}' "/proc/${pid}/stat" 2>/dev/null)" != "Z" ]]; then
        alive+=("${pid}")
      fi
    done
    ((${#alive[@]} == 0)) && return 0
    if (($(date +%s) >= deadline)); then
      log "${label}: still running after ${grace}s, sending KILL to ${alive[*]}"
      kill -KILL "${alive[@]}" 2>/dev/null || true
      return 0
    fi
    sleep 0.1
  done
}

etcd_healthy() { # etcd_healthy CLIENT_URL
  curl -fsS --max-time 2 "$1/health" | grep -q '"health":"true"'
}

https_healthy() { # https_healthy PORT PATH
  curl -fsSk --max-time 2 "https://127.0.0.1:$1$2"
}

# --------------------------------------------------------------------------- Go builds
# Shared by hack/build-tools.sh (cluster binaries) and hack/build-consumers.sh (test consumers).

require_go() {
  if ! command -v go >/dev/null; then
    die "'go' not found. Install Go >= 1.21 from https://go.dev/dl/ (Debian bookworm's
       golang-go is 1.19, too old); Go >= 1.21 fetches the toolchain a module's go.mod asks
       for (1.24; 1.26 for tests/consumers/coredns) from the Go module proxy by itself
       (GOTOOLCHAIN=auto). Then re-run 'make tools'."
  fi
  local v
  v="$(go env GOVERSION)" # e.g. go1.24.3
  v="${v#go}"
  local major="${v%%.*}" rest="${v#*.}"
  local minor="${rest%%.*}"
  if ((major < 1 || (major == 1 && minor < 21))); then
    die "Go ${v} is too old: install Go >= 1.21 (https://go.dev/dl/)"
  fi
}

# The wrapper go.mod must pin the same version versions.env names.
check_pin() { # check_pin GO_MOD MODULE VERSION
  grep -Eq "^[[:space:]]*(require[[:space:]]+)?$2[[:space:]]+$3([[:space:]]|$)" "$1" ||
    die "$1 does not pin $2 $3 (hack/versions.env); update one of them"
}

stamp_ok() { # stamp_ok DIR BINARIES...
  local dir="$1"
  shift
  [[ -f "${dir}/.stamp" ]] || return 1
  local b
  for b in "$@"; do [[ -x "${dir}/${b}" ]] || return 1; done
}

# go_build NAME VERSION OUT_DIR MODULE_DIR PINNED_MODULE LDFLAGS "BINARIES" PACKAGES...
# Builds PACKAGES of the Go module in MODULE_DIR in one `go build` (so shared packages
# compile once), unless OUT_DIR already holds a stamp and all BINARIES. When PINNED_MODULE
# is not empty, MODULE_DIR/go.mod must require it at VERSION.
go_build() {
  local name="$1" version="$2" out="$3" moddir="$4" pinned="$5" ldflags="$6" binaries="$7"
  shift 7
  # shellcheck disable=SC2086 # BINARIES is a space-separated list
  if stamp_ok "${out}" ${binaries}; then
    log "${name} ${version}: cached in ${out}"
    return
  fi
  # One build at a time in the shared cache (several checkouts run `make tools`): wait for
  # the others, then look again, since the one we waited for may have built this tool.
  mkdir -p "${ETCD_REGISTRAR_CACHE}"
  exec 8<"${ETCD_REGISTRAR_CACHE}"
  if ! flock -n 8; then
    log "${name} ${version}: waiting for another build in ${ETCD_REGISTRAR_CACHE}"
    flock 8
  fi
  # shellcheck disable=SC2086
  if stamp_ok "${out}" ${binaries}; then
    flock -u 8
    log "${name} ${version}: cached in ${out}"
    return
  fi
  require_go
  [[ -z "${pinned}" ]] || check_pin "${moddir}/go.mod" "${pinned}" "${version}"
  mkdir -p "${out}"
  rm -f "${out}/.stamp"
  log "building ${name} ${version} (${binaries}) into ${out}"
  # Built beside the old binaries, then renamed over them: a cluster running them (or
  # starting) never sees a half-written file.
  local t0 tmp="${out}/.building" target b
  t0="$(now_ms)"
  rm -rf "${tmp}"
  target="${tmp}/"
  (($# == 1)) && target="${tmp}/${binaries}" # one package: name the binary explicitly
  (cd "${moddir}" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w ${ldflags}" -o "${target}" "$@")
  # shellcheck disable=SC2086
  for b in ${binaries}; do mv -f "${tmp}/${b}" "${out}/${b}"; done
  rmdir "${tmp}"
  printf 'version=%s\ngo=%s\nbuilt=%s\n' "${version}" "$(go env GOVERSION)" "$(date -u +%FT%TZ)" >"${out}/.stamp"
  log "built ${name} ${version} in $(elapsed "${t0}")"
  flock -u 8
}

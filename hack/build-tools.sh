#!/usr/bin/env bash
# Build the pinned Kubernetes binaries (kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl), kwok, the etcd server and helm from the Go module proxy into
# versioned directories under $ETCD_REGISTRAR_CACHE. Idempotent: a directory whose stamp
# file exists (written only after a successful build) is not rebuilt.
set -euo pipefail
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_go() {
  if ! command -v go >/dev/null; then
    die "'go' not found. Install Go >= 1.21 from https://go.dev/dl/ (Debian bookworm's
       golang-go is 1.19, too old); Go >= 1.21 fetches the 1.24 toolchain these modules need
       from the Go module proxy by itself (GOTOOLCHAIN=auto). Then re-run 'make tools'."
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

build_k8s() {
  local out="${K8S_BIN_DIR}"
  if stamp_ok "${out}" "${K8S_BINARIES[@]}"; then
    log "kubernetes ${K8S_VERSION}: cached in ${out}"
    return
  fi
  require_go
  check_pin "${HACK_DIR}/tools/k8s/go.mod" k8s.io/kubernetes "${K8S_VERSION}"
  local ver="${K8S_VERSION#v}"
  local major="${ver%%.*}" rest="${ver#*.}"
  local minor="${rest%%.*}"
  mkdir -p "${out}"
  rm -f "${out}/.stamp"
  log "building kubernetes ${K8S_VERSION} (${K8S_BINARIES[*]}) into ${out}; a cold build takes 5-15 min"
  local t0
  t0="$(now_ms)"
  # One `go build` for all binaries so shared packages compile once.
  (
    cd "${HACK_DIR}/tools/k8s"
    CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=${K8S_VERSION} -X k8s.io/component-base/version.gitMajor=${major} -X k8s.io/component-base/version.gitMinor=${minor} -X k8s.io/client-go/pkg/version.gitVersion=${K8S_VERSION}" \
      -o "${out}/" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
  )
  printf 'version=%s\ngo=%s\nbuilt=%s\n' "${K8S_VERSION}" "$(go env GOVERSION)" "$(date -u +%FT%TZ)" >"${out}/.stamp"
  log "built kubernetes ${K8S_VERSION} in $(elapsed "${t0}")"
}

build_kwok() {
  local out="${KWOK_BIN_DIR}"
  if stamp_ok "${out}" kwok; then
    log "kwok ${KWOK_VERSION}: cached in ${out}"
    return
  fi
  require_go
  check_pin "${HACK_DIR}/tools/kwok/go.mod" sigs.k8s.io/kwok "${KWOK_VERSION}"
  mkdir -p "${out}"
  rm -f "${out}/.stamp"
  log "building kwok ${KWOK_VERSION} into ${out}"
  local t0
  t0="$(now_ms)"
  (
    cd "${HACK_DIR}/tools/kwok"
    CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}" \
      -o "${out}/" sigs.k8s.io/kwok/cmd/kwok
  )
  printf 'version=%s\ngo=%s\nbuilt=%s\n' "${KWOK_VERSION}" "$(go env GOVERSION)" "$(date -u +%FT%TZ)" >"${out}/.stamp"
  log "built kwok ${KWOK_VERSION} in $(elapsed "${t0}")"
}

build_etcd() {
  local out="${ETCD_BIN_DIR}"
  if stamp_ok "${out}" etcd; then
    log "etcd ${ETCD_VERSION}: cached in ${out}"
    return
  fi
  require_go
  check_pin "${HACK_DIR}/tools/etcd/go.mod" go.etcd.io/etcd/server/v3 "${ETCD_VERSION}"
  mkdir -p "${out}"
  rm -f "${out}/.stamp"
  log "building etcd ${ETCD_VERSION} (server) into ${out}"
  local t0
  t0="$(now_ms)"
  (
    cd "${HACK_DIR}/tools/etcd"
    CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=${ETCD_VERSION}" \
      -o "${out}/etcd" go.etcd.io/etcd/server/v3
  )
  printf 'version=%s\ngo=%s\nbuilt=%s\n' "${ETCD_VERSION}" "$(go env GOVERSION)" "$(date -u +%FT%TZ)" >"${out}/.stamp"
  log "built etcd ${ETCD_VERSION} in $(elapsed "${t0}")"
}

build_helm() {
  local out="${ETCD_REGISTRAR_CACHE}/helm-${HELM_VERSION}"
  if stamp_ok "${out}" helm; then
    log "helm ${HELM_VERSION}: cached in ${out}"
    return
  fi
  require_go
  check_pin "${HACK_DIR}/tools/helm/go.mod" helm.sh/helm/v3 "${HELM_VERSION}"
  mkdir -p "${out}"
  rm -f "${out}/.stamp"
  log "building helm ${HELM_VERSION} into ${out}"
  local t0 kver kmajor kminor
  t0="$(now_ms)"
  (
    cd "${HACK_DIR}/tools/helm"
    # Helm's Makefile stamps the Kubernetes version its client-go speaks (client-go
    # v0.X.Y is Kubernetes 1.X); without it `helm template` assumes Kubernetes 1.20.
    kver="$(go list -m -f '{{.Version}}' k8s.io/client-go)" # e.g. v0.37.0
    kver="${kver#v0.}"
    kmajor=1
    kminor="${kver%%.*}"
    CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION} -X helm.sh/helm/v3/internal/version.gitTreeState=clean -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=${kmajor} -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=${kminor} -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=${kmajor} -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=${kminor}" \
      -o "${out}/helm" helm.sh/helm/v3/cmd/helm
  )
  printf 'version=%s\ngo=%s\nbuilt=%s\n' "${HELM_VERSION}" "$(go env GOVERSION)" "$(date -u +%FT%TZ)" >"${out}/.stamp"
  log "built helm ${HELM_VERSION} in $(elapsed "${t0}")"
}

T_ALL="$(now_ms)"
build_k8s
build_kwok
build_etcd
build_helm
log "tools ready ($(elapsed "${T_ALL}"))"

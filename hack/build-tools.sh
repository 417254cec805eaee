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

# go_build NAME VERSION OUT_DIR TOOL_MODULE_DIR PINNED_MODULE LDFLAGS "BINARIES" PACKAGES...
# Builds PACKAGES from the wrapper module hack/tools/TOOL_MODULE_DIR in one `go build` (so
# shared packages compile once), unless OUT_DIR already holds a stamp and all BINARIES.
go_build() {
  local name="$1" version="$2" out="$3" moddir="$4" pinned="$5" ldflags="$6" binaries="$7"
  shift 7
  # shellcheck disable=SC2086 # BINARIES is a space-separated list
  if stamp_ok "${out}" ${binaries}; then
    log "${name} ${version}: cached in ${out}"
    return
  fi
  require_go
  check_pin "${HACK_DIR}/tools/${moddir}/go.mod" "${pinned}" "${version}"
  mkdir -p "${out}"
  rm -f "${out}/.stamp"
  log "building ${name} ${version} (${binaries}) into ${out}"
  local t0 target="${out}/"
  t0="$(now_ms)"
  (($# == 1)) && target="${out}/${binaries}" # one package: name the binary explicitly
  (cd "${HACK_DIR}/tools/${moddir}" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w ${ldflags}" -o "${target}" "$@")
  printf 'version=%s\ngo=%s\nbuilt=%s\n' "${version}" "$(go env GOVERSION)" "$(date -u +%FT%TZ)" >"${out}/.stamp"
  log "built ${name} ${version} in $(elapsed "${t0}")"
}

build_k8s() {
  local ver="${K8S_VERSION#v}"
  local major="${ver%%.*}" rest="${ver#*.}"
  local minor="${rest%%.*}" v="k8s.io/component-base/version"
  go_build kubernetes "${K8S_VERSION}" "${K8S_BIN_DIR}" k8s k8s.io/kubernetes \
    "-X ${v}.gitVersion=${K8S_VERSION} -X ${v}.gitMajor=${major} -X ${v}.gitMinor=${minor} -X k8s.io/client-go/pkg/version.gitVersion=${K8S_VERSION}" \
    "${K8S_BINARIES[*]}" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
}

build_kwok() {
  go_build kwok "${KWOK_VERSION}" "${KWOK_BIN_DIR}" kwok sigs.k8s.io/kwok \
    "-X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}" kwok sigs.k8s.io/kwok/cmd/kwok
}

build_etcd() {
  go_build etcd "${ETCD_VERSION}" "${ETCD_BIN_DIR}" etcd go.etcd.io/etcd/server/v3 \
    "-X go.etcd.io/etcd/api/v3/version.GitSHA=${ETCD_VERSION}" etcd go.etcd.io/etcd/server/v3
}

build_helm() {
  local out="${ETCD_REGISTRAR_CACHE}/helm-${HELM_VERSION}" kver="" kminor
  # Helm's Makefile stamps the Kubernetes version its client-go speaks (client-go v0.X.Y is
  # Kubernetes 1.X); without it `helm template` assumes Kubernetes 1.20. Only asked of Go
  # when a build is due: a cached run needs no Go at all.
  if ! stamp_ok "${out}" helm; then
    require_go
    kver="$(cd "${HACK_DIR}/tools/helm" && go list -m -f '{{.Version}}' k8s.io/client-go)"
  fi
  kver="${kver#v0.}"
  kminor="${kver%%.*}"
  local h="helm.sh/helm/v3"
  go_build helm "${HELM_VERSION}" "${out}" helm "${h}" \
    "-X ${h}/internal/version.version=${HELM_VERSION} -X ${h}/internal/version.gitTreeState=clean -X ${h}/pkg/lint/rules.k8sVersionMajor=1 -X ${h}/pkg/lint/rules.k8sVersionMinor=${kminor} -X ${h}/pkg/chartutil.k8sVersionMajor=1 -X ${h}/pkg/chartutil.k8sVersionMinor=${kminor}" \
    helm "${h}/cmd/helm"
}

T_ALL="$(now_ms)"
build_k8s
build_kwok
build_etcd
build_helm
log "tools ready ($(elapsed "${T_ALL}"))"

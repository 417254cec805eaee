#!/usr/bin/env bash
# Build the pinned Kubernetes binaries (kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, kubelet), kwok, the etcd server, helm and actionlint from the Go
# module proxy into versioned directories under $ETCD_REGISTRAR_CACHE. Idempotent: a
# directory whose stamp file exists (written only after a successful build) is not rebuilt.
# `hack/build-tools.sh actionlint` builds only the tools named (make lint needs only that).
set -euo pipefail
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

build_k8s() {
  local ver="${K8S_VERSION#v}"
  local major="${ver%%.*}" rest="${ver#*.}"
  local minor="${rest%%.*}" v="k8s.io/component-base/version"
  go_build kubernetes "${K8S_VERSION}" "${K8S_BIN_DIR}" "${HACK_DIR}/tools/k8s" k8s.io/kubernetes \
    "-X ${v}.gitVersion=${K8S_VERSION} -X ${v}.gitMajor=${major} -X ${v}.gitMinor=${minor} -X k8s.io/client-go/pkg/version.gitVersion=${K8S_VERSION}" \
    "${K8S_BINARIES[*]}" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl k8s.io/kubernetes/cmd/kubelet
}

build_kwok() {
  go_build kwok "${KWOK_VERSION}" "${KWOK_BIN_DIR}" "${HACK_DIR}/tools/kwok" sigs.k8s.io/kwok \
    "-X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}" kwok sigs.k8s.io/kwok/cmd/kwok
}

build_etcd() {
  go_build etcd "${ETCD_VERSION}" "${ETCD_BIN_DIR}" "${HACK_DIR}/tools/etcd" go.etcd.io/etcd/server/v3 \
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
  go_build helm "${HELM_VERSION}" "${out}" "${HACK_DIR}/tools/helm" "${h}" \
    "-X ${h}/internal/version.version=${HELM_VERSION} -X ${h}/internal/version.gitTreeState=clean -X ${h}/pkg/lint/rules.k8sVersionMajor=1 -X ${h}/pkg/lint/rules.k8sVersionMinor=${kminor} -X ${h}/pkg/chartutil.k8sVersionMajor=1 -X ${h}/pkg/chartutil.k8sVersionMinor=${kminor}" \
    helm "${h}/cmd/helm"
}

build_actionlint() {
  go_build actionlint "${ACTIONLINT_VERSION}" "${ACTIONLINT_BIN_DIR}" "${HACK_DIR}/tools/actionlint" \
    github.com/rhysd/actionlint \
    "-X github.com/rhysd/actionlint.version=${ACTIONLINT_VERSION}" \
    actionlint github.com/rhysd/actionlint/cmd/actionlint
}

T_ALL="$(now_ms)"
for tool in "${@:-k8s kwok etcd helm actionlint}"; do
  for t in ${tool}; do "build_${t}"; done
done
log "tools ready ($(elapsed "${T_ALL}"))"

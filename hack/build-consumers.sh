#!/usr/bin/env bash
# Build the consumer programs of tests/consumers (real service-discovery client libraries
# printing what they resolve, for tests/e2e/test_consumers.py) from the Go module proxy
# into $ETCD_REGISTRAR_CACHE/consumers-<hash>/{libs,coredns,grpc171}. <hash> covers every
# Go source and module file (*.mod, *.sum) there (tests/consumers/runner.py computes the same one), so an
# edit builds afresh and an unchanged tree is not rebuilt (the three newest builds are
# kept, older ones removed). Needs only Go and the module proxy.
set -euo pipefail
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CONSUMERS_DIR="${REPO_ROOT}/tests/consumers"

# sha256 over "<sha256>  ./<path>" lines (sha256sum's format) of the sorted files, 16 hex.
consumers_hash() {
  (
    cd "${CONSUMERS_DIR}"
    find . -type f \( -name '*.go' -o -name '*.mod' -o -name '*.sum' \) | LC_ALL=C sort | xargs sha256sum
  ) | sha256sum | cut -c1-16
}

# Builds of earlier sources: keep the three newest (another checkout may be using one).
prune_old_builds() {
  local n=0 dir
  while read -r _ dir; do
    n=$((n + 1))
    if ((n > 3)) && [[ "${dir}" != "${OUT}" ]]; then rm -rf -- "${dir}"; fi
  done < <(find "${ETCD_REGISTRAR_CACHE}" -maxdepth 1 -type d -name 'consumers-*' -printf '%T@ %p\n' | sort -rn)
}

T_ALL="$(now_ms)"
HASH="$(consumers_hash)"
OUT="${ETCD_REGISTRAR_CACHE}/consumers-${HASH}"
# The client libraries an application links, in one module graph.
go_build "consumer libraries" "${HASH}" "${OUT}/libs" \
  "${CONSUMERS_DIR}" "" "" "etcd-naming kratos go-zero go-micro grpc-balancer" \
  ./cmd/etcd-naming ./cmd/kratos ./cmd/go-zero ./cmd/go-micro ./cmd/grpc-balancer
# The gRPC balancer client again at grpc-go 1.71 (grpc171.mod: its own, smaller graph).
go_build "consumer grpc-balancer at grpc-go 1.71" "${HASH}" "${OUT}/grpc171" \
  "${CONSUMERS_DIR}" "" "" "grpc-balancer" -modfile=grpc171.mod ./cmd/grpc-balancer
# CoreDNS from its own release graph, with the DNS poller.
go_build "consumer coredns" "${HASH}" "${OUT}/coredns" \
  "${CONSUMERS_DIR}/coredns" "" "" "coredns dnswatch" ./cmd/coredns ./cmd/dnswatch
prune_old_builds
log "consumers ready in ${OUT} ($(elapsed "${T_ALL}"))"

#!/usr/bin/env bash
# Build the benchmark's Go programs (module bench/go.mod: floor, selfreg, probe) into
# $ETCD_REGISTRAR_CACHE/bench-<source hash>/, once per source version: a cached build is
# reused, an edited go.mod/go.sum/*.go gets a new directory. One `go build` for all three,
# so the shared packages compile once. Prints one "<name>=<path>" line per program (read
# by bench/run.py).
set -euo pipefail
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../hack/lib.sh"

PROGRAMS=(floor selfreg probe)
cd "${REPO_ROOT}/bench"
hash="$(find go.mod go.sum "${PROGRAMS[@]}" internal -name '*.go' -o -name 'go.*' | LC_ALL=C sort |
  xargs cat | sha256sum | cut -c1-12)"
out="${ETCD_REGISTRAR_CACHE}/bench-${hash}"
if [[ ! -f "${out}/.stamp" ]]; then
  command -v go >/dev/null || die "'go' not found: install Go >= 1.21 (it fetches the toolchain go.mod names)"
  t0="$(now_ms)"
  mkdir -p "${out}"
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "${out}/" "${PROGRAMS[@]/#/./}"
  printf 'go=%s\nbuilt=%s\n' "$(go env GOVERSION)" "$(date -u +%FT%TZ)" >"${out}/.stamp"
  log "built bench/{${PROGRAMS[*]}} in $(elapsed "${t0}") into ${out}"
fi
for program in "${PROGRAMS[@]}"; do echo "${program}=${out}/${program}"; done

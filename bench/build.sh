#!/usr/bin/env bash
# Build the benchmark's Go programs (bench/floor, bench/selfreg, bench/probe) into
# $ETCD_REGISTRAR_CACHE/bench-<name>-<source hash>/<name>, once per source version: a
# cached binary is reused, an edited go.mod/go.sum/*.go gets a new directory. Prints one
# "<name>=<path>" line per program (read by bench/gobuild.py).
set -euo pipefail
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../hack/lib.sh"

BENCH_DIR="${REPO_ROOT}/bench"

build() { # build NAME
  local name="$1" src="${BENCH_DIR}/$1" hash out
  hash="$(cd "${src}" && cat go.mod go.sum ./*.go | sha256sum | cut -c1-12)"
  out="${ETCD_REGISTRAR_CACHE}/bench-${name}-${hash}"
  if [[ ! -x "${out}/${name}" ]]; then
    command -v go >/dev/null || die "'go' not found: install Go >= 1.24 (see hack/build-tools.sh)"
    local t0
    t0="$(now_ms)"
    mkdir -p "${out}"
    (cd "${src}" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "${out}/${name}.tmp" .)
    mv "${out}/${name}.tmp" "${out}/${name}"
    log "built bench/${name} in $(elapsed "${t0}")"
  fi
  echo "${name}=${out}/${name}"
}

for program in floor selfreg probe; do build "${program}"; done

#!/usr/bin/env bash
# Build the real node's images locally, with no registry, into docker archives under
# $ETCD_REGISTRAR_CACHE/images/ (hack/realnode-up.sh imports them into containerd):
#   base      Debian (this machine's release and apt sources) with Python, by mmdebstrap
#   pause     the pod sandbox: Debian's static catatonit in pause mode (-P), nothing else
#   operator  the project's Dockerfile, with the base above as its PYTHON_IMAGE build argument
#   demo      tests/images/demo: an HTTP server whose readiness endpoint tests can toggle
# Each image is tagged with a hash of what it is made of (the base's with its package list,
# the operator's with Dockerfile, pyproject.toml, README.md and operator/, and so on) and is
# rebuilt only when that changes. Prints the image references as NAME_IMAGE=ref lines.
set -euo pipefail
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

IMAGES_DIR="${ETCD_REGISTRAR_CACHE}/images"
# What the base gets besides Debian's minimal set: what the Dockerfile's builder stage runs
# (pip, python -m venv) and TLS roots for pip.
BASE_PACKAGES=python3,python3-venv,python3-pip,python-is-python3,ca-certificates
HOST_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
# buildah's own store, not the system one: everything stays in the cache.
BUILDAH=(buildah --root "${IMAGES_DIR}/storage" --runroot "${IMAGES_DIR}/run" --storage-driver overlay)

hash_of() { # hash_of TEXT FILES... -> 16 hex over TEXT and the files' contents
  { printf '%s\n' "$1"; shift; (($# == 0)) || sha256sum "$@"; } | sha256sum | cut -c1-16
}

# Files under DIR (relative paths, sorted), without Python's caches.
tree_files() {
  (cd "${REPO_ROOT}" && find "$@" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' | LC_ALL=C sort)
}

have_archive() { [[ -s "${IMAGES_DIR}/$1.tar" ]]; }

# The image is in buildah's store (a later FROM needs it), loading it from its archive if the
# store lost it.
ensure_in_store() { # ensure_in_store NAME REF
  "${BUILDAH[@]}" inspect --type image "$2" >/dev/null 2>&1 ||
    "${BUILDAH[@]}" pull --quiet "docker-archive:${IMAGES_DIR}/$1.tar" >/dev/null
}

save_archive() { # save_archive NAME REF
  local tmp="${IMAGES_DIR}/$1.tar.tmp"
  rm -f "${tmp}"
  "${BUILDAH[@]}" push --quiet "$2" "docker-archive:${tmp}:$2" >/dev/null
  mv "${tmp}" "${IMAGES_DIR}/$1.tar"
}

built() { # built NAME T0
  log "image $1 built in $(elapsed "$2") ($(du -h "${IMAGES_DIR}/$1.tar" | cut -f1))"
}

build_base() {
  local codename sources=()
  codename="$(. /etc/os-release && echo "${VERSION_CODENAME}")"
  # The mirrors this machine's apt uses (the only ones it may reach).
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [[ -s "${f}" ]] && sources+=("${f}")
  done
  ((${#sources[@]} > 0)) || die "no apt sources in /etc/apt: mmdebstrap needs a Debian mirror"
  local key
  key="$(hash_of "${codename} ${BASE_PACKAGES} $(mmdebstrap --version)" "${sources[@]}")"
  BASE_IMAGE="localhost/etcd-registrar-base:${key}"
  if ! have_archive "base-${key}"; then
    local t0 rootfs="${IMAGES_DIR}/base-${key}.rootfs.tar" ctr
    t0="$(now_ms)"
    log "building image base (Debian ${codename} + ${BASE_PACKAGES}) with mmdebstrap"
    # Documentation and translations are not needed in an image; copyright files stay.
    mmdebstrap --quiet --variant=minbase --format=tar --include="${BASE_PACKAGES}" \
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
      "${codename}" "${rootfs}" "${sources[@]}" >"${IMAGES_DIR}/mmdebstrap.log" 2>&1 ||
      die "mmdebstrap failed (log: ${IMAGES_DIR}/mmdebstrap.log): $(tail -n 5 "${IMAGES_DIR}/mmdebstrap.log")"
    ctr="$("${BUILDAH[@]}" from scratch)"
    "${BUILDAH[@]}" add --quiet "${ctr}" "${rootfs}" / >/dev/null
    "${BUILDAH[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      --cmd python3 "${ctr}"
    "${BUILDAH[@]}" commit --quiet --rm "${ctr}" "${BASE_IMAGE}" >/dev/null
    rm -f "${rootfs}"
    save_archive "base-${key}" "${BASE_IMAGE}"
    built "base-${key}" "${t0}"
  fi
  ensure_in_store "base-${key}" "${BASE_IMAGE}"
}

build_pause() {
  local bin key ctr t0
  bin="$(command -v catatonit)" || die "catatonit not found: run 'make deps' (hack/install-deps.sh)"
  key="$(hash_of pause "${bin}")"
  PAUSE_IMAGE="localhost/etcd-registrar-pause:${key}"
  have_archive "pause-${key}" && return
  t0="$(now_ms)"
  ctr="$("${BUILDAH[@]}" from scratch)"
  "${BUILDAH[@]}" copy --quiet "${ctr}" "${bin}" /pause >/dev/null
  "${BUILDAH[@]}" config --entrypoint '["/pause", "-P"]' --user 65535:65535 "${ctr}"
  "${BUILDAH[@]}" commit --quiet --rm "${ctr}" "${PAUSE_IMAGE}" >/dev/null
  save_archive "pause-${key}" "${PAUSE_IMAGE}"
  built "pause-${key}" "${t0}"
}

# build_from_file NAME IMAGE_VAR CONTEXT CONTAINERFILE FILES...: `buildah bud` with the base
# as PYTHON_IMAGE, tagged with the hash of FILES (paths relative to the repository).
build_from_file() {
  local name="$1" var="$2" context="$3" file="$4" key ref t0
  shift 4
  key="$(cd "${REPO_ROOT}" && hash_of "${BASE_IMAGE}" "$@")"
  ref="localhost/etcd-registrar-${name}:${key}"
  printf -v "${var}" '%s' "${ref}"
  have_archive "${name}-${key}" && return
  t0="$(now_ms)"
  log "building image ${name} from ${file#"${REPO_ROOT}"/}"
  # chroot isolation: RUN steps share this machine's network (pip reaches PyPI) and need
  # no runtime of their own. They trust what this machine trusts (a TLS-inspecting proxy's
  # CA, say): its CA bundle is mounted for the build only, never copied into the image.
  "${BUILDAH[@]}" bud --quiet --isolation chroot --layers=false \
    --volume "${HOST_CA_BUNDLE}:/etc/ssl/certs/ca-certificates.crt:ro" \
    --build-arg "PYTHON_IMAGE=${BASE_IMAGE}" -f "${file}" -t "${ref}" "${context}" \
    >"${IMAGES_DIR}/${name}.log" 2>&1 ||
    die "building image ${name} failed (log: ${IMAGES_DIR}/${name}.log): $(tail -n 10 "${IMAGES_DIR}/${name}.log")"
  save_archive "${name}-${key}" "${ref}"
  built "${name}-${key}" "${t0}"
}

# Archives of earlier sources: keep the three newest of each image.
prune() {
  local name n dir
  for name in base pause operator demo; do
    n=0
    while read -r _ dir; do
      n=$((n + 1))
      if ((n > 3)); then rm -f -- "${dir}"; fi
    done < <(find "${IMAGES_DIR}" -maxdepth 1 -name "${name}-*.tar" -printf '%T@ %p\n' | sort -rn)
  done
}

main() {
  local b
  for b in mmdebstrap buildah; do
    command -v "${b}" >/dev/null || die "'${b}' not found: run 'make deps' (hack/install-deps.sh)"
  done
  ((EUID == 0)) || die "building the images needs root (mmdebstrap and buildah write image root filesystems)"
  mkdir -p "${IMAGES_DIR}"
  # One build at a time: checkouts share the archives and buildah's store.
  exec 7<"${IMAGES_DIR}"
  flock 7
  local t0
  t0="$(now_ms)"
  build_base
  build_pause
  local operator_files demo_files
  mapfile -t operator_files < <(tree_files Dockerfile .dockerignore pyproject.toml README.md operator)
  build_from_file operator OPERATOR_IMAGE "${REPO_ROOT}" "${REPO_ROOT}/Dockerfile" "${operator_files[@]}"
  mapfile -t demo_files < <(tree_files tests/images/demo)
  build_from_file demo DEMO_IMAGE "${REPO_ROOT}/tests/images/demo" \
    "${REPO_ROOT}/tests/images/demo/Containerfile" "${demo_files[@]}"
  prune
  log "images ready ($(elapsed "${t0}"))"
  printf 'BASE_IMAGE=%s\nPAUSE_IMAGE=%s\nOPERATOR_IMAGE=%s\nDEMO_IMAGE=%s\n' \
    "${BASE_IMAGE}" "${PAUSE_IMAGE}" "${OPERATOR_IMAGE}" "${DEMO_IMAGE}"
}

main "$@"

#!/usr/bin/env bash
# Install the Debian packages the local cluster and the integration tests need.
# Idempotent: a fast no-op when everything is present; `apt-get update` runs only when
# something has to be installed. The Go toolchain is checked by hack/build-tools.sh.
set -euo pipefail

PACKAGES=(
  etcd-server etcd-client openssl curl
  # The real node (hack/realnode-up.sh): container runtime, pod network, image builds.
  # containerd 1.6 serves CRI v1, all kubelet 1.34 needs (see realnode-up.sh).
  containerd runc containernetworking-plugins iptables
  mmdebstrap buildah
  catatonit # the pod sandbox ("pause") process: static, so it is the whole pause image
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  status="$(dpkg-query -W -f='${db:Status-Status}' "${pkg}" 2>/dev/null || true)"
  [[ "${status}" == "installed" ]] || missing+=("${pkg}")
done

if ((${#missing[@]} == 0)); then
  exit 0
fi

if ! command -v apt-get >/dev/null; then
  echo "error: missing packages (${missing[*]}) and no apt-get; install them by hand" >&2
  exit 1
fi

SUDO=()
if ((EUID != 0)); then
  command -v sudo >/dev/null || {
    echo "error: need root (or sudo) to install: ${missing[*]}" >&2
    exit 1
  }
  SUDO=(sudo)
fi

echo "installing Debian packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Another checkout's `make deps` may hold dpkg's lock for a while: wait for it.
"${SUDO[@]}" apt-get update -qq -o DPkg::Lock::Timeout=300
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 "${missing[@]}"

# Debian's etcd-server package enables a system etcd on :2379, and containerd a system
# containerd; the harness runs its own instances (own ports, sockets and directories) and
# does not need them. Leave them as the packages set them up.

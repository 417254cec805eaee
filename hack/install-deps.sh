#!/usr/bin/env bash
# Install the Debian packages the local cluster and the integration tests need.
# Idempotent: a fast no-op when everything is present; `apt-get update` runs only when
# something has to be installed. The Go toolchain is checked by hack/build-tools.sh.
set -euo pipefail

PACKAGES=(etcd-server etcd-client openssl curl)

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
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"

# Debian's etcd-server package enables a system etcd on :2379; the harness runs its own
# instances on free ports and does not need it. Leave it as the package set it up.

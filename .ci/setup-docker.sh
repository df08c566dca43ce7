#!/usr/bin/env bash
# Prepare a machine with no image registry for bobkit's container tests (idempotent, as root, no stdin):
#   1. Debian's docker.io and debootstrap,
#   2. dockerd without bridge/iptables (containers run with --network none; builds use the host network),
#   3. a local base image made by debootstrap + `docker import` (stands in for the pinned base),
#   4. a wheelhouse filled from the hash-pinned lock of the test image (local pip cache / PyPI).
# Environment: BOBKIT_BASE_IMAGE (default bobkit-local/base:bookworm), BOBKIT_WHEELHOUSE
# (default /var/cache/bobkit/wheelhouse), BOBKIT_DOCKERD_LOG (default /var/log/bobkit-dockerd.log).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
base_image="${BOBKIT_BASE_IMAGE:-bobkit-local/base:bookworm}"
wheelhouse="${BOBKIT_WHEELHOUSE:-/var/cache/bobkit/wheelhouse}"
dockerd_log="${BOBKIT_DOCKERD_LOG:-/var/log/bobkit-dockerd.log}"
lock="${BOBKIT_TEST_LOCK:-$here/docker/locks/classification.txt}"
python="${PYTHON:-python3}"

say() { printf '[setup-docker] %s\n' "$*"; }

# 1. packages
if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
  say "installing docker.io and debootstrap"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends docker.io debootstrap >/dev/null
fi

# 2. the daemon
if ! docker info >/dev/null 2>&1; then
  say "starting dockerd (log: $dockerd_log)"
  nohup dockerd --bridge=none --iptables=false --ip-masq=false >"$dockerd_log" 2>&1 </dev/null &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null 2>&1 || { say "dockerd did not answer in 60 s; see $dockerd_log"; tail -20 "$dockerd_log"; exit 1; }
fi
say "docker $(docker version --format '{{.Server.Version}}' 2>/dev/null) answers"

# 3. the local base image (Debian bookworm: python3.11, venv, CA certificates)
if ! docker image inspect "$base_image" >/dev/null 2>&1; then
  root="$(mktemp -d /var/tmp/bobkit-base.XXXXXX)"
  say "debootstrap bookworm into $root (about a minute)"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$root" \
    >"$root.log" 2>&1 || { tail -20 "$root.log"; exit 1; }
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | docker import \
    -c 'ENV LANG=C.UTF-8' -c 'CMD ["/bin/bash"]' - "$base_image" >/dev/null
  rm -rf "$root" "$root.log"
fi
say "base image $base_image ready"

# 4. the wheelhouse for the test image (pip verifies every hash in the lock)
mkdir -p "$wheelhouse"
say "filling $wheelhouse from $(basename "$lock")"
"$python" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  --require-hashes -r "$lock" -d "$wheelhouse"
say "wheelhouse ready: $(find "$wheelhouse" -name '*.whl' | wc -l) wheels, $(du -sh "$wheelhouse" | cut -f1)"

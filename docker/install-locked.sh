#!/bin/sh
# bobkit-install-locked LOCK [--wheel PIP-WHEEL-ARGS...]: install (or, with --wheel, build wheels of) a
# hash-pinned lock. Packages come from WHEELHOUSE_URL when the build was given a wheelhouse, else from
# the index; PEM files in /tmp/bobkit-ca/ are trusted during the build (proxies that re-sign TLS).
set -eu
lock="$1"
shift
if [ "${1:-}" = "--wheel" ]; then
  shift
  set -- wheel --no-deps --no-build-isolation --require-hashes -r "$lock" "$@"
else
  set -- install --require-hashes --only-binary=:all: -r "$lock" "$@"
fi
if [ -n "${WHEELHOUSE_URL:-}" ]; then
  set -- "$@" --no-index --find-links "$WHEELHOUSE_URL"
fi
if ls /tmp/bobkit-ca/*.pem >/dev/null 2>&1; then
  cat /etc/ssl/certs/ca-certificates.crt /tmp/bobkit-ca/*.pem > /tmp/bobkit-ca-bundle.crt
  export PIP_CERT=/tmp/bobkit-ca-bundle.crt
fi
pip "$@"
rm -f /tmp/bobkit-ca-bundle.crt

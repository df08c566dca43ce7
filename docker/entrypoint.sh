#!/bin/sh
# Entry point of every bobkit image: `bobkit run-one SPEC [--data-root DIR]` unless another program
# is named (e.g. `bash`, `python`, `bobkit doctor`). The executor runs it as the host user's uid with
# a read-only root, so HOME falls back to /tmp when the uid has no writable home.
set -e
if [ -z "${HOME:-}" ] || [ ! -w "${HOME}" ]; then
  export HOME=/tmp
fi
case "${1:-}" in
  "" | -* | *.json) exec bobkit run-one "$@" ;;
  *) exec "$@" ;;
esac

#!/bin/sh
# As the official image's: `redis-server ARGS` runs as the redis user with protected mode off.
set -eu
if [ "${1:-}" = redis-server ]; then
  shift
  chown -R redis:redis /data 2>/dev/null || true
  exec setpriv --reuid=redis --regid=redis --init-groups redis-server --protected-mode no "$@"
fi
exec "$@"

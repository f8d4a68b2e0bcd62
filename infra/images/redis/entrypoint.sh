#!/bin/sh
# As the official redis image: redis-server runs as user redis and, having no
# config file, without protected mode (it is reached over the container network).
set -eu
if [ "${1:-}" = redis-server ]; then
    shift
    set -- redis-server --protected-mode no "$@"
    if [ "$(id -u)" = 0 ]; then
        exec setpriv --reuid=redis --regid=redis --init-groups "$@"
    fi
fi
exec "$@"

#!/usr/bin/env bash
# Start the local PostgreSQL and Redis the integration tests use, if they are not running.
set -euo pipefail

if ! (echo > /dev/tcp/127.0.0.1/5432) 2>/dev/null; then
    if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
    else
        echo "PostgreSQL is not running on 127.0.0.1:5432 and pg_ctlcluster is missing" >&2
    fi
fi

if ! (echo > /dev/tcp/127.0.0.1/6379) 2>/dev/null; then
    if command -v redis-server >/dev/null; then
        redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no
    else
        echo "Redis is not running on 127.0.0.1:6379 and redis-server is missing" >&2
    fi
fi

# Wait a little for both to accept connections.
for _ in $(seq 1 50); do
    if (echo > /dev/tcp/127.0.0.1/5432) 2>/dev/null && (echo > /dev/tcp/127.0.0.1/6379) 2>/dev/null; then
        exit 0
    fi
    sleep 0.2
done
echo "warning: PostgreSQL or Redis is still not reachable" >&2

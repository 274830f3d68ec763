#!/usr/bin/env bash
# The PostgreSQL test suites through PgBouncer in transaction pooling mode.
#
# Starts a private PgBouncer (its own configuration in a temporary directory, a free port,
# pool_mode = transaction, every database forwarded to the PostgreSQL server at
# $PGBOUNCER_UPSTREAM_HOST:$PGBOUNCER_UPSTREAM_PORT, trust authentication; not the system
# service), then runs every test that uses TEST_DATABASE_URL with TEST_DATABASE_URL pointed at
# it, with Zeta's `pool-mode=transaction` URL parameter: the API suite, the CLI tests and the
# three-process test. Each test creates and drops its own database through PgBouncer, and the
# servers under test, their migrations and `zeta verify` connect through it too.
#
# No `ignore_startup_parameters`: Zeta must connect to a PgBouncer configured with the defaults.
# PgBouncer 1.18 (Debian 12) keeps no prepared statement across transactions in this mode.
#
# Fails, never skips, when pgbouncer is missing or does not start. As root, PgBouncer (which
# refuses to run as root) runs as $PGBOUNCER_USER (default postgres).
set -euo pipefail
cd "$(dirname "$0")/../../.."

UPSTREAM_HOST="${PGBOUNCER_UPSTREAM_HOST:-127.0.0.1}"
UPSTREAM_PORT="${PGBOUNCER_UPSTREAM_PORT:-5432}"
DB_USER="${PGBOUNCER_DB_USER:-postgres}"
RUN_AS="${PGBOUNCER_USER:-postgres}"

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

PGBOUNCER="$(command -v pgbouncer || true)"
if [ -z "$PGBOUNCER" ] && [ -x /usr/sbin/pgbouncer ]; then
    PGBOUNCER=/usr/sbin/pgbouncer
fi
[ -n "$PGBOUNCER" ] || fail "pgbouncer is not installed (Debian package pgbouncer); .ci/run installs it"
echo "== $("$PGBOUNCER" --version | head -n1)"

DIR="$(mktemp -d -t zeta-pgbouncer.XXXXXX)"
PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
cat >"$DIR/pgbouncer.ini" <<EOF
[databases]
* = host=$UPSTREAM_HOST port=$UPSTREAM_PORT

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PORT
unix_socket_dir =
auth_type = trust
auth_file = $DIR/userlist.txt
pool_mode = transaction
max_client_conn = 1000
default_pool_size = 20
logfile = $DIR/pgbouncer.log
pidfile = $DIR/pgbouncer.pid
EOF
printf '"%s" ""\n' "$DB_USER" >"$DIR/userlist.txt"

USER_ARGS=()
if [ "$(id -u)" = 0 ]; then
    id "$RUN_AS" >/dev/null 2>&1 || fail "PgBouncer refuses to run as root and user $RUN_AS does not exist"
    chown -R "$RUN_AS" "$DIR"
    USER_ARGS=(-u "$RUN_AS")
fi

"$PGBOUNCER" "${USER_ARGS[@]}" "$DIR/pgbouncer.ini" >"$DIR/stdout.log" 2>&1 &
BOUNCER=$!

# Called by the EXIT trap.
# shellcheck disable=SC2329
cleanup() {
    if kill -0 "$BOUNCER" 2>/dev/null; then
        kill -TERM "$BOUNCER" 2>/dev/null || true
        wait "$BOUNCER" 2>/dev/null || true
    fi
    rm -rf "$DIR"
}
trap cleanup EXIT

show_log() {
    cat "$DIR/stdout.log" "$DIR/pgbouncer.log" 2>/dev/null | tail -n 40 >&2 || true
}

ready=""
for _ in $(seq 1 100); do
    if ! kill -0 "$BOUNCER" 2>/dev/null; then
        show_log
        fail "pgbouncer exited at start"
    fi
    if psql "host=127.0.0.1 port=$PORT user=$DB_USER dbname=postgres" -qAtc 'SELECT 1' >/dev/null 2>&1; then
        ready=1
        break
    fi
    sleep 0.1
done
if [ -z "$ready" ]; then
    show_log
    fail "pgbouncer on 127.0.0.1:$PORT did not answer within 10 s"
fi
echo "== pgbouncer (pool_mode = transaction) on 127.0.0.1:$PORT -> $UPSTREAM_HOST:$UPSTREAM_PORT"

export TEST_DATABASE_URL="postgres://$DB_USER@127.0.0.1:$PORT/postgres?pool-mode=transaction"
status=0
cargo nextest run -p zeta \
    -E 'binary(api) | binary(cli) | (binary(process) & test(/^three_processes/))' || status=$?
if [ "$status" != 0 ]; then
    echo "== pgbouncer log (last lines)" >&2
    show_log
fi
exit "$status"

#!/usr/bin/env bash
# Provide a PostgreSQL database for the generation-store tests (tests/test_store.py).
#
#   eval "$(bash .ci/postgres.sh)"             # exports PIANO_GPT_TEST_POSTGRES_URL when a server is usable
#   bash .ci/postgres.sh tmp/postgres.env      # also writes the export line to that file
#
# If nothing answers on 127.0.0.1:$PORT it installs Debian's `postgresql` (apt-get), starts a cluster on
# loopback, and creates a login role and a database owned by it. Idempotent: a second run only checks.
# Only the `export ...` line goes to stdout (everything else to stderr), and the script always exits 0:
# without apt, root or a working server it prints the reason and the tests skip the PostgreSQL cases.
#
# Knobs (environment): PIANO_GPT_PG_USER (piano), PIANO_GPT_PG_PASSWORD (piano),
# PIANO_GPT_PG_DB (piano_gpt_test), PIANO_GPT_PG_PORT (5432).

set -u -o pipefail

HOST=127.0.0.1
PORT="${PIANO_GPT_PG_PORT:-5432}"
PG_USER="${PIANO_GPT_PG_USER:-piano}"
PG_PASSWORD="${PIANO_GPT_PG_PASSWORD:-piano}"
PG_DB="${PIANO_GPT_PG_DB:-piano_gpt_test}"
ENV_FILE="${1:-}"

log() { echo "postgres.sh: $*" >&2; }

# Commands as root (directly, or through password-less sudo); empty when neither is possible.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo -n "$@"
    else
        return 126
    fi
}

can_be_root() { [ "$(id -u)" -eq 0 ] || { command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; }; }

# Commands as the `postgres` OS user (peer authentication over the Unix socket), from a readable cwd.
as_postgres() {
    if [ "$(id -un)" = postgres ]; then
        (cd / && "$@")
    elif [ "$(id -u)" -eq 0 ] && command -v runuser >/dev/null 2>&1; then
        (cd / && runuser -u postgres -- "$@")
    elif [ "$(id -u)" -eq 0 ]; then
        (cd / && su postgres -s /bin/sh -c "$(printf '%q ' "$@")")
    elif command -v sudo >/dev/null 2>&1 && sudo -n -u postgres true 2>/dev/null; then
        (cd / && sudo -n -u postgres "$@")
    else
        return 126
    fi
}

answers() {
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -h "$HOST" -p "$PORT" -t 3
    else
        (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null
    fi
}

wait_until_up() {
    local i
    for i in $(seq 1 30); do
        answers && return 0
        sleep 1
    done
    return 1
}

pg_bindir() {
    # Newest /usr/lib/postgresql/<version>/bin that has initdb.
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -n "$dir" ] && [ -x "$dir/initdb" ] && echo "$dir"
}

install_postgres() {
    if [ -n "$(pg_bindir)" ]; then
        return 0
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        log "no PostgreSQL server and no apt-get to install one: skipping"
        return 1
    fi
    if ! can_be_root; then
        log "no PostgreSQL server and no root (nor password-less sudo) to install one: skipping"
        return 1
    fi
    log "installing postgresql with apt-get"
    if ! as_root env DEBIAN_FRONTEND=noninteractive timeout 600 apt-get update >&2; then
        log "apt-get update failed: skipping"
        return 1
    fi
    if ! as_root env DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y --no-install-recommends \
        postgresql >&2; then
        log "apt-get install postgresql failed: skipping"
        return 1
    fi
    [ -n "$(pg_bindir)" ] || { log "postgresql installed but no initdb found: skipping"; return 1; }
}

start_server() {
    if command -v pg_lsclusters >/dev/null 2>&1 && command -v pg_ctlcluster >/dev/null 2>&1; then
        # Debian: a cluster on our port (the package's `main`), else a new one.
        local line version name
        line=$(pg_lsclusters -h 2>/dev/null | awk -v port="$PORT" '$3 == port {print $1, $2; exit}')
        if [ -z "$line" ]; then
            version=$(basename "$(dirname "$(pg_bindir)")")
            log "creating cluster $version/piano on port $PORT"
            as_root pg_createcluster "$version" piano --port "$PORT" >&2 || return 1
            line="$version piano"
        fi
        read -r version name <<<"$line"
        log "starting cluster $version/$name"
        as_root pg_ctlcluster "$version" "$name" start >&2 || answers || return 1
    else
        # Elsewhere: initdb + pg_ctl as the postgres user, in a directory of our own.
        local bindir datadir=/var/tmp/piano-gpt-postgres
        bindir=$(pg_bindir) || return 1
        id postgres >/dev/null 2>&1 || as_root useradd --system --home-dir /var/tmp postgres || return 1
        if [ ! -s "$datadir/PG_VERSION" ]; then
            as_root mkdir -p "$datadir" && as_root chown postgres "$datadir" || return 1
            as_postgres "$bindir/initdb" -D "$datadir" --auth-local=peer --auth-host=scram-sha-256 >&2 || return 1
        fi
        as_postgres "$bindir/pg_ctl" -D "$datadir" -l "$datadir/server.log" -w \
            -o "-c listen_addresses=$HOST -p $PORT" start >&2 || return 1
    fi
    wait_until_up
}

provision() {
    # Role with a password and a database it owns; quoting is done by PostgreSQL (format %I / %L).
    as_postgres psql -X -q -v ON_ERROR_STOP=1 -p "$PORT" -d postgres \
        -v user="$PG_USER" -v pass="$PG_PASSWORD" -v db="$PG_DB" -f - >&2 <<'SQL'
SELECT format('CREATE ROLE %I LOGIN', :'user')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'user') \gexec
SELECT format('ALTER ROLE %I LOGIN PASSWORD %L', :'user', :'pass') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'user')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
SQL
}

verify() {
    command -v psql >/dev/null 2>&1 || return 0 # cannot check here; the tests will
    PGPASSWORD="$PG_PASSWORD" PGCONNECT_TIMEOUT=5 psql -X -q -At -h "$HOST" -p "$PORT" -U "$PG_USER" \
        -d "$PG_DB" -c 'SELECT 1' >/dev/null
}

main() {
    if answers; then
        log "a server answers on $HOST:$PORT"
    else
        install_postgres || return 0
        if ! start_server; then
            log "could not start a PostgreSQL server on $HOST:$PORT: skipping"
            return 0
        fi
    fi
    provision || log "could not create role/database as the postgres OS user (they may already exist)"
    if ! verify; then
        log "cannot log in as $PG_USER to $PG_DB on $HOST:$PORT: skipping"
        return 0
    fi
    local line="export PIANO_GPT_TEST_POSTGRES_URL=postgresql+psycopg://$PG_USER:$PG_PASSWORD@$HOST:$PORT/$PG_DB"
    if [ -n "$ENV_FILE" ]; then
        mkdir -p "$(dirname "$ENV_FILE")" && echo "$line" >"$ENV_FILE" || log "could not write $ENV_FILE"
    fi
    echo "$line"
}

main || true
exit 0

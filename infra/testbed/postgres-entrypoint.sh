#!/bin/sh
# Entrypoint of the locally built test image: does what the official postgres
# image does with POSTGRES_USER/POSTGRES_PASSWORD/POSTGRES_DB on an empty data
# directory, so the project's compose file behaves the same with either image.
set -eu

: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
: "${PGDATA:=/var/lib/postgresql/data}"
export PGDATA

as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }

mkdir -p "$PGDATA" /var/run/postgresql
chown postgres:postgres "$PGDATA" /var/run/postgresql
chmod 0700 "$PGDATA"
chmod 2775 /var/run/postgresql

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ]; then
        echo "error: POSTGRES_PASSWORD is not set" >&2
        exit 1
    fi
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    chown postgres "$pwfile"
    # UTF8: a SQL_ASCII database breaks psycopg.
    as_postgres initdb -D "$PGDATA" --username="$POSTGRES_USER" --pwfile="$pwfile" \
        -E UTF8 --locale=C.UTF-8 >/dev/null 2>&1
    rm -f "$pwfile"
    # Like the official image: initdb's defaults trust the socket and loopback,
    # every other address needs the password.
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    # Socket-only temporary server while initialising, as the official image does.
    as_postgres pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p 5432" -w start >/dev/null
    # Before 14, initdb stores the password as md5, which the scram-sha-256 line above
    # cannot check: store it again as scram, and keep that the default for later changes.
    echo "password_encryption = 'scram-sha-256'" >>"$PGDATA/postgresql.conf"
    printf '%s\n' "SET password_encryption = 'scram-sha-256';" 'ALTER ROLE :"user" PASSWORD :'"'pw';" \
        | as_postgres psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
            --set user="$POSTGRES_USER" --set pw="$POSTGRES_PASSWORD" >/dev/null
    if [ "$POSTGRES_DB" != "postgres" ]; then
        # psql interpolates :"db" (quoted as an identifier) only in its input, not in -c.
        echo 'CREATE DATABASE :"db";' | as_postgres psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" \
            --dbname postgres --set db="$POSTGRES_DB" >/dev/null
    fi
    as_postgres pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    echo "PostgreSQL init process complete; ready for start up."
fi

if [ "${1:-postgres}" = "postgres" ]; then
    [ "$#" -gt 0 ] && shift
    exec setpriv --reuid=postgres --regid=postgres --init-groups postgres -D "$PGDATA" -c listen_addresses='*' "$@"
fi
exec "$@"

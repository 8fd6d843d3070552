#!/bin/sh
# PostgreSQL primary of docker/compose.yaml, first start only (run by the postgres image's
# entrypoint from /docker-entrypoint-initdb.d): the replication user, rolegate's monitor user,
# the app user and database, and a pg_hba line for streaming replication.
set -eu

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v repl_pw="$REPLICATION_PASSWORD" \
    -v monitor_pw="$PG_MONITOR_PASSWORD" \
    -v app_pw="$APP_PASSWORD" <<'SQL'
CREATE ROLE replicator WITH LOGIN REPLICATION PASSWORD :'repl_pw';
-- pg_monitor: replay lag and WAL positions; the check needs nothing else.
CREATE ROLE rolegate_monitor WITH LOGIN PASSWORD :'monitor_pw' IN ROLE pg_monitor;
CREATE ROLE app WITH LOGIN PASSWORD :'app_pw';
CREATE DATABASE app OWNER app;
SQL

# "all" in pg_hba.conf does not cover replication connections.
echo "host replication replicator all scram-sha-256" >>"$PGDATA/pg_hba.conf"

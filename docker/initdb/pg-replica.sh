#!/bin/sh
# PostgreSQL streaming replica of docker/compose.yaml (the container's entrypoint, running as
# the postgres user): clone pg-primary on first start, then run as a hot standby. After a
# failover it is the primary and stays one; `docker compose down -v` starts over.
set -eu

: "${PGDATA:=/var/lib/postgresql/data}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    # PGPASSWORD (the replication password) comes from the environment.
    pg_basebackup --host=pg-primary --username=replicator --pgdata="$PGDATA" \
        --write-recovery-conf --wal-method=stream --checkpoint=fast
    chmod 0700 "$PGDATA"
fi
exec postgres -c wal_level=replica -c wal_keep_size=256MB -c wal_log_hints=on -c hot_standby=on

#!/bin/sh
# MariaDB replica of docker/compose.yaml, first start only: follow the primary by GTID from
# its first transaction. The server runs with --read-only=ON until promoted.
set -eu

mariadb --protocol=socket --user=root --password="$MARIADB_ROOT_PASSWORD" <<SQL
CHANGE MASTER TO
    MASTER_HOST = '$MYSQL_PRIMARY_HOST',
    MASTER_USER = 'replicator',
    MASTER_PASSWORD = '$REPLICATION_PASSWORD',
    MASTER_USE_GTID = slave_pos,
    MASTER_CONNECT_RETRY = 1;
START SLAVE;
SQL

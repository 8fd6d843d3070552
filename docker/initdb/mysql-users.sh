#!/bin/sh
# MariaDB nodes of docker/compose.yaml, first start only (run by the mariadb image's entrypoint
# from /docker-entrypoint-initdb.d, on both nodes): rolegate's monitor user, the replication
# user, the app user and database. Not written to the binary log (sql_log_bin=0): each node
# creates its own, so the replica does not replay them.
set -eu

mariadb --protocol=socket --user=root --password="$MARIADB_ROOT_PASSWORD" <<SQL
SET SESSION sql_log_bin = 0;
-- read_only, replication status: what the check reads.
CREATE USER 'rolegate_monitor'@'%' IDENTIFIED BY '$MYSQL_MONITOR_PASSWORD';
GRANT BINLOG MONITOR, SLAVE MONITOR ON *.* TO 'rolegate_monitor'@'%';
CREATE USER 'replicator'@'%' IDENTIFIED BY '$REPLICATION_PASSWORD';
GRANT REPLICATION SLAVE ON *.* TO 'replicator'@'%';
CREATE DATABASE app;
CREATE USER 'app'@'%' IDENTIFIED BY '$APP_PASSWORD';
GRANT ALL ON app.* TO 'app'@'%';
SQL

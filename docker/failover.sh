#!/bin/sh
# docker/failover.sh pg|mysql|redis — fail over one pair of docker/compose.yaml the hard way:
# stop the primary container, promote the replica, and wait until rolegate is ready again
# (its write endpoint then leads to the promoted node). Start over with:
#   docker compose -f docker/compose.yaml down -v && docker compose -f docker/compose.yaml up -d
set -eu

engine=${1:?usage: docker/failover.sh pg|mysql|redis}
compose_file=$(cd "$(dirname "$0")" && pwd)/compose.yaml
compose() { docker compose -f "$compose_file" "$@"; }

case $engine in
pg)
    compose stop pg-primary
    compose exec -T pg-replica psql --username=postgres --tuples-only --command='SELECT pg_promote()'
    ;;
mysql)
    compose stop mysql-primary
    # shellcheck disable=SC2016 # expanded inside the container
    compose exec -T mysql-replica sh -c \
        'mariadb --user=root --password="$MARIADB_ROOT_PASSWORD" --execute="STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only = OFF"'
    ;;
redis)
    compose stop redis-primary
    compose exec -T redis-replica redis-cli REPLICAOF NO ONE
    ;;
*)
    echo "usage: $0 pg|mysql|redis" >&2
    exit 2
    ;;
esac

# rolegate's own probe, inside its container: bounded, one try per second.
tries=0
until compose exec -T rolegate rolegate probe --url http://127.0.0.1:9813/readyz --timeout 1s; do
    tries=$((tries + 1))
    if [ "$tries" -ge 30 ]; then
        echo "failover.sh: rolegate not ready 30 s after the promotion; see: docker compose -f $compose_file logs rolegate" >&2
        exit 1
    fi
    sleep 1
done
echo "failover.sh: $engine failed over; status: curl -s http://127.0.0.1:9813/status"

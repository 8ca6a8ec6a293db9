#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests and benchmarks: unix socket only, fsync on.
#
#   source scripts/pg-cluster.sh   # starts it, exports CHAT_TRIO_TEST_DATABASE and PG_CLUSTER_DIR
#   pg_cluster_stop                # stops it and deletes its directory (put it in a trap)
#
# initdb refuses to run as root, so as root the cluster belongs to the `postgres` user. Installs
# Debian's `postgresql` package if no server binaries are found.
PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
if [ -z "$PG_BIN" ] || [ ! -x "$PG_BIN/initdb" ]; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
fi
PG_CLUSTER_DIR=$(mktemp -d /tmp/chat_trio-pg.XXXXXX)
chmod 755 "$PG_CLUSTER_DIR"
if [ "$(id -u)" = 0 ]; then
    chown postgres: "$PG_CLUSTER_DIR"
    AS_PG=(runuser -u postgres --)
else
    AS_PG=()
fi
"${AS_PG[@]}" "$PG_BIN/initdb" -D "$PG_CLUSTER_DIR/data" -U chat --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
"${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$PG_CLUSTER_DIR/data" -l "$PG_CLUSTER_DIR/server.log" -w \
    -o "-c listen_addresses='' -k $PG_CLUSTER_DIR -c fsync=on -c max_connections=300" start >/dev/null
"${AS_PG[@]}" "$PG_BIN/createdb" -h "$PG_CLUSTER_DIR" -U chat chat
export PG_BIN PG_CLUSTER_DIR
export CHAT_TRIO_TEST_DATABASE="postgresql:///chat?host=$PG_CLUSTER_DIR&user=chat"

pg_cluster_stop() {
    "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$PG_CLUSTER_DIR/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$PG_CLUSTER_DIR"
}

#!/usr/bin/env bash
# Make sure Mosquitto, Redis and PostgreSQL answer on localhost. Whatever does not answer is started
# from its installed binaries with data under .run/; a missing binary prints the apt-get line.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR="$PWD/.run"
MQTT_PORT="${ENERLINK_LOCAL_MQTT_PORT:-1883}"
REDIS_PORT="${ENERLINK_LOCAL_REDIS_PORT:-6379}"
PG_PORT="${ENERLINK_LOCAL_PG_PORT:-5432}"
PYTHON="${PYTHON:-python3}"
APT_LINE="sudo apt-get install -y mosquitto mosquitto-clients redis-server redis-tools postgresql postgresql-client"
missing=0

say() { printf '[services] %s\n' "$*"; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_for() { # name, command...
  local name=$1; shift
  for _ in $(seq 1 50); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  say "$name did not come up"; return 1
}
need() { command -v "$1" >/dev/null 2>&1 || [ -x "$1" ]; }
as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

# --- Redis ---------------------------------------------------------------------------------------
if port_open "$REDIS_PORT"; then
  say "redis answers on 127.0.0.1:$REDIS_PORT"
elif need redis-server; then
  mkdir -p "$RUN_DIR/redis"
  say "starting redis-server on 127.0.0.1:$REDIS_PORT (data under .run/redis)"
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
    --dir "$RUN_DIR/redis" --logfile "$RUN_DIR/redis/redis.log"
  wait_for redis port_open "$REDIS_PORT"
else
  say "redis-server is not installed"; missing=1
fi

# --- PostgreSQL ----------------------------------------------------------------------------------
pg_bin=""
for dir in /usr/lib/postgresql/*/bin; do [ -x "$dir/pg_ctl" ] && pg_bin=$dir; done
if port_open "$PG_PORT"; then
  say "postgresql answers on 127.0.0.1:$PG_PORT"
elif [ -d /etc/postgresql ] && need pg_ctlcluster && [ -n "$(ls /etc/postgresql 2>/dev/null)" ]; then
  say "starting the system postgresql cluster"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start
  wait_for postgresql port_open "$PG_PORT"
elif [ -n "$pg_bin" ]; then
  data="$RUN_DIR/postgres"
  if [ ! -f "$data/PG_VERSION" ]; then
    say "initialising a postgresql cluster under .run/postgres"
    mkdir -p "$data"; [ "$(id -u)" = 0 ] && chown postgres "$data" "$RUN_DIR"
    as_postgres "$pg_bin/initdb" -D "$data" -U postgres --auth=trust >/dev/null
  fi
  say "starting postgresql on 127.0.0.1:$PG_PORT (data under .run/postgres)"
  as_postgres "$pg_bin/pg_ctl" -D "$data" -l "$data/server.log" -w \
    -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -k /tmp" start >/dev/null
else
  say "postgresql is not installed"; missing=1
fi
if port_open "$PG_PORT" && need psql; then
  for db in enerlink test; do
    if ! psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -tAc "select 1 from pg_database where datname='$db'" | grep -q 1; then
      say "creating database $db"
      psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qc "create database $db"
    fi
  done
fi

# --- Mosquitto -----------------------------------------------------------------------------------
if port_open "$MQTT_PORT"; then
  say "mosquitto answers on 127.0.0.1:$MQTT_PORT"
elif need mosquitto || need /usr/sbin/mosquitto; then
  conf=$("$PYTHON" -m enerlink.devservices --port "$MQTT_PORT" --data-dir "$RUN_DIR/mosquitto")
  say "starting mosquitto on 127.0.0.1:$MQTT_PORT from mosquitto/mosquitto.conf (data under .run/mosquitto)"
  PATH="$PATH:/usr/sbin" mosquitto -d -c "$conf"
  wait_for mosquitto port_open "$MQTT_PORT"
else
  say "mosquitto is not installed"; missing=1
fi

if [ "$missing" != 0 ]; then
  say "install what is missing with:"
  say "  $APT_LINE"
  exit 1
fi

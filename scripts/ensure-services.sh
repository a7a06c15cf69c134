#!/usr/bin/env bash
# Make sure Mosquitto, Redis and PostgreSQL answer on localhost. Whatever does not answer is started
# from its installed binaries with data under .run/. Missing binaries are installed with apt-get when
# this user can (root, or passwordless sudo, on a Debian-family system); otherwise the script prints
# the apt-get line and exits 1.
#
# ENSURE_SERVICES_RUN_DIR, _SBIN_DIRS, _PG_LIB_DIR and _PG_ETC_DIR move the data folder and where the
# servers are looked for (their defaults are Debian's); the tests of this script use them.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR="${ENSURE_SERVICES_RUN_DIR:-$PWD/.run}"
SBIN_DIRS="${ENSURE_SERVICES_SBIN_DIRS:-/usr/sbin:/sbin}"
PG_LIB_DIR="${ENSURE_SERVICES_PG_LIB_DIR:-/usr/lib/postgresql}"
PG_ETC_DIR="${ENSURE_SERVICES_PG_ETC_DIR:-/etc/postgresql}"
MQTT_PORT="${ENERLINK_LOCAL_MQTT_PORT:-1883}"
REDIS_PORT="${ENERLINK_LOCAL_REDIS_PORT:-6379}"
PG_PORT="${ENERLINK_LOCAL_PG_PORT:-5432}"
PYTHON="${PYTHON:-python3}"
APT_LINE="sudo apt-get install -y mosquitto mosquitto-clients redis-server redis-tools postgresql postgresql-client"
PATH="$PATH:$SBIN_DIRS"  # mosquitto and runuser live in /usr/sbin, not on every user's PATH
missing=0
installed_postgresql=0

say() { printf '[services] %s\n' "$*"; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_for() { # name, command...
  local name=$1; shift
  for _ in $(seq 1 50); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  say "$name did not come up"; return 1
}
need() { command -v "$1" >/dev/null 2>&1; }
is_root() { [ "$(id -u)" = 0 ]; }
admin=() admin_known=0 admin_ok=0
can_admin() { # root, or passwordless sudo (asked once, and only when something needs it)
  if [ "$admin_known" = 0 ]; then
    admin_known=1
    if is_root; then admin_ok=1; elif need sudo && sudo -n true 2>/dev/null; then admin=(sudo -n); admin_ok=1; fi
  fi
  [ "$admin_ok" = 1 ]
}
as_admin() { if can_admin; then "${admin[@]}" "$@"; else "$@"; fi; }
as_postgres() { if is_root; then runuser -u postgres -- "$@"; else "$@"; fi; }
pg_bin_dir() { # the newest installed server's bin folder, or nothing
  local found="" dir
  for dir in "$PG_LIB_DIR"/*/bin; do [ -x "$dir/pg_ctl" ] && found=$dir; done
  printf '%s' "$found"
}
pg_cluster() { # the version of the first system cluster (Debian's postgresql package makes one), or nothing
  local dir
  for dir in "$PG_ETC_DIR"/*/main; do
    if [ -d "$dir" ]; then basename "$(dirname "$dir")"; return 0; fi
  done
  return 0
}

# --- Install what is missing (apt-get, as root or with passwordless sudo) --------------------------
packages=()
if ! port_open "$REDIS_PORT" && ! need redis-server; then
  packages+=(redis-server)
  need redis-cli || packages+=(redis-tools)
fi
if ! port_open "$PG_PORT" && [ -z "$(pg_bin_dir)" ]; then
  packages+=(postgresql)
  need psql || packages+=(postgresql-client)
fi
if ! port_open "$MQTT_PORT" && ! need mosquitto; then
  packages+=(mosquitto)
  need mosquitto_sub || packages+=(mosquitto-clients)
fi
if [ "${#packages[@]}" -gt 0 ] && need apt-get && can_admin; then
  say "installing ${packages[*]} with apt-get"
  if ! as_admin apt-get update -qq ||
    ! as_admin env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${packages[@]}"; then
    say "apt-get could not install ${packages[*]}"; exit 1
  fi
  case " ${packages[*]} " in *" postgresql "*) installed_postgresql=1 ;; esac
fi

# --- Redis ---------------------------------------------------------------------------------------
if port_open "$REDIS_PORT"; then
  say "redis answers on 127.0.0.1:$REDIS_PORT"
elif need redis-server; then
  mkdir -p "$RUN_DIR/redis"
  say "starting redis-server on 127.0.0.1:$REDIS_PORT (data under $RUN_DIR/redis)"
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
    --dir "$RUN_DIR/redis" --logfile "$RUN_DIR/redis/redis.log"
  wait_for redis port_open "$REDIS_PORT"
else
  say "redis-server is not installed"; missing=1
fi

# --- PostgreSQL ----------------------------------------------------------------------------------
pg_bin=$(pg_bin_dir)
cluster=$(pg_cluster)
if [ "$installed_postgresql" = 1 ] && [ -n "$cluster" ]; then
  # The cluster the package just created: loopback connections need no password, as in the one
  # initialised under .run/ below (the package's default asks every TCP client for one).
  hba="$PG_ETC_DIR/$cluster/main/pg_hba.conf"
  say "letting 127.0.0.1 connect to the new cluster without a password ($hba)"
  rules=$(as_admin cat "$hba")
  printf 'host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n%s\n' "$rules" |
    as_admin tee "$hba" >/dev/null
  if port_open "$PG_PORT"; then as_admin pg_ctlcluster --skip-systemctl-redirect "$cluster" main reload; fi
fi
if port_open "$PG_PORT"; then
  say "postgresql answers on 127.0.0.1:$PG_PORT"
elif [ -n "$cluster" ] && need pg_ctlcluster; then
  say "starting the system postgresql cluster"
  as_admin pg_ctlcluster --skip-systemctl-redirect "$cluster" main start
  wait_for postgresql port_open "$PG_PORT"
elif [ -n "$pg_bin" ]; then
  data="$RUN_DIR/postgres"
  if [ ! -f "$data/PG_VERSION" ]; then
    say "initialising a postgresql cluster under $data"
    mkdir -p "$data"
    if is_root; then chown postgres "$data" "$RUN_DIR"; fi
    as_postgres "$pg_bin/initdb" -D "$data" -U postgres --auth=trust >/dev/null
  fi
  say "starting postgresql on 127.0.0.1:$PG_PORT (data under $data)"
  as_postgres "$pg_bin/pg_ctl" -D "$data" -l "$data/server.log" -w \
    -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -k /tmp" start >/dev/null
else
  say "postgresql is not installed"; missing=1
fi
if port_open "$PG_PORT" && need psql; then
  pg() { psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }
  if [ "$(pg -tAc "select 1 from pg_roles where rolname='root'")" != 1 ]; then
    say "creating role root"
    pg -qc "create role root superuser login"
  fi
  for db in enerlink test; do
    if [ "$(pg -tAc "select 1 from pg_database where datname='$db'")" != 1 ]; then
      say "creating database $db"
      pg -qc "create database $db"
    fi
  done
  # every test makes and drops a schema of its own: without autovacuum the catalogs' dead rows pile up
  # run after run, and each migration gets slower
  if [ "$(pg -tAc "show autovacuum")" = off ]; then
    say "autovacuum is off: vacuuming the catalogs of database test"
    pg -d test -qc "vacuum pg_catalog.pg_attribute, pg_catalog.pg_depend, pg_catalog.pg_class,
      pg_catalog.pg_type, pg_catalog.pg_constraint, pg_catalog.pg_index, pg_catalog.pg_attrdef,
      pg_catalog.pg_statistic" || say "vacuum of the catalogs failed (the tests run slower)"
  fi
fi

# --- Mosquitto -----------------------------------------------------------------------------------
if port_open "$MQTT_PORT"; then
  say "mosquitto answers on 127.0.0.1:$MQTT_PORT"
elif need mosquitto; then
  conf=$("$PYTHON" -m enerlink.devservices --port "$MQTT_PORT" --data-dir "$RUN_DIR/mosquitto")
  say "starting mosquitto on 127.0.0.1:$MQTT_PORT from mosquitto/mosquitto.conf (data under $RUN_DIR/mosquitto)"
  mosquitto -d -c "$conf"
  wait_for mosquitto port_open "$MQTT_PORT"
else
  say "mosquitto is not installed"; missing=1
fi

if [ "$missing" != 0 ]; then
  say "install what is missing with:"
  say "  $APT_LINE"
  exit 1
fi

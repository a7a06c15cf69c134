#!/bin/sh
# Give one meter its broker account: a password (mosquitto_passwd) and its ACL block.
#
#   mosquitto/add-meter.sh METER001 [PASSWORD]   # prints a generated password when none is given
#   mosquitto/add-meter.sh -r METER001           # remove the meter's account and ACL block
#
# The meter then connects with ENERLINK_MQTT_URL=mqtt://METER001:PASSWORD@broker:1883.
# With docker compose (the broker reloads both files on SIGHUP):
#   docker compose run --rm --entrypoint sh mosquitto-init /mosquitto/config/add-meter.sh METER001
#   docker compose kill -s HUP mosquitto
# On a host broker: AUTH_DIR=/etc/mosquitto/enerlink mosquitto/add-meter.sh METER001, then
# point mosquitto.conf's password_file and acl_file there and reload (systemctl reload mosquitto).
# TOPIC_PREFIX (default enerlink) must match the services' ENERLINK_TOPIC_PREFIX.
set -eu
HERE=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
. "$HERE/auth-lib.sh"

remove=0
if [ "${1:-}" = "-r" ]; then
  remove=1
  shift
fi
meter=${1:-}
if [ -z "$meter" ] || [ $# -gt 2 ]; then
  sed -n '2,9s/^# \{0,1\}//p' "$0" >&2
  exit 2
fi
# meterId rule of the payload contract: 1-64 characters of [A-Za-z0-9_.-]
if ! printf '%s' "$meter" | grep -Eq '^[A-Za-z0-9_.-]{1,64}$' || [ "${meter#enerlink-}" != "$meter" ]; then
  echo "add-meter: '$meter' is not a valid meterId (1-64 of A-Z a-z 0-9 _ . -, not enerlink-*)" >&2
  exit 2
fi

auth_prepare
auth_remove_meter_block "$meter"
if [ "$remove" = 1 ]; then
  mosquitto_passwd -D "$PASSWD_FILE" "$meter" 2>/dev/null || true
  auth_build_acl
  auth_fix_ownership
  echo "add-meter: $meter removed (reload the broker: SIGHUP)"
  exit 0
fi
password=${2:-}
generated=0
if [ -z "$password" ]; then
  password=$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')
  generated=1
fi
prefix=${TOPIC_PREFIX:-enerlink}
cat >>"$METERS_ACL" <<BLOCK
user $meter
topic write $prefix/meters/data
topic write $prefix/meters/status
topic write $prefix/meters/resent
topic write $prefix/meters/$meter/presence
topic write $prefix/meters/$meter/cmd/ack
topic read $prefix/meters/$meter/cmd
topic read $prefix/meters/$meter/confirm

BLOCK
auth_set_password "$meter" "$password"
auth_build_acl
auth_fix_ownership
echo "add-meter: $meter added (reload the broker: SIGHUP)"
if [ "$generated" = 1 ]; then
  echo "password: $password"
fi

#!/bin/sh
# Prepare the broker's authentication folder (compose's one-shot mosquitto-init job, or by hand):
#   - the services' accounts in the password file, with passwords from the environment (.env):
#     MQTT_INGEST_PASSWORD, MQTT_API_PASSWORD, MQTT_SIM_PASSWORD, MQTT_OPERATOR_PASSWORD,
#     MQTT_HEALTH_PASSWORD, MQTT_HASS_PASSWORD, MQTT_HOMEASSISTANT_PASSWORD (an unset one leaves that account as it is, or absent);
#   - the effective ACL: the acl template beside this script followed by the meters' blocks.
# Meters are added with add-meter.sh. AUTH_DIR defaults to /mosquitto/auth (the container's).
set -eu
HERE=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
. "$HERE/auth-lib.sh"

auth_prepare
for account in enerlink-ingest:MQTT_INGEST_PASSWORD enerlink-api:MQTT_API_PASSWORD \
  enerlink-sim:MQTT_SIM_PASSWORD enerlink-operator:MQTT_OPERATOR_PASSWORD \
  enerlink-health:MQTT_HEALTH_PASSWORD enerlink-hass:MQTT_HASS_PASSWORD \
  homeassistant:MQTT_HOMEASSISTANT_PASSWORD; do
  user=${account%%:*}
  var=${account#*:}
  eval "password=\${$var:-}"
  if [ -n "$password" ]; then
    auth_set_password "$user" "$password"
    echo "init-auth: $user: password set from $var"
  elif ! grep -q "^$user:" "$PASSWD_FILE"; then
    echo "init-auth: $user: no account ($var is not set; copy .env.example to .env)" >&2
  fi
done
auth_build_acl
auth_fix_ownership
echo "init-auth: $(grep -c . "$PASSWD_FILE") accounts in $PASSWD_FILE, ACL in $ACL_FILE"

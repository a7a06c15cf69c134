# Shared by init-auth.sh and add-meter.sh (POSIX sh; sourced, not run).
# AUTH_DIR holds passwd (mosquitto_passwd hashes), meters.acl (one block per meter) and acl
# (the template beside these scripts followed by meters.acl: the file the broker reads).
AUTH_DIR=${AUTH_DIR:-/mosquitto/auth}
PASSWD_FILE=$AUTH_DIR/passwd
METERS_ACL=$AUTH_DIR/meters.acl
ACL_FILE=$AUTH_DIR/acl
ACL_TEMPLATE=${ACL_TEMPLATE:-$HERE/acl}

auth_prepare() {
  mkdir -p "$AUTH_DIR"
  umask 077
  [ -f "$PASSWD_FILE" ] || : >"$PASSWD_FILE"
  [ -f "$METERS_ACL" ] || : >"$METERS_ACL"
}

auth_set_password() { # user password
  mosquitto_passwd -b "$PASSWD_FILE" "$1" "$2"
}

auth_remove_meter_block() { # user: drop its "user" block (up to the next blank line) from meters.acl
  tmp=$METERS_ACL.tmp
  awk -v user="$1" '
    $1 == "user" { skip = ($2 == user) }
    skip && NF == 0 { skip = 0; next }
    !skip { print }
  ' "$METERS_ACL" >"$tmp"
  mv "$tmp" "$METERS_ACL"
}

auth_build_acl() {
  tmp=$ACL_FILE.tmp
  {
    cat "$ACL_TEMPLATE"
    printf '\n# --- meters (add-meter.sh) ---\n\n'
    cat "$METERS_ACL"
  } >"$tmp"
  mv "$tmp" "$ACL_FILE"
}

auth_fix_ownership() { # the broker drops root for user mosquitto: let it read its files
  chmod 700 "$AUTH_DIR"
  chmod 600 "$PASSWD_FILE" "$METERS_ACL" "$ACL_FILE"
  if [ "$(id -u)" = 0 ] && id mosquitto >/dev/null 2>&1; then
    chown -R mosquitto: "$AUTH_DIR"
  fi
}

#!/usr/bin/env bash
# Install the EnerLink edge on a Raspberry Pi (Raspberry Pi OS / Debian, run as root):
#   sudo ./install.sh --meter-id METER001 --broker-url mqtts://broker.example:8883 \
#        --username METER001 --password '...' --timezone Asia/Jakarta
# Missing values are asked for when a terminal is attached. What it does:
#   1. enables I2C (raspi-config, or dtparam=i2c_arm=on + i2c-dev) if /dev/i2c-1 is missing;
#   2. creates the system user `enerlink` (groups i2c, gpio);
#   3. creates a virtual environment in /opt/enerlink/venv and installs enerlink[edge] + gpiod;
#   4. writes /etc/enerlink/edge.env (0640 root:enerlink) from the template next to this script;
#   5. installs and starts enerlink-edge.service (Restart=always, watchdog, journald).
# --dry-run prints the commands instead of running them and writes files under --root (default:
# a new temporary directory), so the result can be inspected without touching the system.
set -euo pipefail
shopt -u patsub_replacement 2>/dev/null || true

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PREFIX=/opt/enerlink
SERVICE_USER=enerlink
METER_ID=""
BROKER_URL=""
MQTT_USERNAME=""
MQTT_PASSWORD=""
TIMEZONE=""
INTERVAL=5
EMULATE=false
SOURCE=""
ROOT=""
DRY_RUN=0
ASSUME_YES=0
START=1

usage() {
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
    cat <<'USAGE'
Options:
  --meter-id ID        meter id (1-64 of A-Z a-z 0-9 _ . -)          [required]
  --broker-url URL     mqtt://host:1883 or mqtts://host:8883          [mqtt://127.0.0.1:1883]
  --username NAME      MQTT user name (put into the URL)
  --password SECRET    MQTT password (or --password-file FILE)
  --timezone TZ        for the daily counters' midnight               [this machine's, else UTC]
  --interval SECONDS   seconds between data messages                  [5]
  --emulate            emulated sensors (no I2C hardware needed)
  --source SPEC        what pip installs, e.g. a checkout or a wheel  [the checkout holding this script]
  --prefix DIR         install directory                              [/opt/enerlink]
  --user NAME          service user                                   [enerlink]
  --root DIR           write files under DIR instead of /
  --dry-run            print commands, write files under --root (temporary directory by default)
  --no-start           install but do not enable/start the service
  -y, --yes            never prompt; fail if a required value is missing
  -h, --help           this help
USAGE
}

die() { echo "install.sh: $*" >&2; exit 2; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --meter-id) METER_ID="${2:?}"; shift 2 ;;
        --broker-url) BROKER_URL="${2:?}"; shift 2 ;;
        --username) MQTT_USERNAME="${2:?}"; shift 2 ;;
        --password) MQTT_PASSWORD="${2:?}"; shift 2 ;;
        --password-file) MQTT_PASSWORD="$(<"${2:?}")"; shift 2 ;;
        --timezone) TIMEZONE="${2:?}"; shift 2 ;;
        --interval) INTERVAL="${2:?}"; shift 2 ;;
        --emulate) EMULATE=true; shift ;;
        --source) SOURCE="${2:?}"; shift 2 ;;
        --prefix) PREFIX="${2:?}"; shift 2 ;;
        --user) SERVICE_USER="${2:?}"; shift 2 ;;
        --root) ROOT="${2:?}"; shift 2 ;;
        --dry-run) DRY_RUN=1; shift ;;
        --no-start) START=0; shift ;;
        -y|--yes) ASSUME_YES=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option: $1 (see --help)" ;;
    esac
done

if [[ $DRY_RUN -eq 1 && -z "$ROOT" ]]; then
    ROOT="$(mktemp -d -t enerlink-install.XXXXXX)"
fi
ROOT="${ROOT%/}"
if [[ $DRY_RUN -eq 0 && -z "$ROOT" && $EUID -ne 0 ]]; then
    die "run as root (sudo), or try --dry-run"
fi

# run CMD...: execute, or only print it in a dry run.
run() {
    if [[ $DRY_RUN -eq 1 ]]; then
        printf '+'; printf ' %q' "$@"; printf '\n'
    else
        "$@"
    fi
}

ask() {  # ask VAR "question" [default]
    local var="$1" question="$2" default="${3:-}" answer
    if [[ -n "${!var}" ]]; then return 0; fi
    if [[ $ASSUME_YES -eq 0 && -t 0 ]]; then
        read -r -p "$question${default:+ [$default]}: " answer
        printf -v "$var" '%s' "${answer:-$default}"
    else
        printf -v "$var" '%s' "$default"
    fi
}

ask METER_ID "Meter id"
ask BROKER_URL "Broker URL" "mqtt://127.0.0.1:1883"
ask MQTT_USERNAME "MQTT user name (empty: none)" "$METER_ID"
if [[ -n "$MQTT_USERNAME" && -z "$MQTT_PASSWORD" && $ASSUME_YES -eq 0 && -t 0 ]]; then
    read -r -s -p "MQTT password: " MQTT_PASSWORD; echo
fi
DEFAULT_TZ="$(cat /etc/timezone 2>/dev/null || true)"
ask TIMEZONE "Time zone" "${DEFAULT_TZ:-UTC}"

[[ "$METER_ID" =~ ^[A-Za-z0-9_.-]{1,64}$ ]] || die "meter id '$METER_ID' must be 1-64 characters of A-Z a-z 0-9 _ . -"
[[ "$BROKER_URL" =~ ^mqtts?://[^/[:space:]]+$ ]] || die "broker URL '$BROKER_URL' must look like mqtt://host:port"
[[ "$INTERVAL" =~ ^[0-9]+([.][0-9]+)?$ ]] || die "interval '$INTERVAL' is not a number of seconds"
[[ "$SERVICE_USER" =~ ^[a-z_][a-z0-9_-]*$ ]] || die "bad user name '$SERVICE_USER'"
if [[ ! -e "/usr/share/zoneinfo/$TIMEZONE" && "$TIMEZONE" != "UTC" ]]; then
    die "unknown time zone '$TIMEZONE' (see timedatectl list-timezones)"
fi

urlencode() { python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$1"; }

MQTT_URL="$BROKER_URL"
if [[ -n "$MQTT_USERNAME" ]]; then
    scheme="${BROKER_URL%%://*}"
    hostport="${BROKER_URL#*://}"
    hostport="${hostport#*@}"
    credentials="$(urlencode "$MQTT_USERNAME")"
    if [[ -n "$MQTT_PASSWORD" ]]; then
        credentials="$credentials:$(urlencode "$MQTT_PASSWORD")"
    fi
    MQTT_URL="$scheme://$credentials@$hostport"
fi

if [[ -z "$SOURCE" ]]; then
    if [[ -f "$HERE/../../pyproject.toml" ]]; then
        SOURCE="$(cd "$HERE/../.." && pwd)"
    else
        SOURCE="enerlink"
    fi
fi

echo "==> EnerLink edge for meter $METER_ID -> ${BROKER_URL} (tz $TIMEZONE)${ROOT:+, files under $ROOT}"

# 1. I2C
if [[ "$EMULATE" == "true" ]]; then
    echo "==> emulated sensors: I2C left as it is"
elif [[ -e /dev/i2c-1 ]]; then
    echo "==> I2C already enabled (/dev/i2c-1)"
elif command -v raspi-config >/dev/null 2>&1; then
    echo "==> enabling I2C with raspi-config (takes effect now; survives reboots)"
    run raspi-config nonint do_i2c 0
else
    BOOT_CONFIG="$ROOT/boot/firmware/config.txt"
    [[ -f "$BOOT_CONFIG" ]] || BOOT_CONFIG="$ROOT/boot/config.txt"
    if [[ -f "$BOOT_CONFIG" ]] && ! grep -q '^dtparam=i2c_arm=on' "$BOOT_CONFIG"; then
        echo "==> enabling I2C in $BOOT_CONFIG (reboot needed)"
        if [[ $DRY_RUN -eq 1 && -z "$ROOT" ]]; then
            echo "+ echo dtparam=i2c_arm=on >> $BOOT_CONFIG"
        else
            echo "dtparam=i2c_arm=on" >>"$BOOT_CONFIG"
        fi
    fi
    mkdir -p "$ROOT/etc/modules-load.d"
    echo "i2c-dev" >"$ROOT/etc/modules-load.d/enerlink-i2c.conf"
    run modprobe i2c-dev || echo "    (modprobe i2c-dev failed: it loads at the next boot)"
fi

# 2. System user
if id "$SERVICE_USER" >/dev/null 2>&1; then
    echo "==> user $SERVICE_USER exists"
else
    echo "==> creating system user $SERVICE_USER"
    run useradd --system --home-dir /var/lib/enerlink --no-create-home --shell /usr/sbin/nologin "$SERVICE_USER"
fi
for group in i2c gpio; do
    if getent group "$group" >/dev/null 2>&1; then
        run usermod -a -G "$group" "$SERVICE_USER"
    fi
done

# 3. Virtual environment and the package
echo "==> installing enerlink[edge] into $PREFIX/venv from $SOURCE"
run mkdir -p "$ROOT$PREFIX"
run python3 -m venv "$ROOT$PREFIX/venv"
run "$ROOT$PREFIX/venv/bin/pip" install --upgrade pip
run "$ROOT$PREFIX/venv/bin/pip" install "${SOURCE}[edge]" "gpiod>=2"

# 4. Settings
ENV_DIR="$ROOT/etc/enerlink"
ENV_FILE="$ENV_DIR/edge.env"
echo "==> writing $ENV_FILE"
mkdir -p "$ENV_DIR"
template="$(<"$HERE/edge.env.template")"
template="${template//@METER_ID@/$METER_ID}"
template="${template//@MQTT_URL@/$MQTT_URL}"
template="${template//@TIMEZONE@/$TIMEZONE}"
template="${template//@INTERVAL@/$INTERVAL}"
template="${template//@EMULATE@/$EMULATE}"
(umask 027 && printf '%s\n' "$template" >"$ENV_FILE")
chmod 0640 "$ENV_FILE"
if [[ -z "$ROOT" ]]; then
    run chown "root:$SERVICE_USER" "$ENV_FILE"
fi

# 5. systemd unit
UNIT_DIR="$ROOT/etc/systemd/system"
UNIT_FILE="$UNIT_DIR/enerlink-edge.service"
echo "==> installing $UNIT_FILE"
mkdir -p "$UNIT_DIR"
unit="$(<"$HERE/enerlink-edge.service")"
unit="${unit//\/opt\/enerlink/$PREFIX}"
unit="${unit//User=enerlink/User=$SERVICE_USER}"
unit="${unit//Group=enerlink/Group=$SERVICE_USER}"
printf '%s\n' "$unit" >"$UNIT_FILE"
chmod 0644 "$UNIT_FILE"
run systemctl daemon-reload
if [[ $START -eq 1 ]]; then
    run systemctl enable --now enerlink-edge.service
fi

echo "==> done. Check it with:"
echo "    $PREFIX/venv/bin/python -m enerlink.edge.doctor      # I2C, sensors, broker, clock"
echo "    journalctl -u enerlink-edge -f"

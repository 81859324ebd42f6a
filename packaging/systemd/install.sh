#!/usr/bin/env bash
# Install StoreSight as a systemd service from a wheel (docs/install.md):
#   sudo packaging/systemd/install.sh --wheel dist/storesight-0.1.0-py3-none-any.whl [--models-from DIR]
# - a system user `storesight` (no login, home /var/lib/storesight);
# - a virtual environment in /opt/storesight/venv with the wheel and its `embedded` extra (the embedded Triton);
# - /etc/storesight/storesight.yaml (a starting config, never overwritten) readable by the service only;
# - /var/lib/storesight for the database, evidence and the model repository (`storesight models fetch` as the
#   service user: from --models-from DIR / $STORESIGHT_MODELS_DIR, else downloaded and sha256-checked);
# - /etc/systemd/system/storesight.service, then `systemctl daemon-reload` (enable it yourself once the config is
#   right: `systemctl enable --now storesight`).
# Safe to run again for an upgrade: the venv is refreshed, the config and the data are kept.
#
# --root DIR installs the same tree under DIR instead of / (the tests do this, and `systemd-analyze verify --root`
# reads it): no user is created, files stay owned by whoever runs the script, and systemctl is not called.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

wheel="" root="" models_from="${STORESIGHT_MODELS_DIR:-}" extras="embedded" python="${PYTHON:-python3}"
while [ $# -gt 0 ]; do
  case "$1" in
    --wheel) wheel="$2"; shift 2 ;;
    --root) root="$2"; shift 2 ;;
    --models-from) models_from="$2"; shift 2 ;;
    --extras) extras="$2"; shift 2 ;;  # "embedded" (default), or "models" with an external Triton
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$wheel" ] || { echo "install.sh: --wheel FILE is required (packaging/scripts/build_wheel.sh builds one)" >&2; exit 2; }
[ -f "$wheel" ] || { echo "install.sh: no such wheel: $wheel" >&2; exit 2; }
wheel="$(cd "$(dirname "$wheel")" && pwd)/$(basename "$wheel")"
if [ -z "$root" ] && [ "$(id -u)" -ne 0 ]; then
  echo "install.sh: run as root (or with --root DIR for a staging tree)" >&2; exit 2
fi

user=storesight
prefix="$root/opt/storesight"
confdir="$root/etc/storesight"
datadir="$root/var/lib/storesight"
unitdir="$root/etc/systemd/system"

if [ -z "$root" ] && ! id -u "$user" >/dev/null 2>&1; then
  echo "install.sh: creating system user $user"
  useradd --system --user-group --home-dir /var/lib/storesight --no-create-home --shell /usr/sbin/nologin "$user"
fi
as_service() {  # run a command as the service user (the staging tree: as whoever runs this)
  if [ -z "$root" ]; then runuser -u "$user" -- "$@"; else "$@"; fi
}

echo "install.sh: virtual environment in $prefix/venv"
mkdir -p "$prefix"
[ -x "$prefix/venv/bin/python" ] || "$python" -m venv "$prefix/venv"
"$prefix/venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade "${wheel}[${extras}]"

install -d -m 0750 "$confdir" "$datadir"
if [ -z "$root" ]; then
  chown root:"$user" "$confdir"
  chown "$user:$user" "$datadir"
fi
if [ ! -f "$confdir/storesight.yaml" ]; then
  install -m 0640 "$here/storesight.yaml" "$confdir/storesight.yaml"
  if [ -z "$root" ]; then chown root:"$user" "$confdir/storesight.yaml"; fi
  echo "install.sh: wrote $confdir/storesight.yaml: edit it, then check it with storesight check-config"
fi

echo "install.sh: models into $datadir/triton_models/cpu"
fetch=("$prefix/venv/bin/storesight" models fetch)
[ -n "$models_from" ] && fetch+=(--from "$models_from")
(cd "$datadir" && as_service env STORESIGHT_DATA_DIR="$datadir" "${fetch[@]}")

install -d "$unitdir"
install -m 0644 "$here/storesight.service" "$unitdir/storesight.service"
if [ -z "$root" ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  echo "install.sh: done; start it with: systemctl enable --now storesight"
else
  echo "install.sh: done (installed under ${root:-/}; systemd not reloaded)"
fi

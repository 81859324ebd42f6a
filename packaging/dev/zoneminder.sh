#!/usr/bin/env bash
# A real ZoneMinder (Debian 12's 1.36) on 127.0.0.1 for tests and demos of the ZoneMinder sink: installs
# zoneminder, MariaDB and Apache, configures them, starts MariaDB, Apache and zmpkg, and prints
# `READY http://127.0.0.1:PORT/zm` once `GET /zm/api/host/getVersion.json` answers. Each service it had to start
# is printed as `STARTED mariadb`, `STARTED apache`, `STARTED zoneminder` the moment it starts (so a caller knows
# what to stop even when a later step fails).
#
#   zoneminder.sh              set up and start (the default; also `zoneminder.sh start`)
#   zoneminder.sh stop [SVC]   stop ZoneMinder's daemons, Apache, MariaDB (in that order), or only the services
#                              named (zoneminder, apache, mariadb): what a start printed, so that services running
#                              before it are left running; it returns once their processes are gone
#
# Root or sudo. Safe to run again: each step skips what is done, and a running ZoneMinder is left running.
# Environment: ZM_PORT (default 18081, Apache listens on 127.0.0.1 only), ZM_READY_TIMEOUT_S (default 60).
# A lab rig, not a hardened install: the API user is ZoneMinder's stock admin/admin (loopback only), with
# authentication and API tokens turned on so the sink's login, token and wrong-password paths are exercised.
set -euo pipefail

PORT=${ZM_PORT:-18081}
READY_TIMEOUT_S=${ZM_READY_TIMEOUT_S:-60}
BASE="http://127.0.0.1:${PORT}/zm"
PKGS=(zoneminder mariadb-server apache2 libapache2-mod-php curl)
MODE=${1:-start}
case "$MODE" in
  start | stop) ;;
  *)
    echo "usage: zoneminder.sh [start | stop [zoneminder] [apache] [mariadb]]" >&2
    exit 2
    ;;
esac

if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null; then
    echo "zoneminder.sh: needs root (or sudo)" >&2
    exit 1
  fi
  exec sudo -n env "ZM_PORT=$PORT" "ZM_READY_TIMEOUT_S=$READY_TIMEOUT_S" "$0" "$@"
fi

say() { echo "zoneminder.sh: $*" >&2; }
started() { echo "STARTED $1"; }
# until no process of that command line is left, at most STOP_TIMEOUT_S (default 30)
wait_gone() {
  local deadline=$((SECONDS + ${STOP_TIMEOUT_S:-30}))
  while pgrep -f "$1" >/dev/null; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      say "still running after stop: $(pgrep -af "$1" | tr '\n' ';')"
      return 1
    fi
    sleep 0.2
  done
}

if [ "$MODE" = stop ]; then
  shift
  services=("$@")
  [ "${#services[@]}" -gt 0 ] || services=(zoneminder apache mariadb)
  want() { printf '%s\n' "${services[@]}" | grep -qx "$1"; }
  for s in "${services[@]}"; do
    case "$s" in
      zoneminder | apache | mariadb) ;;
      *)
        say "stop: unknown service '$s' (zoneminder, apache or mariadb)"
        exit 2
        ;;
    esac
  done
  rc=0
  # the daemons first (they hold database connections), then the web server, then the database
  if want zoneminder; then
    say "stopping ZoneMinder's daemons"
    if [ -d /run/systemd/system ]; then systemctl stop zoneminder; else runuser -u www-data -- zmpkg.pl stop >/dev/null || true; fi
    wait_gone '/usr/bin/zm[a-z]*\.pl' || rc=1
    wait_gone '/usr/bin/zmc ' || rc=1
  fi
  if want apache; then
    say "stopping Apache"
    apache2ctl stop 2>/dev/null || true
    wait_gone '/usr/sbin/apache2' || rc=1
  fi
  if want mariadb; then
    say "stopping MariaDB"
    if command -v service >/dev/null; then service mariadb stop >/dev/null; else /etc/init.d/mariadb stop >/dev/null; fi
    wait_gone '/usr/sbin/mariadbd' || rc=1
    wait_gone 'mysqld_safe' || rc=1
  fi
  exit "$rc"
fi
# The API answers: 200, or 401 when authentication is on and no token is given (it is then up all the same).
api_up() {
  local code
  code=$(curl -s -m 5 -o /dev/null -w '%{http_code}' "$BASE/api/host/getVersion.json" 2>/dev/null || true)
  [ "$code" = 200 ] || [ "$code" = 401 ]
}
t0=$SECONDS

# --- 1. packages ---------------------------------------------------------------------------------------------
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing ${missing[*]} (about half a minute)"
  # Keep the packages' maintainer scripts from starting Apache on 0.0.0.0:80 (or MariaDB) during the install:
  # invoke-rc.d asks policy-rc.d, and 101 means "do not start". A container may already ship one: keep it.
  own_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    own_policy=1
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  if [ "$own_policy" = 1 ]; then
    rm -f /usr/sbin/policy-rc.d
    trap - EXIT
  fi
fi

# --- 2. MariaDB, the zm database and its user (fix 1) --------------------------------------------------------
if ! mariadb-admin ping >/dev/null 2>&1; then
  say "starting MariaDB"
  if command -v service >/dev/null; then service mariadb start >/dev/null; else /etc/init.d/mariadb start >/dev/null; fi
  started mariadb
fi
# zm.conf, then conf.d/*.conf override it, as ZoneMinder itself reads them
zm_conf() {
  local v
  v=$(cat /etc/zm/zm.conf /etc/zm/conf.d/*.conf 2>/dev/null | sed -n "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*//p" | tail -n1)
  echo "${v:-$2}"
}
DB_NAME=$(zm_conf ZM_DB_NAME zm)
DB_USER=$(zm_conf ZM_DB_USER zmuser)
DB_PASS=$(zm_conf ZM_DB_PASS zmpass)
sql() { mariadb -N -B "$@"; }
if ! sql -e "SELECT 1 FROM \`$DB_NAME\`.Config LIMIT 1" >/dev/null 2>&1; then
  say "creating the ZoneMinder database"
  # zm_create.sql sources triggers.sql: only the mariadb client understands that, so it goes through stdin
  sql </usr/share/zoneminder/db/zm_create.sql
fi
sql <<SQL
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
ALTER USER '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL PRIVILEGES ON \`$DB_NAME\`.* TO '$DB_USER'@'localhost';
FLUSH PRIVILEGES;
SQL
# Authentication on (so tokens are issued: they need a hash secret), the API on. A secret, once made, is kept:
# changing it would invalidate every token a running sink holds.
secret=$(sql -e "SELECT Value FROM \`$DB_NAME\`.Config WHERE Name='ZM_AUTH_HASH_SECRET'")
if [ -z "$secret" ] || [ "$secret" = "...Change me to something unique..." ]; then
  secret=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
fi
sql <<SQL
UPDATE \`$DB_NAME\`.Config SET Value='1' WHERE Name IN ('ZM_OPT_USE_AUTH', 'ZM_OPT_USE_API');
UPDATE \`$DB_NAME\`.Config SET Value='$secret' WHERE Name='ZM_AUTH_HASH_SECRET';
UPDATE \`$DB_NAME\`.Config SET Value='UTC' WHERE Name='ZM_TIMEZONE' AND Value='';
UPDATE \`$DB_NAME\`.Users SET APIEnabled=1 WHERE Username='admin';
-- off by default already; kept off explicitly: nothing here may reach beyond this machine
UPDATE \`$DB_NAME\`.Config SET Value='0' WHERE Name IN ('ZM_TELEMETRY_DATA', 'ZM_CHECK_FOR_UPDATES');
SQL

# --- 3. files the web server must read or write (fix 2) ------------------------------------------------------
# /zm/ answers 500 when www-data cannot read zm.conf (it holds the database password, so not world-readable)
chgrp www-data /etc/zm/zm.conf /etc/zm/conf.d/*.conf
chmod 640 /etc/zm/zm.conf /etc/zm/conf.d/*.conf
for d in /run/zm /tmp/zm /var/cache/zoneminder /var/cache/zoneminder/temp /var/cache/zoneminder/events \
  /var/cache/zoneminder/images /var/cache/zoneminder/cache /var/log/zm; do
  install -d -o www-data -g www-data -m 755 "$d"
done

# --- 4. Apache: API rewrites (fix 3), modules and bind address (fix 4) ---------------------------------------
# Debian ships ZoneMinder's CakePHP API without the rewrite rules upstream keeps in .htaccess files: without them
# every /zm/api URL is a 404. The API's own directory already has AllowOverride All; these are the same routes
# written as server config, so nothing is added to the package's own directories.
cat >/etc/apache2/conf-available/zoneminder-api.conf <<'CONF'
# Routes /zm/api/... to the CakePHP front controller (written by packaging/dev/zoneminder.sh).
<Directory /usr/share/zoneminder/www/api>
    RewriteEngine On
    RewriteBase /zm/api
    RewriteRule ^$ app/webroot/ [L]
    RewriteRule ^(.*)$ app/webroot/$1 [L]
</Directory>
<Directory /usr/share/zoneminder/www/api/app>
    RewriteEngine On
    RewriteBase /zm/api
    RewriteRule ^$ webroot/ [L]
    RewriteRule ^(.*)$ webroot/$1 [L]
</Directory>
<Directory /usr/share/zoneminder/www/api/app/webroot>
    RewriteEngine On
    RewriteBase /zm/api
    RewriteCond %{REQUEST_FILENAME} !-d
    RewriteCond %{REQUEST_FILENAME} !-f
    RewriteRule ^ index.php [QSA,L]
</Directory>
CONF
# Only loopback, on one port: nothing else on this machine (or beyond it) gets a listener.
printf '# written by packaging/dev/zoneminder.sh: ZoneMinder test rig, loopback only\nListen 127.0.0.1:%s\n' "$PORT" \
  >/etc/apache2/ports.conf
echo "ServerName 127.0.0.1" >/etc/apache2/conf-available/servername.conf
a2enmod -q cgi rewrite headers expires >/dev/null
a2enconf -q zoneminder zoneminder-api servername >/dev/null
apache2ctl configtest >/dev/null 2>&1 || { apache2ctl configtest; exit 1; }
pidfile=/var/run/apache2/apache2.pid
if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  # graceful: picks up a changed port or rules without dropping requests in flight
  apache2ctl graceful
else
  say "starting Apache on 127.0.0.1:$PORT"
  apache2ctl start
  started apache
fi

# --- 5. ZoneMinder's daemons ---------------------------------------------------------------------------------
if ! runuser -u www-data -- zmdc.pl check 2>/dev/null | grep -q running; then
  say "starting ZoneMinder (zmpkg.pl)"
  if [ -d /run/systemd/system ]; then
    # under systemd, zmpkg.pl hands "start" to systemctl itself (through sudo, as www-data): ask systemd directly
    systemctl start zoneminder
  else
    runuser -u www-data -- zmpkg.pl start >/dev/null
  fi
  started zoneminder
fi

deadline=$((SECONDS + READY_TIMEOUT_S))
until api_up; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    say "no answer from $BASE/api/host/getVersion.json after ${READY_TIMEOUT_S}s"
    curl -sS -m 5 "$BASE/api/host/getVersion.json" >&2 || true
    exit 1
  fi
  sleep 0.5
done
say "up in $((SECONDS - t0)) s"
echo "READY $BASE"

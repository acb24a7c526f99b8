#!/usr/bin/env bash
# Debian packages the tests use: pebble (ACME), curl, openssl, python3; a C toolchain for the native addon;
# redis-server (the fleet store's tests start their own instance on a loopback port; the package's own service,
# where it starts, is left alone);
# haproxy and nginx (deploy/ configs), systemd's systemd-analyze (deploy/*.service; works without systemd running).
# In a container apt's policy-rc.d keeps the haproxy and nginx services from starting; on a machine that runs
# systemd their packages start them (nginx then listens on port 80: `systemctl disable --now nginx haproxy`).
set -euo pipefail
need=()
# haproxy and nginx live in /usr/sbin, which is not on every user's PATH
have() { command -v "$1" >/dev/null || [ -x "/usr/sbin/$1" ]; }
have haproxy || need+=(haproxy)
have nginx || need+=(nginx)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v pebble >/dev/null || need+=(pebble)
command -v curl >/dev/null || need+=(curl)
command -v openssl >/dev/null || need+=(openssl)
command -v python3 >/dev/null || need+=(python3)
command -v redis-server >/dev/null || need+=(redis-server)
command -v make >/dev/null || need+=(make)
command -v g++ >/dev/null || need+=(g++)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing: ${need[*]} (install them with apt-get as root)" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi

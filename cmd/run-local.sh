#!/usr/bin/env bash
# The main job on a working default, all on loopback:
#   wsserver  on 127.0.0.1:9999 (path /ws, password "hello")
#   wsclient  SOCKS5 on 127.0.0.1:1080 (TCP and UDP), HTTP proxy on 127.0.0.1:8080
# Ctrl-C stops both. Override with PASSWORD, SERVER_LISTEN, SOCKS5, HTTP_PROXY_LISTEN.
set -euo pipefail
cd "$(dirname "$0")/.."
PASSWORD=${PASSWORD:-hello}
SERVER_LISTEN=${SERVER_LISTEN:-127.0.0.1:9999}
SOCKS5=${SOCKS5:-127.0.0.1:1080}
HTTP_PROXY_LISTEN=${HTTP_PROXY_LISTEN:-127.0.0.1:8080}
node dist/cmd/brook-ts.js wsserver --listen "$SERVER_LISTEN" --password "$PASSWORD" &
server=$!
trap 'kill $server ${client:-} 2>/dev/null; wait 2>/dev/null' EXIT INT TERM
sleep 0.5
node dist/cmd/brook-ts.js wsclient --wsserver "ws://$SERVER_LISTEN" --password "$PASSWORD" \
  --socks5 "$SOCKS5" --http "$HTTP_PROXY_LISTEN" &
client=$!
sleep 0.5
echo "ready: curl --socks5-hostname $SOCKS5 http://example.com/   (or --proxy http://$HTTP_PROXY_LISTEN)"
wait

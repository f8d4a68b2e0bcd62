#!/bin/bash
# Stand-in for Kafka's kafka-broker-api-versions.sh, only as the compose
# healthcheck uses it: `--bootstrap-server HOST:PORT` exits 0 once the broker
# answers a Metadata (v4) request listing a live broker (the tools jar is not
# among the broker's runtime jars). Same probe as scripts/kafka.sh.
set -euo pipefail
server=localhost:9092
while [ $# -gt 0 ]; do
    case "$1" in --bootstrap-server) server="$2"; shift 2 ;; *) shift ;; esac
done
host="${server%:*}" port="${server##*:}"
exec 3<>"/dev/tcp/$host/$port"
# size 20 | api_key 3 | version 4 | correlation_id | client_id "probe" | topics null | no auto-create
printf '\x00\x00\x00\x14\x00\x03\x00\x04\x7e\x57\xab\x1e\x00\x05probe\xff\xff\xff\xff\x00' >&3
hex="$(timeout 5 head -c 16 <&3 | od -An -tx1 | tr -d ' \n')"
[[ ${#hex} -eq 32 && ${hex:8:8} == 7e57ab1e && ${hex:24:8} != 00000000 ]] \
    || { echo "broker at $server does not answer Metadata with a live broker" >&2; exit 1; }
echo "broker at $server is up"

#!/usr/bin/env bash
# Two dari nodes (PostgreSQL + Redis) behind HAProxy on loopback, then dari bench against the LB.
set -euo pipefail
V=${V:-$PWD/.venv/bin}     # run from the repository root
D=$(mktemp -d /tmp/twonode.XXXX); cd "$D"
SCHEMA=dari_twonode_$RANDOM
psql -h 127.0.0.1 -U postgres -d test -qc "CREATE SCHEMA $SCHEMA"
PG="postgresql://postgres@127.0.0.1:5432/test?options=-csearch_path%3D$SCHEMA,public"
export DARI_ARGON2_TIME_COST=1 DARI_ARGON2_MEMORY_KIB=8192 DARI_RATE_PER_S=1000000 DARI_RATE_BURST=1000000 DARI_LOG_LEVEL=warning
rm -rf n1 n2; mkdir n1 n2
$V/dari serve --host 127.0.0.1 --port 8101 --data-dir n1 --database "$PG" --bus redis://127.0.0.1:6379/0 > n1.log 2>&1 & P1=$!
sleep 3
P2=
if [[ "${NODES:-2}" == 2 ]]; then   # NODES=1: the same with one node behind the balancer, for comparison
  $V/dari serve --host 127.0.0.1 --port 8102 --data-dir n2 --database "$PG" --bus redis://127.0.0.1:6379/0 > n2.log 2>&1 & P2=$!
fi
cat > lb.cfg <<CFG
global
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout tunnel 1h
frontend dari
  bind 127.0.0.1:8100
  default_backend nodes
backend nodes
  balance roundrobin
  server n1 127.0.0.1:8101 check
$([[ -n "$P2" ]] && echo "  server n2 127.0.0.1:8102 check")
CFG
haproxy -f lb.cfg -db > lb.log 2>&1 & LB=$!
sleep 3
trap 'kill $P1 $P2 $LB 2>/dev/null; psql -h 127.0.0.1 -U postgres -d test -qc "SET client_min_messages = warning; DROP SCHEMA $SCHEMA CASCADE"' EXIT
uptime
$V/dari bench --server http://127.0.0.1:8100 "$@" --json > out.json 2> bench.err || true
uptime
python3 -c "
import json; d=json.load(open('out.json'))
for n, r in d['scenarios'].items(): print(n, {k: r.get(k) for k in ('messages_per_s','deliveries_per_s','p50_ms','p99_ms','lost','duplicated','client_cpu_pct','error')})"
grep -c . n1.log n2.log 2>/dev/null || true

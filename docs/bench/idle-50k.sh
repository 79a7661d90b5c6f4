#!/usr/bin/env bash
# 50,000 idle authenticated WebSockets on one machine whose processes may hold at most 20,000 open
# files each: `dari serve --workers 3` (SO_REUSEPORT, Redis bus) and three load-generator processes.
set -euo pipefail
V=${V:-$PWD/.venv/bin}
D=$(mktemp -d /tmp/idle50k.XXXX)
PORT=8201
export DARI_ARGON2_TIME_COST=1 DARI_ARGON2_MEMORY_KIB=8192 DARI_RATE_PER_S=1000000 DARI_RATE_BURST=1000000 DARI_LOG_LEVEL=warning
redis-cli -n 5 flushdb >/dev/null
$V/dari serve --host 127.0.0.1 --port $PORT --data-dir $D --workers 3 --bus redis://127.0.0.1:6379/5 > $D/serve.log 2>&1 & SP=$!
trap 'kill $SP 2>/dev/null; wait $SP 2>/dev/null' EXIT
for i in $(seq 60); do curl -sf http://127.0.0.1:$PORT/healthz >/dev/null && break; sleep 0.5; done
sleep 2
pids() { echo $SP $(pgrep -P $SP); }
rss() { local t=0; for p in $(pids); do t=$((t + $(awk '/VmRSS/{print $2}' /proc/$p/status))); done; echo $t; }
echo "server pids: $(pids)"
# Warm-up: sign-ups (argon2 grows the allocator's arenas once) and a few connections, then closed.
for g in 1 2 3; do
  $V/dari bench --server http://127.0.0.1:$PORT --scenario idle-connections --connections 300 --users 30 \
    --duration 0.5 --bind 127.0.0.$((g + 1)) --json > /dev/null 2>&1 &
done
wait $(jobs -p | grep -v "^$SP$") 2>/dev/null || true
sleep 3
B=$(rss); echo "server RSS before (after warm-up): $B KB"
for g in 1 2 3; do
  $V/dari bench --server http://127.0.0.1:$PORT --scenario idle-connections --connections 16667 --users 30 \
    --duration 40 --bind 127.0.0.$((g + 1)) --json > $D/gen$g.json 2> $D/gen$g.err &
done
peak=0; conns=0
for i in $(seq 120); do
  sleep 1
  c=$(ss -Htn state established "( sport = :$PORT )" | wc -l)
  r=$(rss)
  if [ "$c" -ge "$conns" ]; then conns=$c; fi
  if [ "$r" -gt "$peak" ]; then peak=$r; fi
  if [ "$c" -ge 50000 ]; then sleep 5; c=$(ss -Htn state established "( sport = :$PORT )" | wc -l); r=$(rss); echo "held: $c connections, server RSS $r KB"; break; fi
done
echo "most connections seen: $conns; server RSS peak $peak KB"
echo "per connection: $(( (r - B) / c )) KB (at $c connections: $(python3 -c "print(round(($r - $B) / $c, 2))") KB)"
for p in $(pids); do echo "pid $p: $(awk '/VmRSS/{print $2}' /proc/$p/status) KB, $(ls /proc/$p/fd | wc -l) fds"; done
wait $(jobs -p | grep -v "^$SP$") 2>/dev/null || true
for g in 1 2 3; do python3 -c "
import json; d=json.load(open('$D/gen$g.json'))['scenarios']['idle-connections']; print('gen$g', {k: d.get(k) for k in ('connections','connects_per_s','connect_p99_ms','disconnects','client_rss_mb','error')})"; done

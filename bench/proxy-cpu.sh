#!/usr/bin/env bash
# Where a pooler's CPU goes, per transaction: the same pgbench run (select-only unless told
# otherwise; transaction pooling, primary only) through PgBouncer and through Meridian's data-plane thread, reporting
# each one's CPU time per transaction (the scheduler's nanosecond count) and its user and
# system parts (10 ms ticks: a coarse split) from /proc, without tracing, then the
# system calls per transaction (a second, traced run: strace -c slows it, so its times are not
# used). Both poolers are measured the same way on one cluster, in ABBA order (PgBouncer,
# Meridian, Meridian, PgBouncer) so that a drift over the run favours neither.
#
# usage: bench/proxy-cpu.sh [pgbench args]   (default -S; env: TX=5000 transactions per
#        client, CLIENTS=8, SCALE=10)
#        TX=1000 bench/proxy-cpu.sh -b tpcb-like   (TPC-B-like transactions)
set -euo pipefail
cd "$(dirname "$0")/.."

TX=${TX:-5000}
CLIENTS=${CLIENTS:-8}
[ $# -gt 0 ] || set -- -S
for tool in pgbench strace; do
  command -v "$tool" >/dev/null || { echo "$tool is not installed (apt-get install -y pgbouncer postgresql strace)" >&2; exit 1; }
done

. bench/lib.sh
bench_setup cpu
start_primary "${SCALE:-10}"
start_pgbouncer "$pg_port" 20
meridian_config "$work/meridian.toml" "$pg_port" 20
MERIDIAN_LOG=warn "$target/meridian" run -c "$work/meridian.toml" > "$work/meridian.log" 2>&1 &
meridian_pid=$!
pids+=($meridian_pid)
wait_port "$meridian_port"

# The process (PgBouncer) or thread (Meridian's data plane) doing the pooling.
bouncer_task=/proc/$bouncer_pid
meridian_task=$(for t in /proc/$meridian_pid/task/*; do [ "$(cat "$t/comm")" = meridian-proxy ] && echo "$t"; done)
ticks() { awk '{print $14, $15}' "$1/stat"; }
cpu_ns() { awk '{print $1}' "$1/schedstat"; }
hz=$(getconf CLK_TCK)
total=$((TX * CLIENTS))

run_pgbench() { # port transactions-per-client (then the pgbench arguments)
  local port=$1 tx=$2
  shift 2
  pgbench -n "$@" -c "$CLIENTS" -t "$tx" -h 127.0.0.1 -p "$port" -U postgres postgres 2>&1
}

measure() { # name port task (then the pgbench arguments)
  local name=$1 port=$2 task=$3
  shift 3
  run_pgbench "$port" 200 "$@" >/dev/null
  read -r u0 s0 < <(ticks "$task")
  c0=$(cpu_ns "$task")
  tps=$(run_pgbench "$port" "$TX" "$@" | awk '/^tps/ {print $3}')
  c1=$(cpu_ns "$task")
  read -r u1 s1 < <(ticks "$task")
  strace -c -p "${task##*/}" -o "$work/$name.strace" 2>/dev/null & spid=$!
  sleep 0.5
  run_pgbench "$port" "$TX" "$@" >/dev/null
  kill -INT "$spid"; wait "$spid" 2>/dev/null || true
  calls=$(awk '$NF ~ /^(sendto|recvfrom|epoll_wait|read|write|writev|readv)$/ {n += $4} END {print n}' "$work/$name.strace")
  printf '%-10s %8.0f tps  cpu %6.2f µs/tx = user %5.2f + system %6.2f  %4.2f syscalls/tx (%s)\n' "$name" "$tps" \
    "$(echo "($c1 - $c0) / 1000 / $total" | bc -l)" \
    "$(echo "($u1 - $u0) * 1000000 / $hz / $total" | bc -l)" \
    "$(echo "($s1 - $s0) * 1000000 / $hz / $total" | bc -l)" \
    "$(echo "$calls / $total" | bc -l)" \
    "$(awk '$NF ~ /^(sendto|recvfrom|epoll_wait|read|write)$/ {printf "%s %s ", $NF, $4}' "$work/$name.strace")"
}
echo "pgbench $* -c $CLIENTS, $total transactions each, transaction pooling (ABBA order):"
measure pgbouncer "$bouncer_port" "$bouncer_task" "$@"
measure meridian "$meridian_port" "$meridian_task" "$@"
measure meridian "$meridian_port" "$meridian_task" "$@"
measure pgbouncer "$bouncer_port" "$bouncer_task" "$@"

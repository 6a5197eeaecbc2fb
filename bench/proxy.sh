#!/usr/bin/env bash
# Proxy throughput and memory, side by side in one run: PostgreSQL direct vs PgBouncer vs
# Meridian, pgbench interleaved round by round (the order turning each round) so that the
# noise of a shared machine hits all three alike. Prints median TPS and ratios per workload, Meridian's resident memory idle and
# after the 64-client run, the memory per idle client (1,000 clients) and whether 10,000
# concurrent clients are accepted.
#
# The cluster has a primary and two replicas. The first Meridian knows only the primary (the
# pooling comparison); a second one knows all three and splits reads from writes
# (select-only, and a 90/10 mix of select-only and TPC-B-like transactions): its throughput is
# compared with PgBouncer and direct connections to the primary, and the share of
# transactions its replicas served is read from its routing metrics.
#
# usage: bench/proxy.sh            (env: ROUNDS=3 DURATION=10 POOL_SIZE=20 SCALE=10,
#                                   READ_YOUR_WRITES=session for the split Meridian,
#                                   ONLY=split to run the split workloads alone,
#                                   ONLY=pooling for the pooling workloads alone)
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
POOL_SIZE=${POOL_SIZE:-20}
SCALE=${SCALE:-10}
READ_YOUR_WRITES=${READ_YOUR_WRITES:-session}
ONLY=${ONLY:-}

command -v pgbench >/dev/null || { echo "pgbench is not installed: apt-get install -y postgresql" >&2; exit 1; }

. bench/lib.sh
bench_setup bench
# A primary and two streaming replicas, from the test kit; it stops when this script ends.
start_cluster --replicas 2
pg_port=${node_ports[0]}
replica_ports=("${node_ports[@]:1}")
echo "cluster: primary on port $pg_port, replicas on ${replica_ports[*]}"
pgbench -i -q -s "$SCALE" -h 127.0.0.1 -p "$pg_port" -U postgres postgres >/dev/null 2>&1

start_pgbouncer "$pg_port" "$POOL_SIZE"
meridian_config "$work/meridian.toml" "$pg_port" "$POOL_SIZE"
MERIDIAN_LOG=warn "$target/meridian" run -c "$work/meridian.toml" > "$work/meridian.log" 2>&1 &
meridian_pid=$!
pids+=($meridian_pid)

# The same, knowing the replicas: reads go to them.
split_port=$(free_port)
split_admin=$(free_port)
{
  sed -e "s/^listen = .*/listen = \"127.0.0.1:$split_port\"/" \
      -e "s/^admin_listen = .*/admin_listen = \"127.0.0.1:$split_admin\"/" \
      -e "s|^data_dir = .*|data_dir = \"$work/state-split\"|" "$work/meridian.toml"
  i=1
  for port in "${replica_ports[@]}"; do
    printf '[[regions.nodes]]\nname = "replica%s"\nhost = "127.0.0.1"\nport = %s\n' "$i" "$port"
    i=$((i + 1))
  done
} > "$work/meridian-split.toml"
MERIDIAN_LOG=warn MERIDIAN_READ_YOUR_WRITES=$READ_YOUR_WRITES "$target/meridian" run -c "$work/meridian-split.toml" > "$work/meridian-split.log" 2>&1 &
pids+=($!)

wait_port "$meridian_port"
wait_port "$split_port"
# Until the monitor has judged the replicas healthy, reads fall back to the primary.
for _ in $(seq 100); do
  healthy=$(curl -s "http://127.0.0.1:$split_admin/metrics" | grep -c '^meridian_node_health{.*state="healthy"} 1' || true)
  [ "$healthy" -ge 3 ] && break
  sleep 0.1
done
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$meridian_pid/status"; }
rss_idle=$(rss_kib)

declare -A ports=([direct]=$pg_port [pgbouncer]=$bouncer_port [meridian]=$meridian_port)
workloads=("select-only -c 8|-S -c 8 -j 2" "select-only -c 64|-S -c 64 -j 2" "TPC-B-like -c 8|-c 8 -j 2" "select-only -M prepared -c 8|-S -M prepared -c 8 -j 2")
[ "$ONLY" = split ] && workloads=()
declare -A tps
# One pgbench run per target of the ports array named $1 for workload $2 ("name|args"),
# recording TPS (or "fail") in tps.
# Busy and total CPU time of the whole machine so far, in clock ticks (/proc/stat).
cpu_ticks() { awk '/^cpu / {busy = $2 + $3 + $4 + $7 + $8; print busy, busy + $5 + $6}' /proc/stat; }
declare -A cpu idle
bench_workload() {
  local -n target_ports=$1
  local name=${2%%|*} args=${2#*|} target_name out value busy0 total0 busy1 total1
  # The order turns each round (direct first, then PgBouncer first, then Meridian first...),
  # so that a drift within a round (a checkpoint, dead rows piling up under TPC-B) does not
  # always fall on the same target.
  local order=(direct pgbouncer meridian) turn=$(( (round - 1) % 3 ))
  order=("${order[@]:turn}" "${order[@]:0:turn}")
  for target_name in "${order[@]}"; do
    read -r busy0 total0 < <(cpu_ticks)
    # shellcheck disable=SC2086
    out=$(pgbench -h 127.0.0.1 -p "${target_ports[$target_name]}" -U postgres -n -T "$DURATION" $args postgres 2>&1 || true)
    read -r busy1 total1 < <(cpu_ticks)
    value=$(awk '/^tps = / {print $3}' <<<"$out")
    if [ -z "$value" ] || grep -q "number of failed transactions: [1-9]" <<<"$out" || grep -qi "error" <<<"$out"; then value=fail; fi
    tps["$name|$target_name"]+="$value "
    # The whole machine's CPU per transaction (pgbench, PostgreSQL and the pooler together,
    # in microseconds) and its idle share: a pooler can lose throughput by costing CPU or by
    # adding latency while cores sit idle; these tell which.
    if [ "$value" != fail ]; then
      cpu["$name|$target_name"]+="$(awk -v b=$((busy1 - busy0)) -v hz="$(getconf CLK_TCK)" -v t="$value" -v d="$DURATION" 'BEGIN {printf "%.0f", b / hz * 1e6 / (t * d)}') "
      idle["$name|$target_name"]+="$(awk -v b=$((busy1 - busy0)) -v a=$((total1 - total0)) 'BEGIN {printf "%.0f", 100 * (1 - b / a)}') "
    fi
  done
  echo "round $round: $name done"
}
for round in $(seq "$ROUNDS"); do
  for workload in "${workloads[@]}"; do bench_workload ports "$workload"; done
  [ "$round" = 1 ] && rss_after_64=$(rss_kib)
done

# The read/write split: PostgreSQL direct and PgBouncer both on the primary; Meridian
# spreading reads over the replicas.
declare -A ports_split=([direct]=$pg_port [pgbouncer]=$bouncer_port [meridian]=$split_port)
split_workloads=("split select-only -c 8|-S -c 8 -j 2" "split 90/10 read/write -c 8|-b select-only@9 -b tpcb-like@1 -c 8 -j 2")
[ "$ONLY" = pooling ] && split_workloads=()
routed() {
  # Transactions Meridian routed to replicas and in all, from its metrics.
  curl -s "http://127.0.0.1:$split_admin/metrics" | awk '
    /^meridian_routed_total\{/ { total += $NF; if ($0 ~ /node="replica/) replicas += $NF }
    END { printf "%d %d\n", replicas, total }'
}
read -r replicas_before total_before < <(routed)
for round in $(seq "$ROUNDS"); do
  for workload in "${split_workloads[@]}"; do bench_workload ports_split "$workload"; done
done
read -r replicas_after total_after < <(routed)

median() { tr ' ' '\n' | grep -v '^$' | { mapfile -t v; if printf '%s\n' "${v[@]}" | grep -q fail; then echo fail; else printf '%s\n' "${v[@]}" | sort -g | awk '{a[NR]=$1} END {printf "%.0f\n", a[int((NR+1)/2)]}'; fi; }; }
ratio() { if [ "$1" = fail ] || [ "$2" = fail ]; then echo "-"; else awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a/b}'; fi; }

# Meridian / PgBouncer round by round (each pair ran back to back): the lowest and highest
# ratio, and in how many rounds Meridian did at least as well.
by_round() {
  awk -v m="$1" -v b="$2" 'BEGIN {
    n = split(m, mv, " "); split(b, bv, " ")
    for (i = 1; i <= n; i++) {
      if (mv[i] == "fail" || bv[i] == "fail") { print "-"; exit }
      r = mv[i] / bv[i]; if (i == 1 || r < lo) lo = r; if (i == 1 || r > hi) hi = r; if (r >= 1) won++
    }
    printf "%.2f-%.2f, %d of %d", lo, hi, won, n
  }'
}

# The table of medians and ratios of the workloads given.
table() {
  printf '| %-28s | %9s | %9s | %9s | %15s | %18s | %26s |\n' workload direct pgbouncer meridian meridian/direct meridian/pgbouncer "by round: range, rounds >= 1"
  printf '|%s|\n' "------------------------------|-----------|-----------|-----------|-----------------|--------------------|----------------------------"
  local workload name d b m
  for workload in "$@"; do
    name=${workload%%|*}
    d=$(median <<<"${tps[$name|direct]}"); b=$(median <<<"${tps[$name|pgbouncer]}"); m=$(median <<<"${tps[$name|meridian]}")
    printf '| %-28s | %9s | %9s | %9s | %15s | %18s | %26s |\n' "$name" "$d" "$b" "$m" "$(ratio "$m" "$d")" "$(ratio "$m" "$b")" \
      "$(by_round "${tps[$name|meridian]}" "${tps[$name|pgbouncer]}")"
  done
}

echo
echo "pgbench, median of $ROUNDS interleaved rounds of ${DURATION}s, pool size $POOL_SIZE, scale $SCALE"
table "${workloads[@]}"
echo
echo "whole-machine CPU per transaction in µs (median), and idle share of the CPU during the runs"
printf '| %-28s | %14s | %14s | %14s |\n' workload direct pgbouncer meridian
printf '|%s|\n' "------------------------------|----------------|----------------|----------------"
for workload in "${workloads[@]}"; do
  name=${workload%%|*}
  row=()
  for target_name in direct pgbouncer meridian; do
    row+=("$(median <<<"${cpu[$name|$target_name]:-fail}") µs, $(median <<<"${idle[$name|$target_name]:-fail}") % idle")
  done
  printf '| %-28s | %14s | %14s | %14s |\n' "$name" "${row[@]}"
done
echo
if [ ${#split_workloads[@]} -gt 0 ]; then
  echo "read/write split (Meridian over a primary and two replicas, read_your_writes = $READ_YOUR_WRITES; direct and PgBouncer on the primary)"
  table "${split_workloads[@]}"
  replicas=$((replicas_after - replicas_before)); total=$((total_after - total_before))
  echo "transactions served by replicas in the split runs: $replicas of $total ($(ratio "$replicas" "$total"))"
fi

echo
echo "Meridian resident memory: idle $((rss_idle / 1024)) MiB, after the -c 64 run $((rss_after_64 / 1024)) MiB"
before=$(rss_kib)
exec 8< <(python3 bench/clients.py 127.0.0.1 "$meridian_port" postgres 1000 5)
read -r line <&8
after=$(rss_kib)
echo "1,000 idle clients: $line, $(( (after - before) * 1024 / 1000 / 1024 )) KiB resident per client"
exec 8<&-
# Wait until the 1,000 are gone (Meridian's open descriptors back near idle).
for _ in $(seq 100); do [ "$(ls "/proc/$meridian_pid/fd" | wc -l)" -lt 200 ] && break; sleep 0.1; done
exec 8< <(python3 bench/clients.py 127.0.0.1 "$meridian_port" postgres 10000 2)
read -r line <&8
echo "10,000 concurrent clients: $line (resident $(( $(rss_kib) / 1024 )) MiB)"
exec 8<&-

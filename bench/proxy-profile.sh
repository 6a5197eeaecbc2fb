#!/usr/bin/env bash
# Instructions a pooler's process executes per pgbench transaction, counted by valgrind's
# callgrind (deterministic whatever the machine's load, unlike time), with the functions that
# execute the most of them, self cost, per transaction. The pooler (Meridian, or PgBouncer for
# the comparison) runs under callgrind in front of a one-node test cluster in transaction
# pooling; a warm-up run is discarded (counters zeroed), then CLIENTS x TX transactions are
# counted.
#
# usage: bench/proxy-profile.sh [pgbench args]   (default -S; env: CLIENTS=8 TX=1000 TOP=25,
#        POOLER=pgbouncer profiles PgBouncer instead of Meridian,
#        KEEP=FILE keeps the callgrind output for callgrind_annotate or kcachegrind)
#        bench/proxy-profile.sh -b tpcb-like     (TPC-B-like transactions)
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS=${CLIENTS:-8}
TX=${TX:-1000}
TOP=${TOP:-25}
POOLER=${POOLER:-meridian}
[ $# -gt 0 ] || set -- -S
for tool in valgrind callgrind_control pgbench; do
  command -v "$tool" >/dev/null || { echo "$tool is not installed (apt-get install -y valgrind postgresql)" >&2; exit 1; }
done

. bench/lib.sh
bench_setup profile
start_primary 1
callgrind=(valgrind --tool=callgrind --compress-strings=no --compress-pos=no
  --callgrind-out-file="$work/callgrind.out")
# callgrind_control runs as the user the pooler runs as (PgBouncer: the servers' user).
control=()
case $POOLER in
  meridian)
    meridian_config "$work/meridian.toml" "$pg_port" 20
    MERIDIAN_LOG=warn "${callgrind[@]}" "$target/meridian" run -c "$work/meridian.toml" \
      > "$work/meridian.log" 2>&1 &
    pooler_pid=$!
    pids+=($pooler_pid)
    pooler_port=$meridian_port
    ;;
  pgbouncer)
    start_pgbouncer "$pg_port" 20 "${callgrind[@]}"
    pooler_pid=$bouncer_pid
    control=("${run_as[@]}")
    pooler_port=$bouncer_port
    ;;
  *) echo "POOLER is meridian or pgbouncer, not $POOLER" >&2; exit 2 ;;
esac
for _ in $(seq 300); do pg_isready -q -h 127.0.0.1 -p "$pooler_port" && break; sleep 0.2; done

pgbench -n -c "$CLIENTS" -t 200 -h 127.0.0.1 -p "$pooler_port" -U postgres "$@" postgres >/dev/null 2>&1
"${control[@]}" callgrind_control --zero "$pooler_pid" >/dev/null 2>&1
pgbench -n -c "$CLIENTS" -t "$TX" -h 127.0.0.1 -p "$pooler_port" -U postgres "$@" postgres >/dev/null 2>&1
"${control[@]}" callgrind_control --dump "$pooler_pid" >/dev/null 2>&1
[ -z "${KEEP:-}" ] || cp "$work/callgrind.out.1" "$KEEP"
total=$((CLIENTS * TX))

# Self cost by function from the dump taken after the zeroing (the .1 part), per transaction.
# (callgrind_annotate of valgrind 3.19 attributes this whole file to `clone`; the format is
# read directly: cost lines follow `fn=`, and the line after `calls=` is a call's inclusive
# cost, not the caller's own.)
python3 - "$work/callgrind.out.1" "$total" "$TOP" "pgbench $*" "$POOLER" <<'EOF'
import collections, sys
path, total, top, what, pooler = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
pooler = {"meridian": "Meridian", "pgbouncer": "PgBouncer"}[pooler]
own = collections.Counter()
fn, after_call = None, False
for line in open(path, errors="replace"):
    if line.startswith("fn="):
        fn = line[3:].strip()
    elif line.startswith("calls="):
        after_call = True
    elif line[:1].isdigit() or line[:1] in "+-*":
        fields = line.split()
        if len(fields) >= 2:
            if not after_call:
                own[fn] += int(fields[1])
            after_call = False
everything = sum(own.values())
print(f"{what}, {total} transactions: {everything / total:,.0f} instructions per transaction in {pooler}'s process")
for name, cost in own.most_common(top):
    print(f"{cost / total:8,.0f}  {100 * cost / everything:4.1f} %  {name[:110]}")
EOF

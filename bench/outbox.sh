#!/usr/bin/env bash
# Notification acknowledgements per second with the durable outbox:
# 64 concurrent senders, release build, a local demo upstream.
# Runs twice: as fast as possible (throughput), then paced at 5,000/s
# (latency at the issue's target rate).
#   bash bench/outbox.sh [SECONDS] [CONCURRENCY]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
concurrency=${2:-64}
cargo build --release --quiet --bin callgate --example upstream --example load
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
cat > "$work/routes.yaml" <<YAML
listeners:
  - addr: "127.0.0.1:18080"
admin:
  addr: "127.0.0.1:19901"
apps:
  - sdkappid: 1400000001
delivery:
  outbox: outbox
upstreams:
  demo:
    url: "http://127.0.0.1:19000/im"
routes:
  - match: "*"
    upstreams: [demo]
YAML
./target/release/examples/upstream 127.0.0.1:19000 > /dev/null &
RUST_LOG=warn ./target/release/callgate run -c "$work/routes.yaml" &
for _ in $(seq 100); do curl -sf http://127.0.0.1:19901/readyz >/dev/null && break; sleep 0.1; done
url="http://127.0.0.1:18080/im?SdkAppid=1400000001&CallbackCommand=State.StateChange"
./target/release/examples/load "$url" "$concurrency" "$seconds" 0
./target/release/examples/load "$url" "$concurrency" "$seconds" 5000
curl -s http://127.0.0.1:19901/metrics | grep -E '^callgate_(outbox_pending|deliveries_total)' || true
du -sh "$work/outbox"

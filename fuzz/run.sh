#!/usr/bin/env bash
# Bounded fuzz run of every target (default 60 s each) on the stable
# toolchain, without sanitizers (Rust's own checks still panic on bugs).
#   bash fuzz/run.sh [SECONDS_PER_TARGET]
# Seeds come from tests/fixtures/callbacks and routes.yaml; the corpus
# grows in fuzz/corpus/ (git-ignored). A crash leaves its input in
# fuzz/artifacts/ and makes this script exit non-zero.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-60}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
mkdir -p corpus/body corpus/query corpus/config
for f in ../tests/fixtures/callbacks/*.json; do
  # The body target reads its first byte as the command selector.
  { printf '\000'; cat "$f"; } > "corpus/body/$(basename "$f")"
done
printf 'SdkAppid=1400000001&CallbackCommand=State.StateChange&RequestTime=1700000000&Sign=17773bc39a671d7b9aa835458704d2a6db81360a5940292b587d6d760d484061' > corpus/query/seed
cp ../routes.yaml corpus/config/routes.yaml
for target in body query config; do
  echo "== fuzzing $target for ${seconds}s"
  cargo fuzz run --sanitizer none "$target" "corpus/$target" -- -max_total_time="$seconds" -rss_limit_mb=2048 2>&1 \
    | grep -E "^(#[0-9]+ +DONE|Done|==|SUMMARY|.*panicked)" || true
  if ls "artifacts/$target"/crash-* >/dev/null 2>&1; then
    echo "crash found in $target: see fuzz/artifacts/$target" >&2
    exit 1
  fi
done

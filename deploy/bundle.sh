#!/usr/bin/env bash
# Builds callpipe and writes a runnable bundle: bin/callpipe, the compiled
# stages in plugins/, the pipeline in pipelines/, its knowledge seed in kb/,
# and MODELS. The Dockerfile, compose file and Kubernetes manifests run what
# this writes; CI runs this script too (host/tests/app/cli.rs), with
# CALLPIPE_BIN naming the binary it already built.
# Usage: deploy/bundle.sh [OUT_DIR] [PIPELINE]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-dist/callpipe}
pipeline=${2:-pipelines/technician-support.toml}
bin=${CALLPIPE_BIN:-}
if [ -z "$bin" ]; then
  cargo build --release -q --workspace
  bin=${CARGO_TARGET_DIR:-target}/release/callpipe
fi
"$bin" build "$pipeline" --out "$out"

#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian 12 machine: installs what the tests need (GStreamer, the
# ONNX Runtime library, Kannel, aiosmtpd, the YOLOv8 test model), then every unit and integration test.
# The integration tests start their own real peers (RTSP servers, Kannel, an SMTP server) on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
STREETWATCH_SKIP_BUILD=1 ./scripts/setup.sh
# Shipped files are found from the executable (src/home.rs); this checkout's also when CARGO_TARGET_DIR is elsewhere.
export STREETWATCH_HOME="$PWD"
# A one-off build gains nothing from incremental state, which would take gigabytes of the disk.
export CARGO_INCREMENTAL=0
cargo test --locked --no-fail-fast -- --test-threads=2

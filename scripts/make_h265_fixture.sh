#!/bin/sh
# Makes fixtures/footage/vtest_h265_384x288.mp4: the first 4 s of vtest_h264.mp4 scaled to 384×288, 10 fps,
# re-encoded to H.265 (x265, a keyframe every second, no B-frames, like an IP camera) — the decoder pool's
# H.265 test input. Needs gst-plugins-bad (x265enc, h265parse) and gst-plugins-good (mp4mux).
set -eu
cd "$(dirname "$0")/../fixtures/footage"
gst-launch-1.0 -q filesrc location=vtest_h264.mp4 ! qtdemux ! h264parse ! avdec_h264 ! videoconvert \
  ! videoscale ! video/x-raw,width=384,height=288 ! identity eos-after=41 \
  ! x265enc bitrate=100 key-int-max=10 speed-preset=veryfast option-string="bframes=0:scenecut=0" \
  ! h265parse ! mp4mux faststart=true ! filesink location=vtest_h265_384x288.mp4

#!/usr/bin/env bash
# Side by side on the same streams: `streetwatch bench` and the Python loops of peer_baseline.py (the usual
# cv2.VideoCapture reader and the informed PyAV keyframe reader), the same int8 NanoDet in all three, each
# camera count served by ../shared/tools/rtsp_loop_server.py in its own process. Prints one table.
#
#   scripts/compare.sh [options] CAMERAS...          e.g. scripts/compare.sh 64 96 145 160
#     --tools DIR      peer_baseline.py and rtsp_loop_server.py (default ../shared/tools)
#     --seconds S      measured window per run (default 60)
#     --fps F          analysed frames/s per camera (default 0.5)
#     --mounts M       distinct server paths; camera i reads path i mod M (default 8)
#     --clip FILE      H.264 MP4 without B-frames (default the 720p25 2 Mbps bench clip)
#     --bin FILE       streetwatch binary (default target/release/streetwatch)
#     --ceilings       also measure the machine's ceilings in each streetwatch run
#     --only LIST      contenders to run, comma-separated: streetwatch,opencv,pyav (default all)
#
# Python packages live in a venv under target/ (made on first use; pip needs PyPI). JSON of every run goes to
# target/compare/; the table to stdout. Run on a quiet machine: other load moves every figure.
set -euo pipefail
cd "$(dirname "$0")/.."

tools=../shared/tools
seconds=60
fps=0.5
mounts=8
clip=fixtures/footage/bench_720p25_2mbps.mp4
bin=target/release/streetwatch
ceilings=
only=streetwatch,opencv,pyav
counts=()
while (($#)); do
    case "$1" in
        --tools) tools=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        --fps) fps=$2; shift 2 ;;
        --mounts) mounts=$2; shift 2 ;;
        --clip) clip=$2; shift 2 ;;
        --bin) bin=$2; shift 2 ;;
        --ceilings) ceilings=--ceilings; shift ;;
        --only) only=$2; shift 2 ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        -*) echo "compare.sh: unknown option $1" >&2; exit 2 ;;
        *) counts+=("$1"); shift ;;
    esac
done
((${#counts[@]})) || { echo "compare.sh: give camera counts, e.g. scripts/compare.sh 64 96 145" >&2; exit 2; }
[[ -x $bin ]] || { echo "compare.sh: $bin missing: cargo build --release first" >&2; exit 1; }
for f in "$tools/peer_baseline.py" "$tools/rtsp_loop_server.py" "$clip"; do
    [[ -f $f ]] || { echo "compare.sh: $f missing" >&2; exit 1; }
done
# The same int8 model streetwatch uses by default (models/nanodet_g_416_coco_int8.toml): peer_baseline reads
# its `output` [N, 3549, 84] directly.
model=models/nanodet_g_416_coco_int8.onnx

venv=target/compare-venv
if [[ ! -x $venv/bin/python ]] || ! "$venv/bin/python" -c 'import cv2, onnxruntime, av, numpy, psutil' 2>/dev/null; then
    echo "compare.sh: making $venv (opencv-python-headless, onnxruntime, av, numpy, psutil)" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q opencv-python-headless onnxruntime av numpy psutil
fi

out=target/compare
mkdir -p "$out"
server_pid=
stop_server() {
    if [[ -n $server_pid ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=
    fi
}
trap stop_server EXIT

# CPU seconds (user + system) of a process, from /proc.
cpu_seconds() {
    awk -v hz="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); print ($12 + $13) / hz }' "/proc/$1/stat"
}

# Runs one contender ($2...) against the server; its JSON line (plus server CPU) goes to $1.
run() {
    local json=$1; shift
    local before after start end
    before=$(cpu_seconds "$server_pid"); start=$(date +%s.%N)
    "$@" > "$json.out" 2> "$json.log" || { echo "compare.sh: failed, see $json.log" >&2; tail -5 "$json.log" >&2; return 0; }
    after=$(cpu_seconds "$server_pid"); end=$(date +%s.%N)
    tail -n 1 "$json.out" | SERVER_CPU=$(echo "100 * ($after - $before) / ($end - $start)" | bc -l) \
        python3 -c 'import json, os, sys; r = json.loads(sys.stdin.read()); r["server_cpu_percent_run"] = round(float(os.environ["SERVER_CPU"]), 1); print(json.dumps(r))' > "$json"
}

for n in "${counts[@]}"; do
    ready=$out/ready-$n
    rm -f "$ready"
    /usr/bin/python3 "$tools/rtsp_loop_server.py" --file "$clip" --port 0 --mounts "$mounts" --ready-file "$ready" \
        > "$out/server-$n.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 100); do [[ -s $ready ]] && break; sleep 0.2; done
    [[ -s $ready ]] || { echo "compare.sh: the server did not start, see $out/server-$n.log" >&2; exit 1; }
    read -r -a paths < <(sed 's/^READY //' "$ready")
    urls=$out/urls-$n.txt
    for ((i = 0; i < n; i++)); do echo "${paths[i % ${#paths[@]}]}"; done > "$urls"
    echo "compare.sh: $n cameras over ${#paths[@]} paths, $seconds s each" >&2
    if [[ ,$only, == *,streetwatch,* ]]; then
        run "$out/streetwatch-$n.json" "$bin" bench --urls "$urls" --cameras "$n" --seconds "$seconds" --fps "$fps" \
            $ceilings --json
    fi
    for reader in opencv pyav; do
        [[ ,$only, == *,$reader,* ]] || continue
        flag=(); [[ $reader == pyav ]] && flag=(--reader pyav-keyframes)
        run "$out/$reader-$n.json" "$venv/bin/python" "$tools/peer_baseline.py" --urls "$urls" --fps "$fps" \
            --seconds "$seconds" --model "$model" --server-pid "$server_pid" "${flag[@]}" --json
    done
    stop_server
done

python3 - "$out" "${counts[@]}" <<'EOF'
import json, os, sys
out, counts = sys.argv[1], sys.argv[2:]
rows = []
for n in counts:
    for who in ("streetwatch", "opencv", "pyav"):
        path = os.path.join(out, f"{who}-{n}.json")
        if not os.path.exists(path):
            continue
        r = json.load(open(path))
        cams = r["cameras"]
        share, combined = r.get("share_of_ceiling"), r.get("share_of_combined")
        rows.append([
            str(cams), {"opencv": "python cv2", "pyav": "python pyav-keyframes"}.get(who, who),
            f'{r["frames_analysed_per_s"]:.1f}', f'{r["cameras_meeting_target"]}/{cams}',
            f'{r["cpu_percent"]:.0f}', f'{r["cpu_percent"] / cams:.2f}',
            f'{r["rss_mb_per_stream"]:.2f}', f'{r["threads_per_stream"]:.2f}',
            f'{r["latency_ms_p50"] or 0:.0f} / {r["latency_ms_p99"] or 0:.0f}',
            f'{r["server_cpu_percent_run"]:.0f}',
            "-" if share is None else f"{100 * share:.0f} %",
            "-" if combined is None else f"{100 * combined:.0f} %",
        ])
head = ["cameras", "contender", "analysed/s", "meeting target", "CPU %", "CPU %/camera", "RSS MB/camera",
        "threads/camera", "latency p50 / p99 ms", "server CPU %", "of min(ceilings)", "of combined ceiling"]
print("| " + " | ".join(head) + " |")
print("|" + "---|" * len(head))
for r in rows:
    print("| " + " | ".join(r) + " |")
EOF

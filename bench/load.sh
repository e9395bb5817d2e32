#!/usr/bin/env bash
# Load benchmark of the audio path through `callpipe serve`: N simultaneous
# simulated Twilio calls from a second process (in a network namespace and
# on a CPU of its own when it can: see Isolation below).
# Usage: [CALLPIPE_BIN=path] bench/load.sh [DURATION_S] [CALLS...]
#        (default: 30 s; 100 500 1000)
# Reports server CPU seconds per call-second, RSS per call, frame lag, the
# frames' lateness against their streams' clocks, and lost frames.
#
# Two measures of being behind (README, Performance):
# - lag: a frame read from its socket to the end of its audio stages;
# - late: a frame read from its socket against its stream's clock (stream
#   start + the frame's Twilio `timestamp`): what waited in the socket or
#   the sender counts too.
# A run whose generator sent late (p99 over 20 ms) is marked INVALID: the
# server was not offered the load the row names.
#
# Isolation (CALLPIPE_LOAD_ISOLATE=auto, the default): the generator runs in
# a network namespace of its own, joined to the server's by a veth pair (its
# packets cross a real interface, as a Twilio peer's do, not loopback), and
# on a CPU of its own: the server is pinned to the other cores. With one
# core, or without the rights for a namespace (not root), both share
# loopback and the cores, and the `setup` column says so.
# `host cpu` is the server's CPU plus every core's softirq time over the
# run (the kernel's network work for the server's packets is not in the
# server's own ticks).
#
# The server runs the default pipeline's audio stages (codec, VAD, speaker
# priority) with their settings, and nothing after them: what every 20 ms
# frame crosses. Speech recognition is measured by bench/speech.sh; with it
# here, the figure would be Whisper's and the search's, not the audio path's.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/wait-for-server.sh
duration=${1:-30}
shift || true
levels=("$@")
[ ${#levels[@]} -gt 0 ] || levels=(100 500 1000)
# CALLPIPE_BIN runs a given build instead (no cargo build): to compare two
# builds, copy each binary aside and alternate their runs within minutes;
# this machine's speed drifts too much for a comparison with an older figure.
if [ -n "${CALLPIPE_BIN:-}" ]; then
  bin=$CALLPIPE_BIN
  [ -x "$bin" ] || { echo "CALLPIPE_BIN=$bin is not an executable" >&2; exit 2; }
else
  bin=${CARGO_TARGET_DIR:-target}/release/callpipe
  cargo build --release -q --workspace
fi
port=18765
# The first three stages of the default pipeline, without its capabilities.
pipeline=$(mktemp --suffix=.toml)
awk '/^\[\[stages\]\]/ {n++} n > 3 {exit}
     /^\[capabilities/ {skip = 1; next} /^\[/ {skip = 0} !skip {print}' \
  pipelines/technician-support.toml > "$pipeline"
# The API (stats) needs a token; this run's own.
token="load-$$-$(date +%s%N)"
hz=$(getconf CLK_TCK)

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
softirq_ticks() { awk '$1 == "cpu" {print $8}' /proc/stat; }

# The generator's namespace and CPU, when the machine allows: the CPUs this
# script may use (a cpuset or taskset may allow fewer than nproc shows).
cpus=($(python3 -c 'import os; print(" ".join(map(str, sorted(os.sched_getaffinity(0)))))'))
cores=${#cpus[@]}
isolate=${CALLPIPE_LOAD_ISOLATE:-auto}
netns=""
veth="cpg$$"
server_addr=127.0.0.1
gen=()
pin_server=()
cleanup_netns() {
  if [ -n "$netns" ]; then ip netns del "$netns" 2>/dev/null || true; fi
  ip link del "${veth}a" 2>/dev/null || true
}
if [ "$isolate" != off ] && [ "$(id -u)" = 0 ] && command -v ip >/dev/null && [ "$cores" -ge 2 ]; then
  netns="callpipe-gen-$$"
  trap 'cleanup_netns; rm -f "$pipeline"' EXIT
  # A /30 of its own per run (from the pid), so two runs do not clash.
  net="10.213.$(( ($$ >> 6) % 256 )).$(( ($$ % 64) * 4 ))"
  base=${net%.*}; last_octet=${net##*.}
  here="$base.$((last_octet + 1))"; there="$base.$((last_octet + 2))"
  if ip netns add "$netns" 2>/dev/null \
    && ip link add "${veth}a" type veth peer name "${veth}b" \
    && ip link set "${veth}b" netns "$netns" \
    && ip addr add "$here/30" dev "${veth}a" && ip link set "${veth}a" up \
    && ip netns exec "$netns" ip addr add "$there/30" dev "${veth}b" \
    && ip netns exec "$netns" ip link set "${veth}b" up \
    && ip netns exec "$netns" ip link set lo up; then
    server_addr=$here
    gen_cpu=${cpus[$((cores - 1))]}
    server_cpus=$(IFS=,; echo "${cpus[*]:0:$((cores - 1))}")
    gen=(ip netns exec "$netns" taskset -c "$gen_cpu")
    pin_server=(taskset -c "$server_cpus")
  else
    cleanup_netns
    netns=""
  fi
fi
if [ -n "$netns" ]; then
  setup="netns+cpu$gen_cpu"
  echo "generator: network namespace $netns over a veth pair, CPU $gen_cpu; server: CPUs $server_cpus"
else
  setup="shared"
  echo "generator: same loopback and cores as the server (CALLPIPE_LOAD_ISOLATE=$isolate, $cores cores, uid $(id -u))"
fi
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

printf "%-6s %-10s %-9s %-9s %-14s %-12s %-12s %-10s %-12s %-8s %-8s %-20s %-10s %-15s %-14s %-9s %-28s %s\n" calls cpu/call-s "µs/frame" "received" "rss/call" "lag p50" "lag p99" "lag max" "late p99" dropped rejected "sender p99" "sender cpu" "host cpu/call-s" setup admitted "refused (at cap./overload)" "capacity (limit)"
for n in "${levels[@]}"; do
  # Loopback only: the simulated calls are not signed.
  CALLPIPE_LOG=error CALLPIPE_TWILIO_SIGNATURES=off CALLPIPE_API_TOKEN="$token" \
    CALLPIPE_PLUGIN_PATH="$PWD/plugins" "${pin_server[@]}" "$bin" serve --pipeline "$pipeline" --listen $server_addr:$port --max-calls $((n + 10)) >/tmp/callpipe-load-serve.log 2>&1 &
  server=$!
  trap 'kill $server 2>/dev/null || true; rm -f "$pipeline"; cleanup_netns' EXIT
  wait_for_server $port $server /tmp/callpipe-load-serve.log $server_addr
  rss0=$(rss_kb $server)
  cpu0=$(cpu_ticks $server)
  soft0=$(softirq_ticks)
  # Sample RSS while the calls run; keep the peak.
  peak=$rss0
  ( while kill -0 $server 2>/dev/null; do r=$(rss_kb $server); echo "$r"; sleep 1; done ) >/tmp/callpipe-load-rss &
  sampler=$!
  # `times` in the subshell gives the load generator's own CPU. It runs on
  # one thread: on its own CPU when isolated; when not, with one per core it
  # would contend with the server for both (Twilio's senders are not on its
  # machine at all).
  sim_out=$( ( TOKIO_WORKER_THREADS=1 CALLPIPE_LOG=error "${gen[@]}" "$bin" simulate --url ws://$server_addr:$port/twilio/media-stream \
      --audio samples/technician-fr.wav --calls "$n" --ramp 5 --duration "$duration" 2>&1 || true; times ) )
  cpu1=$(cpu_ticks $server)
  soft1=$(softirq_ticks)
  kill $sampler 2>/dev/null || true
  peak=$(sort -n /tmp/callpipe-load-rss | tail -1)
  if ! kill -0 $server 2>/dev/null; then
    echo "$n: the server died; its log:"; tail -n 20 /tmp/callpipe-load-serve.log; exit 1
  fi
  stats=$(curl -s -H "Authorization: Bearer $token" "http://$server_addr:$port/api/stats")
  metrics=$(curl -s "http://$server_addr:$port/metrics")
  kill $server; wait $server 2>/dev/null || true
  python3 - "$n" "$duration" "$cpu0" "$cpu1" "$hz" "$rss0" "$peak" "$stats" "$sim_out" "$metrics" "$soft0" "$soft1" "$setup" <<'PY'
import json, sys, re
n, dur, c0, c1, hz, r0, peak = (float(x) for x in sys.argv[1:8])
stats = json.loads(sys.argv[8]); sim = sys.argv[9]; metrics = sys.argv[10]
soft = float(sys.argv[12]) - float(sys.argv[11]); setup = sys.argv[13]
def metric(pattern):
    m = re.search(r"^" + pattern + r" (\S+)$", metrics, re.M)
    return float(m.group(1)) if m else 0.0
at_capacity = metric(r'callpipe_websocket_errors_total\{kind="refused-at-capacity"\}')
overloaded = metric(r'callpipe_websocket_errors_total\{kind="refused-overloaded"\}')
admitted = n - at_capacity - overloaded
cap = re.search(r'^callpipe_capacity_calls\{limited_by="([^"]+)"\} (\d+)$', metrics, re.M)
capacity = f"{cap.group(2)} ({cap.group(1)})" if cap else "?"
# Per call-second of audio the server actually received (50 frames each):
# when the load generator falls behind, fewer frames arrive than the
# nominal calls x duration, and dividing by that would flatter the server.
frames = stats["frames_in"]
cpu_per_call_s = (c1 - c0) / hz / max(frames / 50.0, 1e-9)
cpu_us_per_frame = (c1 - c0) / hz / max(frames, 1) * 1e6
host_cpu_per_call_s = (c1 - c0 + soft) / hz / max(frames / 50.0, 1e-9)
rss_per_call = (peak - r0) / n
lag = stats["frame_lag_ms"]
late = stats.get("stream_lateness_ms", {}).get("p99", float("nan"))
m = re.search(r"sender lateness: p50 ([\d.]+) ms p99 ([\d.]+) ms", sim)
sender = f"{m.group(2)} ms" if m else "?"
if not m or float(m.group(2)) > 20.0:
    sender += " INVALID"
if "failed (of" in sim and not re.search(r" 0 failed", sim):
    sender += " (calls failed!)"
# The generator's user and system CPU (bash `times`: "1m2.5s 0m3.1s"),
# as cores busy over the run.
t = re.findall(r"(\d+)m([\d.]+)s", sim.strip().splitlines()[-1] if sim.strip() else "")
sim_cpu = sum(int(m) * 60 + float(s) for m, s in t[-2:]) if len(t) >= 2 else float("nan")
el = re.search(r"frames sent: \d+ in ([\d.]+)s$", sim, re.M)
sender_cores = f"{sim_cpu / (float(el.group(1)) if el else dur + 5):.2f} cores"
refused = f"{int(at_capacity + overloaded)} ({int(at_capacity)}/{int(overloaded)})"
print(f"{int(n):<6} {cpu_per_call_s:<10.5f} {cpu_us_per_frame:<9.1f} {frames / 50.0 / (n * dur):<9.2f} {rss_per_call:<8.0f} KiB {lag['p50']:<8.2f} ms {lag['p99']:<8.2f} ms {lag['max']:<6.1f} ms {late:<9.2f} ms {stats['frames_dropped']:<8} {stats['frames_rejected']:<8} {sender:<20} {sender_cores:<10} {host_cpu_per_call_s:<15.5f} {setup:<14} {int(admitted):<9} {refused:<28} {capacity}")
PY
done
cleanup_netns

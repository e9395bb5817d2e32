#!/usr/bin/env bash
# Capacity under real speech: N simulated calls through `callpipe serve` and
# the default pipeline (local Whisper), each call's technician saying a real
# French phone prompt every 8 s and the agent one in between (both tracks).
# Reports, from the server, exact p50/p95 of:
# - speech declared over -> transcript: the utterance reaching the transcribing
#   stage (the VAD has heard its hangover of silence) to the transcript made of
#   it, i.e. the wait for and the work of Whisper;
# - speech end -> transcript: from the last voiced frame in the stream, what the
#   technician waits (the VAD's hangover, 500 ms by default, on top);
# and the largest N whose first p95 stays within 1.5 s with nothing shed.
# Usage: bench/speech.sh [DURATION_S] [CALLS...]   (default: 120 s; 2 4 6 8 10 12 16)
# Needs Debian's asterisk-core-sounds-fr-wav and sox; `callpipe models`.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/wait-for-server.sh
duration=${1:-120}
shift || true
levels=("$@")
[ ${#levels[@]} -gt 0 ] || levels=(2 4 6 8 10 12 16)
bin=${CARGO_TARGET_DIR:-target}/release/callpipe
sounds=/usr/share/asterisk/sounds/fr_CA_f_June
command -v sox >/dev/null || { echo "needs sox (apt-get install sox)"; exit 1; }
[ -d "$sounds" ] || { echo "needs $sounds (apt-get install asterisk-core-sounds-fr-wav)"; exit 1; }
cargo build --release -q --workspace
port=18766
token="speech-$$-$(date +%s%N)"
hz=$(getconf CLK_TCK)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The calls' audio: the 40 bench prompts, one every 8 s on the inbound
# (technician) track; on the outbound (agent) track the same prompts 20
# further on, 4 s later. 320 s; each call starts at a different point.
mapfile -t prompts < <(grep -v '^#' bench/prompts-fr.txt | grep -v '^$')
n=${#prompts[@]}
for i in "${!prompts[@]}"; do
  sox -V1 "$sounds/${prompts[$i]}.wav" -r 8000 -c 1 -b 16 "$work/in-$(printf %03d "$i").wav" pad 0 8 trim 0 8
  j=$(( (i + n / 2) % n ))
  sox -V1 "$sounds/${prompts[$j]}.wav" -r 8000 -c 1 -b 16 "$work/out-$(printf %03d "$i").wav" pad 0 8 trim 0 8
done
sox "$work"/in-*.wav "$work/in.wav"
sox "$work"/out-*.wav "$work/out-body.wav"
sox "$work/out-body.wav" "$work/out.wav" pad 4 0 trim 0 $((n * 8))
sox -M "$work/in.wav" "$work/out.wav" "$work/speech.wav"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

printf "%-6s %-12s %-24s %-24s %-6s %-8s %-10s %s\n" calls transcripts "declared over: p50 p95" "speech end: p50 p95" shed dropped "cpu/call-s" verdict
best=0
for calls in "${levels[@]}"; do
  CALLPIPE_LOG=error CALLPIPE_TWILIO_SIGNATURES=off CALLPIPE_API_TOKEN="$token" "$bin" serve --listen 127.0.0.1:$port >"$work/serve.log" 2>&1 &
  server=$!
  trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT
  wait_for_server $port $server "$work/serve.log"
  cpu0=$(cpu_ticks $server)
  sim_out=$(CALLPIPE_LOG=error "$bin" simulate --url ws://127.0.0.1:$port/twilio/media-stream \
      --audio "$work/speech.wav" --tracks both --rotate --calls "$calls" --ramp 8 --duration "$duration" 2>&1) || true
  # Let the last utterances finish.
  sleep 3
  cpu1=$(cpu_ticks $server)
  if ! kill -0 $server 2>/dev/null; then
    echo "$calls: the server died; its log:"; tail -n 20 "$work/serve.log"; exit 1
  fi
  stats=$(curl -s -H "Authorization: Bearer $token" "http://127.0.0.1:$port/api/stats")
  metrics=$(curl -s "http://127.0.0.1:$port/metrics")
  kill $server; wait $server 2>/dev/null || true
  verdict=$(python3 - "$calls" "$duration" "$cpu0" "$cpu1" "$hz" "$stats" "$metrics" <<'PY'
import json, sys, re
calls, dur, c0, c1, hz = (float(x) for x in sys.argv[1:6])
stats = json.loads(sys.argv[6]); metrics = sys.argv[7]
def metric(pattern):
    m = re.search(r"^" + pattern + r" (\S+)$", metrics, re.M)
    return float(m.group(1)) if m else 0.0
shed = metric(r"callpipe_transcriptions_shed_total")
u = stats["utterance_to_transcript_ms"]
s = stats["speech_to_transcript_ms"]
ok = u["count"] > 0 and u["p95"] <= 1500 and shed == 0 and stats["frames_dropped"] == 0
cpu = (c1 - c0) / hz / (calls * dur)
declared = f"{u['p50']:.0f} ms {u['p95']:.0f} ms"
spoken = f"{s['p50']:.0f} ms {s['p95']:.0f} ms"
print(f"{int(calls):<6} {u['count']:<12} {declared:<24} {spoken:<24} {int(shed):<6} {stats['frames_dropped']:<8} {cpu:<10.4f} {'ok' if ok else 'over'}")
PY
)
  echo "$verdict"
  [[ "$verdict" == *" ok" ]] && best=$calls
done
cores=$(nproc)
echo "largest N with speech declared over -> transcript p95 <= 1.5 s and nothing shed: $best calls talking on $cores cores"

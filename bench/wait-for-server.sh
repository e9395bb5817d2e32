# Sourced by the bench scripts. wait_for_server PORT PID LOG [ADDR]: waits until the
# server answers /ready (its first start may compile the stages first), or
# stops the bench with its log if it exits or is not up within 120 s.
wait_for_server() {
  local port=$1 pid=$2 log=$3 addr=${4:-127.0.0.1}
  for _ in $(seq 600); do
    curl -sf "http://$addr:$port/ready" >/dev/null && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "the server exited before it was ready; its log:" >&2
      tail -n 20 "$log" >&2
      exit 1
    fi
    sleep 0.2
  done
  echo "the server was not ready on port $port within 120 s; its log:" >&2
  tail -n 20 "$log" >&2
  exit 1
}

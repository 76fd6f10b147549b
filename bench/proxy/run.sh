#!/usr/bin/env bash
# Agent proxy vs nginx, same upstream, same run, same load generator.
#
#   make bench-proxy                   # builds bin/, installs nginx + wrk, runs this
#   bench/proxy/run.sh                 # 5 interleaved rounds, 10 s per run
#   QUICK=1 bench/proxy/run.sh         # 2 rounds, 3 s per run (about a minute)
#   UPSTREAM=demoapp bench/proxy/run.sh  # bin/sluice-demoapp as the upstream
#
# Three targets share one upstream: "direct" (wrk → upstream), "agent"
# (wrk → bin/sluice-agent → upstream, one service, one revision at 100 %,
# no NATS: the agent serves its initial revision without it) and "nginx"
# (wrk → nginx with bench/proxy/nginx.conf → upstream). Each round runs every
# target once, in an order that rotates from round to round, under two load
# profiles: "load" (CONNS connections, as fast as they go) and "serial" (one
# connection, one request at a time: the latency of the extra hop without
# queueing). Reported figures are medians over the rounds.
#
# Nothing is pinned to a core: wrk (one thread), the proxy under test and
# the upstream share every core of the machine, as do other processes.
#
# Environment: ROUNDS, DURATION (seconds), WARMUP (seconds), CONNS,
# THREADS (wrk threads, default 1), PROFILES ("load serial"), UPSTREAM
# (nginx|demoapp), BENCH_UPSTREAM_PORT, BENCH_NGINX_PORT, BENCH_AGENT_PORT,
# BENCH_AGENT_ADMIN_PORT, AGENT_BIN (the agent binary; default
# bin/sluice-agent), AGENT_B_BIN (a second agent build, e.g. with a proxy
# change under test: it becomes target "agent-b" in the same rounds, on
# BENCH_AGENT_PORT+2), RESULTS (directory for raw output; default a new
# temporary directory, kept).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
HERE=$ROOT/bench/proxy

if [ "${QUICK:-}" = 1 ]; then
	ROUNDS=${ROUNDS:-2}
	DURATION=${DURATION:-3}
	WARMUP=${WARMUP:-1}
fi
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONNS=${CONNS:-32}
THREADS=${THREADS:-1}
PROFILES=${PROFILES:-load serial}
UPSTREAM=${UPSTREAM:-nginx}
UP_PORT=${BENCH_UPSTREAM_PORT:-18090}
NGINX_PORT=${BENCH_NGINX_PORT:-18081}
AGENT_PORT=${BENCH_AGENT_PORT:-18082}
ADMIN_PORT=${BENCH_AGENT_ADMIN_PORT:-18083}
AGENT_BIN=${AGENT_BIN:-$ROOT/bin/sluice-agent}
AGENT_B_BIN=${AGENT_B_BIN:-}
AGENT_B_PORT=$((AGENT_PORT + 2))
AGENT_B_ADMIN_PORT=$((AGENT_PORT + 3))
REV=bench@sha256:0000000000000000000000000000000000000000000000000000000000000001

for tool in wrk nginx curl; do
	command -v "$tool" >/dev/null || { echo "bench/proxy: $tool not found; run scripts/bootstrap.sh bench" >&2; exit 1; }
done
for b in "$AGENT_BIN" ${AGENT_B_BIN:+"$AGENT_B_BIN"} "$ROOT/bin/sluice-demoapp"; do
	[ -x "$b" ] || { echo "bench/proxy: $b missing; run make build" >&2; exit 1; }
done
ports=("$UP_PORT" "$NGINX_PORT" "$AGENT_PORT" "$ADMIN_PORT")
[ -n "$AGENT_B_BIN" ] && ports+=("$AGENT_B_PORT" "$AGENT_B_ADMIN_PORT")
for p in "${ports[@]}"; do
	if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
		echo "bench/proxy: port $p is in use; set BENCH_*_PORT" >&2; exit 1
	fi
done

W=$(mktemp -d /tmp/sluice-bench-proxy.XXXXXX)
RESULTS=${RESULTS:-$W}
mkdir -p "$RESULTS" "$W/up/tmp" "$W/proxy/tmp"
TSV=$RESULTS/results.tsv
CLK_TCK=$(getconf CLK_TCK)

# Processes this script started, stopped on exit (and only those).
PIDS=()
cleanup() {
	local p
	for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_http() { # url
	local i
	for i in $(seq 1 200); do
		curl -fsS -o /dev/null --max-time 1 "$1" 2>/dev/null && return 0
		sleep 0.05
	done
	echo "bench/proxy: $1 did not answer" >&2
	return 1
}

# --- the upstream ---------------------------------------------------------
case "$UPSTREAM" in
nginx)
	sed -e "s/127.0.0.1:18090/127.0.0.1:$UP_PORT/" "$HERE/upstream/nginx.conf" >"$W/up/nginx.conf"
	nginx -p "$W/up" -c "$W/up/nginx.conf" 2>"$W/upstream.log" &
	;;
demoapp)
	"$ROOT/bin/sluice-demoapp" --listen "127.0.0.1:$UP_PORT" --revision "$REV" 2>"$W/upstream.log" &
	;;
*) echo "bench/proxy: UPSTREAM must be nginx or demoapp" >&2; exit 2 ;;
esac
UP_PID=$!
PIDS+=("$UP_PID")
wait_http "http://127.0.0.1:$UP_PORT/"

# --- the agent: one service, one revision at 100 %, no NATS ---------------
start_agent() { # name binary port admin-port → sets AGENT_STARTED_PID
	mkdir -p "$W/$1-state"
	cat >"$W/$1.yaml" <<EOF
id: bench-$1
labels: {bench: proxy}
# Nothing listens here: the agent keeps serving its initial revision and
# retries the connection in the background (about once a second).
nats: nats://127.0.0.1:1
stateDir: $W/$1-state
admin: 127.0.0.1:$4
services:
  - name: bench
    listen: 127.0.0.1:$3
    initial: $REV
    revisions:
      $REV: [127.0.0.1:$UP_PORT]
EOF
	"$2" --config "$W/$1.yaml" --log-level warn --shutdown-grace 1s 2>"$W/$1.log" &
	AGENT_STARTED_PID=$!
	PIDS+=("$AGENT_STARTED_PID")
	wait_http "http://127.0.0.1:$4/readyz"
}
start_agent agent "$AGENT_BIN" "$AGENT_PORT" "$ADMIN_PORT"
AGENT_PID=$AGENT_STARTED_PID
AGENT_B_PID=""
if [ -n "$AGENT_B_BIN" ]; then
	start_agent agent-b "$AGENT_B_BIN" "$AGENT_B_PORT" "$AGENT_B_ADMIN_PORT"
	AGENT_B_PID=$AGENT_STARTED_PID
fi

# --- nginx as the reference proxy ----------------------------------------
sed -e "s/127.0.0.1:18090/127.0.0.1:$UP_PORT/" -e "s/127.0.0.1:18081/127.0.0.1:$NGINX_PORT/" \
	"$HERE/nginx.conf" >"$W/proxy/nginx.conf"
nginx -p "$W/proxy" -c "$W/proxy/nginx.conf" 2>"$W/nginx.log" &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
wait_http "http://127.0.0.1:$NGINX_PORT/"

# Both proxies answer with the upstream's body and the revision header.
for port in "$AGENT_PORT" "$NGINX_PORT" ${AGENT_B_BIN:+"$AGENT_B_PORT"}; do
	hdr=$(curl -fsS -D - -o /dev/null "http://127.0.0.1:$port/")
	grep -qi "^x-sluice-revision: $REV" <<<"$hdr" || { echo "bench/proxy: port $port did not answer with the revision header:" >&2; echo "$hdr" >&2; exit 1; }
done

children() { pgrep -P "$1" | tr '\n' ' '; }
NGINX_WORKERS=$(children "$NGINX_PID")
UP_WORKERS=""
[ "$UPSTREAM" = nginx ] && UP_WORKERS=$(children "$UP_PID")
GOMAXPROCS_AGENT=$(curl -fsS "http://127.0.0.1:$ADMIN_PORT/metrics" | awk '/^go_sched_gomaxprocs_threads /{print $2}')

# CPU ticks (user + system) used so far by the given processes.
ticks() {
	local t=0 p f
	for p in "$@"; do
		read -r -a f <"/proc/$p/stat" || continue
		t=$((t + f[13] + f[14]))
	done
	echo "$t"
}

url_of() {
	case "$1" in
	direct) echo "http://127.0.0.1:$UP_PORT/" ;;
	agent) echo "http://127.0.0.1:$AGENT_PORT/" ;;
	agent-b) echo "http://127.0.0.1:$AGENT_B_PORT/" ;;
	nginx) echo "http://127.0.0.1:$NGINX_PORT/" ;;
	esac
}
proxy_pids() {
	case "$1" in
	direct) ;;
	agent) echo "$AGENT_PID" ;;
	agent-b) echo "$AGENT_B_PID" ;;
	nginx) echo "$NGINX_PID $NGINX_WORKERS" ;;
	esac
}
conns_of() { [ "$1" = serial ] && echo 1 || echo "$CONNS"; }

# run profile round target: one wrk run, one line in the TSV.
run() {
	local profile=$1 round=$2 target=$3 conns load p0 u0 p1 u1 out line
	conns=$(conns_of "$profile")
	load=$(cut -d' ' -f1 /proc/loadavg)
	# shellcheck disable=SC2046
	p0=$(ticks $(proxy_pids "$target"))
	# shellcheck disable=SC2086
	u0=$(ticks "$UP_PID" $UP_WORKERS)
	out=$(wrk -t"$THREADS" -c"$conns" -d"${DURATION}s" --latency -s "$HERE/wrk-report.lua" "$(url_of "$target")")
	# shellcheck disable=SC2046
	p1=$(ticks $(proxy_pids "$target"))
	# shellcheck disable=SC2086
	u1=$(ticks "$UP_PID" $UP_WORKERS)
	printf '%s\n' "$out" >"$RESULTS/wrk-$profile-$round-$target.txt"
	line=$(grep '^RESULT ' <<<"$out") || { echo "bench/proxy: no result from wrk:" >&2; echo "$out" >&2; exit 1; }
	# shellcheck disable=SC2086
	local $(sed 's/^RESULT //' <<<"$line")
	if [ "$socket_errors" != 0 ] || [ "$non2xx" != 0 ]; then
		echo "bench/proxy: $target had $socket_errors socket errors and $non2xx non-2xx answers" >&2
	fi
	local pcpu ucpu
	pcpu=$(awk -v t=$((p1 - p0)) -v n="$requests" -v hz="$CLK_TCK" 'BEGIN{printf "%.1f", t*1e6/hz/n}')
	ucpu=$(awk -v t=$((u1 - u0)) -v n="$requests" -v hz="$CLK_TCK" 'BEGIN{printf "%.1f", t*1e6/hz/n}')
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$profile" "$round" "$target" "$rps" "$p50_us" "$p90_us" "$p99_us" "$max_us" \
		"$((socket_errors + non2xx))" "$pcpu" "$ucpu" "$load" >>"$TSV"
	printf '  %-6s round %d %-6s %9.0f req/s  p50 %6.3f ms  p99 %6.3f ms  proxy CPU %5s µs/req  upstream CPU %5s µs/req  load %s\n' \
		"$profile" "$round" "$target" "$rps" "$(awk -v x="$p50_us" 'BEGIN{print x/1000}')" "$(awk -v x="$p99_us" 'BEGIN{print x/1000}')" \
		"$pcpu" "$ucpu" "$load"
}

echo "== bench/proxy $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo) RAM"
echo "versions: $(nginx -v 2>&1 | sed 's/^nginx version: //'), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2), $(go version 2>/dev/null | cut -d' ' -f3)"
echo "upstream: $UPSTREAM on 127.0.0.1:$UP_PORT; agent on :$AGENT_PORT (GOMAXPROCS $GOMAXPROCS_AGENT); nginx on :$NGINX_PORT ($(wc -w <<<"$NGINX_WORKERS") workers)"
echo "load: wrk -t$THREADS, profile load = -c$CONNS, profile serial = -c1; ${DURATION}s per run, $ROUNDS rounds, order rotating; nothing pinned"
[ -n "$AGENT_B_BIN" ] && echo "agent: $AGENT_BIN; agent-b: $AGENT_B_BIN on :$AGENT_B_PORT"
echo "raw output: $RESULTS"
printf 'profile\tround\ttarget\trps\tp50_us\tp90_us\tp99_us\tmax_us\terrors\tproxy_cpu_us_per_req\tupstream_cpu_us_per_req\tload1\n' >"$TSV"

TARGETS=(direct agent nginx)
[ -n "$AGENT_B_BIN" ] && TARGETS+=(agent-b)
for profile in $PROFILES; do
	# Warm every path (connection pools, heap sizing) before measuring.
	for t in "${TARGETS[@]}"; do
		wrk -t"$THREADS" -c"$(conns_of "$profile")" -d"${WARMUP}s" "$(url_of "$t")" >/dev/null
	done
	for round in $(seq 1 "$ROUNDS"); do
		for i in "${!TARGETS[@]}"; do
			run "$profile" "$round" "${TARGETS[$(((round - 1 + i) % ${#TARGETS[@]}))]}"
		done
	done
done

# --- summary: medians over rounds ----------------------------------------
median() { sort -g | awk '{a[NR]=$1} END{if (NR==0) exit; if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
col() { # profile target column → values
	awk -F'\t' -v p="$1" -v t="$2" -v c="$3" 'NR>1 && $1==p && $3==t {print $c}' "$TSV"
}
# paired per-round figure: an agent vs nginx (or direct) in the same round
paired() { # profile column op agent-target → one value per round
	awk -F'\t' -v p="$1" -v c="$2" -v op="$3" -v at="$4" 'NR>1 && $1==p {v[$2" "$3]=$c; r[$2]=1}
		END{for (k in r) {a=v[k" "at]; n=v[k" nginx"]; d=v[k" direct"];
			if (op=="ratio") print a/n; else if (op=="dn") print (a-n)/1000; else print (a-d)/1000}}' "$TSV"
}
echo
echo "== medians over $ROUNDS rounds (upstream: $UPSTREAM)"
for profile in $PROFILES; do
	echo "profile $profile (wrk -t$THREADS -c$(conns_of "$profile") -d${DURATION}s --latency)"
	printf '  %-7s %10s %9s %9s %9s %12s %15s\n' target "req/s" "p50 ms" "p90 ms" "p99 ms" "proxy µs/req" "upstream µs/req"
	for t in "${TARGETS[@]}"; do
		printf '  %-7s %10.0f %9.3f %9.3f %9.3f %12s %15s\n' "$t" "$(col "$profile" "$t" 4 | median)" \
			"$(col "$profile" "$t" 5 | median | awk '{print $1/1000}')" \
			"$(col "$profile" "$t" 6 | median | awk '{print $1/1000}')" \
			"$(col "$profile" "$t" 7 | median | awk '{print $1/1000}')" \
			"$(col "$profile" "$t" 10 | median)" "$(col "$profile" "$t" 11 | median)"
	done
	for a in agent ${AGENT_B_BIN:+agent-b}; do
		a_rps=$(col "$profile" "$a" 4 | median); n_rps=$(col "$profile" nginx 4 | median)
		a99=$(col "$profile" "$a" 7 | median); n99=$(col "$profile" nginx 7 | median); d99=$(col "$profile" direct 7 | median)
		printf '  %s/nginx throughput: %.3f (ratio of medians), %.3f (median of per-round ratios)  goal ≥ 0.9\n' "$a" \
			"$(awk -v a="$a_rps" -v n="$n_rps" 'BEGIN{print a/n}')" "$(paired "$profile" 4 ratio "$a" | median)"
		printf '  added p99, %s − nginx: %+.3f ms (medians), %+.3f ms (median per round)  goal ≤ 1 ms\n' "$a" \
			"$(awk -v a="$a99" -v n="$n99" 'BEGIN{print (a-n)/1000}')" "$(paired "$profile" 7 dn "$a" | median)"
		printf '  added p99, %s − direct: %+.3f ms (medians), %+.3f ms (median per round); nginx − direct: %+.3f ms\n' "$a" \
			"$(awk -v a="$a99" -v d="$d99" 'BEGIN{print (a-d)/1000}')" "$(paired "$profile" 7 dd "$a" | median)" \
			"$(awk -v n="$n99" -v d="$d99" 'BEGIN{print (n-d)/1000}')"
	done
done
errs=$(awk -F'\t' 'NR>1 {s+=$9} END{print s+0}' "$TSV")
echo "errors (socket + non-2xx) over all runs: $errs"

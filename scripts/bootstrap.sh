#!/usr/bin/env bash
# Installs what the local stack and the tests need and is missing, then
# builds the project's tools. Safe to run again: each step checks first.
#
#   scripts/bootstrap.sh          system packages + Go tools + Temporal dev server
#   scripts/bootstrap.sh bench    also the benchmark peers (nginx, wrk)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TOOLS=$ROOT/.tools/bin
mkdir -p "$TOOLS" "$ROOT/bin"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# --- Go ------------------------------------------------------------------
if ! command -v go >/dev/null 2>&1; then
	if [ -x /usr/local/go/bin/go ]; then export PATH=/usr/local/go/bin:$PATH; else
		echo "Go 1.26 or newer is required (https://go.dev/dl/); it was not found on PATH" >&2; exit 1
	fi
fi
gov=$(go env GOVERSION | sed 's/^go//')
case "$gov" in
	1.2[6-9]*|1.[3-9]*) ;;
	*) echo "Go $gov found; Sluice needs Go 1.26 or newer" >&2; exit 1 ;;
esac

# --- system packages (Debian/Ubuntu) --------------------------------------
pkgs=()
command -v clickhouse-server >/dev/null 2>&1 || pkgs+=(clickhouse-server clickhouse-client)
command -v prometheus >/dev/null 2>&1 || pkgs+=(prometheus)
if [ "${1:-}" = bench ]; then
	command -v nginx >/dev/null 2>&1 || pkgs+=(nginx-light)
	command -v wrk >/dev/null 2>&1 || pkgs+=(wrk)
fi
if [ ${#pkgs[@]} -gt 0 ]; then
	say "installing ${pkgs[*]} with apt"
	SUDO=""
	[ "$(id -u)" -eq 0 ] || SUDO=sudo
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi

# --- Go tools, pinned -------------------------------------------------------
install_tool() { # name module@version
	local name=$1 mod=$2 stamp="$TOOLS/.$1.version"
	if [ -x "$TOOLS/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$mod" ]; then return; fi
	say "installing $mod"
	GOBIN=$TOOLS go install "$mod"
	echo "$mod" >"$stamp"
}
install_tool buf github.com/bufbuild/buf/cmd/buf@v1.75.0
install_tool protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
install_tool protoc-gen-connect-go connectrpc.com/connect/cmd/protoc-gen-connect-go@v1.21.1

# --- Temporal dev server (its own module: it cannot share the app's graph) ---
stamp=$(cat tools/temporal-dev/go.sum tools/temporal-dev/*.go | sha256sum | cut -c1-16)
if [ ! -x bin/temporal-dev ] || [ "$(cat bin/.temporal-dev.stamp 2>/dev/null)" != "$stamp" ]; then
	say "building the Temporal dev server (about 5 minutes the first time)"
	(cd tools/temporal-dev && GOWORK=off go build -trimpath -o "$ROOT/bin/temporal-dev" .)
	echo "$stamp" >bin/.temporal-dev.stamp
fi

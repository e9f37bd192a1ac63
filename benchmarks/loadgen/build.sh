#!/usr/bin/env bash
# Builds the C++ load generator of benchmarks/pay_throughput.py (--client cpp):
#   benchmarks/loadgen/build.sh      -> benchmarks/loadgen/build/pay_load
# Quick when nothing changed: it skips the build while the binary is newer than
# pay_load.cc, this script and protos/scanpay/v1/*.proto. It needs Debian's gRPC C++
# packages; as root it installs the missing ones (as ./run does), otherwise it exits 3.
# Generated code, objects and the binary stay in benchmarks/loadgen/build/ (ignored by git).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BUILD=$HERE/build
BIN=$BUILD/pay_load
CXX=${CXX:-g++}
DEBIAN_PACKAGES="g++ pkg-config libgrpc++-dev libprotobuf-dev protobuf-compiler-grpc"

log() { printf '[loadgen] %s\n' "$*" >&2; }

setup_debian() {
    local missing=() installed=""
    if command -v dpkg-query >/dev/null 2>&1; then
        # shellcheck disable=SC2086
        installed=$(dpkg-query -W -f='${Package} ${Status}\n' $DEBIAN_PACKAGES 2>/dev/null \
            | awk '/ install ok installed$/ {print $1}' || true)
        for pkg in $DEBIAN_PACKAGES; do
            grep -qx "$pkg" <<<"$installed" || missing+=("$pkg")
        done
    fi
    if [ ${#missing[@]} -gt 0 ]; then
        if [ "$(id -u)" -ne 0 ]; then
            log "missing Debian packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})"
            exit 3
        fi
        log "installing Debian packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        if ! { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }; then
            log "could not install: ${missing[*]}"
            exit 3
        fi
    fi
}

check_tools() {
    local tool
    for tool in "$CXX" pkg-config protoc grpc_cpp_plugin; do
        command -v "$tool" >/dev/null 2>&1 || { log "$tool not found"; exit 3; }
    done
    pkg-config --exists grpc++ protobuf || { log "pkg-config finds no grpc++ or protobuf"; exit 3; }
}

SOURCES=("$HERE/pay_load.cc" "$HERE/build.sh" "$ROOT"/protos/scanpay/v1/*.proto)
up_to_date() {
    [ -x "$BIN" ] || return 1
    local src
    for src in "${SOURCES[@]}"; do
        [ "$src" -nt "$BIN" ] && return 1
    done
    return 0
}

setup_debian
up_to_date && exit 0
mkdir -p "$BUILD"
exec 9>"$BUILD/.lock"
flock 9  # one build at a time; the one that waited may find it done
up_to_date && exit 0
check_tools

log "building $BIN"
GEN=$BUILD/gen
OBJ=$BUILD/obj
rm -rf "$GEN" "$OBJ"
mkdir -p "$GEN" "$OBJ"
(cd "$ROOT" && protoc -I . -I "$(pkg-config --variable=includedir protobuf)" \
    --cpp_out="$GEN" --grpc_out="$GEN" --plugin=protoc-gen-grpc="$(command -v grpc_cpp_plugin)" \
    protos/scanpay/v1/*.proto)

read -r -a CFLAGS <<<"-std=c++17 -O2 -Wall -I$GEN $(pkg-config --cflags grpc++ protobuf)"
read -r -a LIBS <<<"$(pkg-config --libs grpc++ protobuf)"
pids=()
objs=()
for src in "$GEN"/protos/scanpay/v1/*.cc "$HERE/pay_load.cc"; do
    obj=$OBJ/$(basename "${src%.cc}").o
    objs+=("$obj")
    "$CXX" "${CFLAGS[@]}" -c "$src" -o "$obj" &
    pids+=($!)
done
for pid in "${pids[@]}"; do
    wait "$pid"
done
"$CXX" -O2 "${objs[@]}" "${LIBS[@]}" -o "$BIN.tmp"
mv -f "$BIN.tmp" "$BIN"
log "built $BIN"

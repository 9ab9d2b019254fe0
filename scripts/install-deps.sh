#!/usr/bin/env bash
# Installs the Debian packages the build needs, when they are missing.
# Runs as root (or with sudo available). The CUDA toolkit is optional and not installed here.
# hipRTC (for the HIP target, compiled without a GPU in CI) comes from Debian's ROCm 5.2:
# libamdhip64-dev pulls libamdhip64.so.5, whose hiprtc* entries the library dlopens, and
# libamd-comgr2, the compiler behind them (it embeds the device libraries and headers).
set -euo pipefail

need=()
have_file() { [ -e "$1" ]; }
have_file /usr/lib/x86_64-linux-gnu/libluajit-5.1.a || need+=(libluajit-5.1-dev)
have_file /usr/include/jansson.h                     || need+=(libjansson-dev)
have_file /usr/lib/x86_64-linux-gnu/libcheck.a       || need+=(check)
have_file /usr/lib/x86_64-linux-gnu/libsubunit.a     || need+=(libsubunit-dev)
have_file /usr/include/x86_64-linux-gnu/openblas-pthread/cblas.h|| need+=(libopenblas-dev)
have_file /usr/include/sqlite3.h                     || need+=(libsqlite3-dev)
# Debian ships ROCm for amd64 only.
if [ "$(uname -m)" = x86_64 ]; then
  have_file /usr/lib/x86_64-linux-gnu/libamdhip64.so.5 || need+=(libamdhip64-dev)
  have_file /usr/lib/x86_64-linux-gnu/libamd_comgr.so.2 || need+=(libamd-comgr2)
fi
# make demo trains on the fortune cookie files (English text).
have_file /usr/share/games/fortunes/wisdom          || need+=(fortunes)
command -v cmake >/dev/null                          || need+=(cmake)
command -v gcc >/dev/null                            || need+=(gcc)
command -v make >/dev/null                           || need+=(make)
command -v pkg-config >/dev/null                     || need+=(pkg-config)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
echo "install-deps: installing ${need[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"

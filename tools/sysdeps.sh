#!/usr/bin/env bash
# Installs the system libraries ccomp builds against when they are missing
# (Debian/Ubuntu, via apt-get; needs root or sudo).  Safe to run repeatedly.
set -euo pipefail
need=()
have_header() { echo "#include <$1>" | ${CC:-cc} -E -x c - >/dev/null 2>&1; }
command -v ${CC:-cc} >/dev/null 2>&1 || need+=(build-essential)
have_header zlib.h || need+=(zlib1g-dev)
have_header lz4frame.h || need+=(liblz4-dev)
have_header zstd.h || need+=(libzstd-dev)
# clang with libFuzzer for `make fuzz`
command -v clang >/dev/null 2>&1 || need+=(clang)
command -v xz >/dev/null 2>&1 || need+=(xz-utils)
# pdftoppm renders the real PDF pages bundled in python/ccomp/data/docs for ccomp.pages (document tokens)
command -v pdftoppm >/dev/null 2>&1 || need+=(poppler-utils)
python3 -c "import venv, ensurepip" >/dev/null 2>&1 || need+=(python3-venv)
python3 -c "import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))" || need+=(python3-dev)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
echo "ccomp: installing missing system packages: ${need[*]}" >&2
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ccomp: apt-get not found; install these yourself: ${need[*]}" >&2
  exit 1
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null

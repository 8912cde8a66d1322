#!/usr/bin/env bash
# Set up .venv with paratrain installed (editable). Extras as arguments: bash scripts/setup.sh test
#
# torch is installed first and pinned: in a fresh environment an open range
# such as torch>=2.4 makes pip pick the newest CUDA build (several GB), even
# on a machine without a GPU. PARATRAIN_TORCH overrides the requirement and
# PARATRAIN_TORCH_INDEX the index, e.g. https://download.pytorch.org/whl/cpu
# for the small CPU-only build on a machine without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
extras=${1:-}

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($python --version)" >&2
  "$python" -m venv .venv
fi
# `--link 100mbit` (emulated hosts) needs ip and tc from iproute2. Installed here when missing and
# we are root; anything else only warns: the rest of paratrain works without them.
has_command() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }
if ! has_command ip || ! has_command tc; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing iproute2 (ip, tc) for emulated network links" >&2
    if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 &&
           DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 >/dev/null 2>&1; }; then
      echo "setup: warning: could not install iproute2; --link other than loopback will not work" >&2
    fi
  else
    echo "setup: warning: ip/tc (iproute2) not found; --link other than loopback needs them and root" >&2
  fi
fi

pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)

torch_requirement=${PARATRAIN_TORCH:-torch==2.13.0}
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  echo "setup: installing $torch_requirement" >&2
  if [ -n "${PARATRAIN_TORCH_INDEX:-}" ]; then
    "${pip[@]}" "$torch_requirement" --index-url "$PARATRAIN_TORCH_INDEX"
  else
    "${pip[@]}" "$torch_requirement"
  fi
fi

target="."
[ -n "$extras" ] && target=".[$extras]"
echo "setup: installing paratrain${extras:+ with [$extras]}" >&2
"${pip[@]}" -e "$target"

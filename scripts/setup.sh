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

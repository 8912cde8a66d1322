#!/usr/bin/env bash
# Set up, then train the demo job: Friedman #1 data, an MLP 256-256, with `single` and `ddp` (2 workers).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/paratrain demo "$@"

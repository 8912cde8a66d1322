#!/usr/bin/env bash
# On a machine with one NVIDIA GPU: every strategy that can run on one GPU trains on CUDA (NCCL
# process group where the strategy needs one, which exercises the metric all-reduce of CPU
# float64 vectors through the GPU), and fp32 / bf16 / fp16 training speed side by side.
#
#   bash benchmarks/gpu_check.sh OUT_DIR
#
# Prints one line per run (strategy, precision, status, samples/s, val_r2) and writes
# OUT_DIR/gpu_check.tsv. Needs the package installed (bash scripts/setup.sh) and a CUDA torch.
set -uo pipefail
out=${1:-gpu-check}
mkdir -p "$out"
py=${PYTHON:-python}
"$py" - "$out" <<'PY'
import sys, time, json, subprocess
from pathlib import Path
import numpy as np, pandas as pd, torch
out = Path(sys.argv[1])
assert torch.cuda.is_available(), "no CUDA device"
rng = np.random.default_rng(0)
x = rng.uniform(size=(65536, 10))
y = 10 * np.sin(np.pi * x[:, 0] * x[:, 1]) + 20 * (x[:, 2] - 0.5) ** 2 + 10 * x[:, 3] + 5 * x[:, 4]
frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(10)]); frame["y"] = y
data = out / "friedman1.csv"; frame.to_csv(data, index=False)
runs = [(s, "fp32") for s in ("single", "ddp", "fsdp", "zero1", "tensor:1", "localsgd:8", "sparse:0.01")]
runs += [("single", p) for p in ("bf16", "fp16")] + [("fsdp", "bf16"), ("ddp", "bf16")]
rows = []
for strategy, precision in runs:
    run_dir = out / f"{strategy.replace(':', '-')}-{precision}"
    cmd = [sys.executable, "-m", "paratrain", "fit", "--data", str(data), "--target", "y", "--device", "cuda",
           "--strategy", strategy, "--workers", "1", "--precision", precision, "--hidden", "2048,2048,2048",
           "--batch-size", "1024", "--epochs", "3", "--out", str(run_dir)]
    started = time.time()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").is_file() else {}
    status = "ok" if done.returncode == 0 else "FAILED: " + (done.stderr.strip().splitlines() or ["?"])[-1]
    rows.append((strategy, precision, status, summary.get("samples_per_s"), summary.get("val_r2"),
                 summary.get("peak_memory_bytes"), round(time.time() - started, 1)))
    print("\t".join(map(str, rows[-1])), flush=True)
(out / "gpu_check.tsv").write_text("\n".join("\t".join(map(str, r)) for r in rows) + "\n")
PY

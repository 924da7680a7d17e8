#!/usr/bin/env bash
# Seconds per update of DreamerV3 size S on Atari shapes (3x64x64, 18 actions) on a GPU, in fp32,
# bf16 and with the whole update captured as a CUDA graph (run.cuda_graph=true), and the hours one
# Atari 100k game would spend in updates: 400k frames at action repeat 4 = 100k agent steps, train
# ratio 1024 with 16 x 64 batches = 100k updates (acting and env steps not included).
#   bash benchmarks/gpu_atari.sh [OUT_DIR]      (default runs/bench/gpu_atari)
set -euo pipefail
out=${1:-runs/bench/gpu_atari}
mkdir -p "$out"
common=(--backbone rssm --preset s --obs-shape 3,64,64 --action-dim 18 --device cuda --updates 20)
python benchmarks/throughput.py "${common[@]}" --set run.precision=fp32 --out "$out/fp32.json"
python benchmarks/throughput.py "${common[@]}" --set run.precision=bf16 --out "$out/bf16.json"
python benchmarks/throughput.py "${common[@]}" --set run.cuda_graph=true --set run.precision=fp32 \
  --out "$out/graph_fp32.json"
python benchmarks/throughput.py "${common[@]}" --set run.cuda_graph=true --set run.precision=bf16 \
  --out "$out/graph_bf16.json"
python - "$out" <<'PY'
import json, sys
from pathlib import Path
updates = 400_000 // 4 * 1024 // (16 * 64)
for f in sorted(Path(sys.argv[1]).glob("*.json")):
    s = json.loads(f.read_text())["update"]["median_s"]
    print(f"{f.stem:11s} {s:.4f} s/update -> {updates * s / 3600:.2f} h of updates per Atari 100k game")
PY

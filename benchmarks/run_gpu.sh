#!/bin/bash
# The GPU side of the benchmarks, for a CUDA machine: the CUDA tests, the GPU
# row of the ISBI evaluation (3 min), tiling (our small net and the paper net
# in bf16, MONAI), elastic deformation and training throughput on the GPU.
# Results go to $OUT (default benchmarks/results/gpu).  Needs the ISBI data
# (../shared/data/isbi2012 or $NAPARI_UNET_ISBI_DIR); MONAI and elasticdeform
# are optional (their rows are skipped without them).
#
#   bash benchmarks/run_gpu.sh
set -u
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
T0=$(date +%s)
stamp() { echo "== $(($(date +%s) - T0)) s: $*"; }
python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU: nothing to do')" || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
stamp "CUDA tests"
python3 -m pytest -c /dev/null --rootdir=. -p no:cacheprovider -q -rs \
    tests/test_training.py tests/test_tiling.py tests/test_augment.py -k cuda 2>&1 | tee "$OUT/cuda_tests.log" | tail -5
stamp "GPU evaluation row (3 min)"
python3 -m benchmarks.bench_evaluation --only a --devices cuda --no-docs 2>&1 | tail -4
cp benchmarks/results/evaluation.json "$OUT/evaluation_gpu.json"
stamp "tiling on the GPU"
python3 - "$OUT/tiling_gpu.json" <<'PY'
import json, sys
from benchmarks import bench_tiling as bt
out = {}
for peer in ("cuda-small", "cuda-monai", "cuda-paper"):
    try:
        out[peer] = bt._spawn(peer, 30)
    except Exception as exc:  # MONAI missing, say: keep the others
        out[peer] = {"error": str(exc)[-500:]}
    print(peer, json.dumps(out[peer]), flush=True)
json.dump(out, open(sys.argv[1], "w"), indent=1)
p = out["cuda-paper"]
if "seconds" in p:
    mpx = 30 * 512 * 512 / 1e6 / p["seconds"]
    tflops = mpx * 1e6 * bt.FLOP_PER_OUTPUT_PIXEL / 1e12
    print(f"paper net: {mpx:.1f} Mpx/s = {tflops:.0f} TFLOP/s, "
          f"{100 * tflops / p['matmul_bf16_tflops']:.0f} % of the measured bf16 matmul rate; "
          f"one 512x512 slice {p['one_slice_s'] * 1e3:.0f} ms")
PY
stamp "elastic deformation, training throughput"
python3 -m benchmarks.bench_elastic --quick 2>&1 | tail -9
cp benchmarks/results/elastic.json "$OUT/elastic_gpu.json"
python3 -m benchmarks.bench_training --quick 2>&1 | tail -5
cp benchmarks/results/training.json "$OUT/training_gpu.json" 2>/dev/null
stamp done

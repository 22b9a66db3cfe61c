#!/usr/bin/env bash
# The one prepared command for a lent GPU (the `device` tool): the machine, the GPU tests, then
# benchmarks/gpu_throughput.py, each log under $OUT. The device has torch, transformers and the rest
# of distilsent's core dependencies; ../shared does not travel, so SST-2 dev goes in a carried folder.
# The tracked tree is about 60 MB (57 of them the default model) of the 64 MiB a call may send.
#
#   here, once:  mkdir -p .device/sst2 && cp ../shared/data/sst2/dev.tsv .device/sst2/ \
#                && echo /.device/ >> .git/info/exclude
#   device:      run(command="bash scripts/device_run.sh", carry=[".device"], timeout_s=540)
#   CPU dry run: DEVICE=cpu bash scripts/device_run.sh      (here; the GPU tests skip)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d)}
DEVICE=${DEVICE:-cuda}
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
export DISTILSENT_SST2_DIR=${DISTILSENT_SST2_DIR:-$PWD/.device/sst2}
[ -f "$DISTILSENT_SST2_DIR/dev.tsv" ] || DISTILSENT_SST2_DIR=$PWD/../shared/data/sst2
PY=${PYTHON:-python3}
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
    $PY -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__)"
} 2>&1 | tee "$OUT/machine.txt"
$PY -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$OUT/gpu_tests.txt"
if [ "$DEVICE" = cpu ]; then
    $PY benchmarks/gpu_throughput.py --device cpu --texts 2000 --batch-size 64 --pipeline-texts 500 2>&1 \
        | tee "$OUT/gpu_throughput.txt"
else
    $PY benchmarks/gpu_throughput.py --texts 200000 2>&1 | tee "$OUT/gpu_throughput.txt"
fi
echo "logs in $OUT"

#!/usr/bin/env bash
# GPU smoke check for issue #30, from the repository root (well under 10 minutes on one GPU):
#   bash scripts/gpu_smoke.sh
# Without a GPU it prints "no GPU: nothing to check" and exits 0. With one it runs, each printed
# as PASS, FAIL or PENDING (PENDING: needs work not done yet, named on the line):
#   1. trains a tiny FlexMDM (configs/toy.yaml, 40 steps) with train.device=cuda and on the CPU:
#      the same first loss (relative 1e-4), the last within 5 %;
#   2. runs the CPU-trained model on CUDA: logits and gaps equal the CPU's within 1e-4;
#   3. samples 1000 sequences on CUDA and on the CPU (flexmdm sample --device): length
#      distributions within TV 0.15;
#   4. with 2 GPUs, trains on 2 processes with NCCL: the first losses equal the 1-process run's
#      within 1e-4 (PENDING with fewer GPUs);
#   5. retrofits a tiny native LLaDA checkpoint through the config's retrofit section on CUDA and
#      on the CPU (float32 base): same first loss, adapters written;
#   6. the same retrofit with a bfloat16 base (retrofit.base_dtype) under bf16 autocast, sharded by
#      FSDP (train.strategy=fsdp) over 2 processes (1 with one GPU), checkpointed with
#      torch.distributed.checkpoint: first loss within 3 % of the float32 CPU run's, last within 15 %.
# Exits 1 if a check failed, else 0. GPU_SMOKE_DEVICE=cpu runs every check with the CPU standing
# in for the GPU (gloo for the 2 processes): a test of this script on a machine without one.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
if [ "${GPU_SMOKE_DEVICE:-cuda}" = cuda ] && [ "$("$PYTHON" -c 'import torch; print(torch.cuda.is_available())')" != True ]; then
    echo "no GPU: nothing to check (torch.cuda.is_available() is false)"
    exit 0
fi
exec "$PYTHON" scripts/gpu_smoke.py

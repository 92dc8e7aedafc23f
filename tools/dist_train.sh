#!/usr/bin/env bash
# Usage: tools/dist_train.sh CONFIG NUM_PROCS [options of tools/train.py]
# Same as mmpretrain's/mmseg's dist_train.sh; NUM_PROCS processes (GPUs, or gloo on CPU).
set -euo pipefail
CONFIG=$1

NPROCS=$2
shift 2
PYTHON=${PYTHON:-python}
exec "$PYTHON" -m torch.distributed.run --nnodes=${NNODES:-1} --node_rank=${NODE_RANK:-0} \
    --master_addr=${MASTER_ADDR:-127.0.0.1} --nproc_per_node="$NPROCS" --master_port=${PORT:-29500} \
    "$(dirname "$0")/train.py" "$CONFIG" --launcher pytorch "$@"

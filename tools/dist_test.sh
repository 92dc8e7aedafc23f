#!/usr/bin/env bash
# Usage: tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCS [options of tools/test.py]
# Same as mmpretrain's/mmseg's dist_test.sh; NUM_PROCS processes (GPUs, or gloo on CPU).
set -euo pipefail
CONFIG=$1
CHECKPOINT=$2; shift
NPROCS=$2
shift 2
PYTHON=${PYTHON:-python}
exec "$PYTHON" -m torch.distributed.run --nnodes=${NNODES:-1} --node_rank=${NODE_RANK:-0} \
    --master_addr=${MASTER_ADDR:-127.0.0.1} --nproc_per_node="$NPROCS" --master_port=${PORT:-29500} \
    "$(dirname "$0")/test.py" "$CONFIG" "$CHECKPOINT" --launcher pytorch "$@"

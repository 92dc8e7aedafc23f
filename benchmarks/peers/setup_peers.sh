#!/usr/bin/env bash
# Set up benchmarks/peers/.venv-spu with SecretFlow SPU for the peer benchmark (compare.py).
# SPU runs in its own environment (it pins jax 0.4.34 and numpy < 2, which our stack does not
# need); it gets the weights as .npz from our environment, so no torch here.
# Safe to re-run: the install is skipped when the pinned versions are there.
# Seen working: Python 3.11, spu 0.9.5 (jax/jaxlib 0.4.34, numpy 1.26.4), x86-64 Linux.
set -euo pipefail
cd "$(dirname "$0")"
VENV=.venv-spu
PY=${PYTHON:-python3}
SPU=0.9.5
JAX=0.4.34

log() { printf '[setup_peers] %s\n' "$*"; }

[ -x "$VENV/bin/python" ] || { log "creating $VENV"; "$PY" -m venv "$VENV"; }
if ! "$VENV/bin/python" -c "import spu, jax, sys; sys.exit(spu.__version__ != '$SPU' or jax.__version__ != '$JAX')" 2>/dev/null; then
  log "installing spu $SPU (jax $JAX)"
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q "spu==$SPU" "jax==$JAX" "jaxlib==$JAX" \
    || { log "pip could not install spu $SPU for $("$VENV/bin/python" -V) (tested: Python 3.11; set PYTHON=python3.11)"; exit 1; }
fi
# smoke check: a ReLU of a product under ABY3 on three in-memory parties
JAX_PLATFORMS=cpu "$VENV/bin/python" - <<'PYEOF'
import numpy as np, jax.numpy as jnp
import spu, spu.libspu as L
from spu.utils import simulation as sim
s = sim.Simulator.simple(3, L.ProtocolKind.ABY3, L.FieldType.FM64)
x, w = np.array([[1.5, -2.0]], np.float32), np.array([[1.0], [0.5]], np.float32)
y = sim.sim_jax(s, lambda x, w: jnp.maximum(x @ w, 0))(x, w)
assert abs(float(np.asarray(y)[0, 0]) - 0.5) < 1e-3, y
print(f'[setup_peers] spu {spu.__version__} ABY3 works')
PYEOF
log "environment ready: $PWD/$VENV"

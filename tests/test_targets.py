"""The kernels compiled for other CPUs than this one: AVX2 without AVX-512, and no SIMD.

``cnn.simd`` picks its blocks (or the portable loops) from the CPU features Numba
compiles for, and the SIMD helpers (``add_run``, ``pairs_run``, ...) take the vector
width from them. A fresh process told to compile for another target
(``NUMBA_CPU_NAME``/``NUMBA_CPU_FEATURES``, an empty cache) must choose the blocks of
that target, compile, and train Example 3 to the weights this process gets, to
round-off (the summation orders of the kernel gradient and the activations' vector
width differ). The code runs on this CPU, which has every feature asked for.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import cnn

pytestmark = pytest.mark.slow  # two cold compiles: about a minute each

ROOT = Path(__file__).resolve().parents[1]

TARGETS = {
    # name: (NUMBA_CPU_NAME, NUMBA_CPU_FEATURES, the blocks simd.choose_block gives)
    "avx2": (
        "haswell",
        "+64bit,+avx,+avx2,+fma,+sse,+sse2,+sse3,+ssse3,+sse4.1,+sse4.2,+popcnt,+cx16,"
        "+f16c,+bmi,+bmi2,+lzcnt,+movbe,-avx512f",
        [5, 2, 4, 5, 2],
    ),
    "portable": (
        "generic",
        "+64bit,+sse,+sse2,+sse3,+ssse3,+sse4.1,+sse4.2,+popcnt,+cx16,-avx,-avx2,-fma,-avx512f",
        None,
    ),
}

TRAIN = r"""
import json, sys
import numpy as np
import cnn
from cnn import simd
out = {"block": list(simd._BLOCK) if simd.ENABLED else None}
rng = np.random.default_rng(0)
x = rng.random((100, 28, 28))
y = np.eye(10)[rng.integers(0, 10, 100)]
for dt in ("float64", "float32"):
    net = cnn.example_network(3, seed=0, dtype=dt)
    cnn.traincnn(net, x.astype(dt), y.astype(dt), 1, 50, verbose=False)
    out[dt] = [layer.K.ravel().tolist() if layer.type == "c" else layer.W.ravel().tolist()
               for layer in net.layers if layer.type in "cf"]
print(json.dumps(out))
"""


def _train_here():
    rng = np.random.default_rng(0)
    x = rng.random((100, 28, 28))
    y = np.eye(10)[rng.integers(0, 10, 100)]
    out = {}
    for dt in ("float64", "float32"):
        net = cnn.example_network(3, seed=0, dtype=dt)
        cnn.traincnn(net, x.astype(dt), y.astype(dt), 1, 50, verbose=False)
        out[dt] = [
            (layer.K if layer.type == "c" else layer.W).ravel()
            for layer in net.layers
            if layer.type in "cf"
        ]
    return out


def _run_compiled_for(target, code, cache_dir):
    """stdout of ``code`` run in a fresh Python whose Numba compiles for ``target``
    (a key of TARGETS) into the empty cache ``cache_dir``."""
    name, features, _ = TARGETS[target]
    env = dict(os.environ)
    env.update(
        NUMBA_CACHE_DIR=str(cache_dir),
        NUMBA_CPU_NAME=name,
        NUMBA_CPU_FEATURES=features,
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p),
    )
    r = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_another_cpu_target_trains_to_the_same_weights(target, tmp_path):
    got = json.loads(_run_compiled_for(target, TRAIN, tmp_path).strip().splitlines()[-1])
    assert got["block"] == TARGETS[target][2]
    here = _train_here()
    for dt, rtol in (("float64", 1e-10), ("float32", 2e-4)):
        for mine, theirs in zip(here[dt], got[dt], strict=True):
            theirs = np.asarray(theirs)
            scale = np.abs(mine).max()
            np.testing.assert_allclose(theirs, mine, rtol=0, atol=rtol * scale, err_msg=dt)


ACTIVATE_ASM = r"""
import re
import numpy as np
from cnn import fused
a = np.zeros(10)
fused._activate(a, 0, 1.0, 0.01)
asm = "".join(fused._activate.inspect_asm().values())
# AT&T syntax: a store has the memory operand last
print(len(re.findall(r"vmaskmovp[sd]\s+%[xy]mm\d+, %[xy]mm\d+, [^\n]*\(", asm)))
print(len(re.findall(r"cvtt?sd2si", asm)))
"""


def test_in_place_activations_stay_vector_code_on_avx2(tmp_path):
    # an in-place loop a[i] = f(a[i]) whose result may be the loaded value (rect's
    # v for v > 0, the vmath functions' NaN) becomes a masked store on AVX2
    # (vmaskmovpd: microcoded, 4-6x slower loops on AMD CPUs); and Numba's
    # math.floor returns an int64, a conversion AVX2 has no vector instruction for
    # (each lane converted on its own). The written forms avoid both.
    masked_stores, conversions = _run_compiled_for("avx2", ACTIVATE_ASM, tmp_path).split()[-2:]
    assert (masked_stores, conversions) == ("0", "0")

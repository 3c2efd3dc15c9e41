"""Same seed and data give bit-identical weights, run after run and for any thread count.

Each configuration trains in a fresh subprocess (the thread counts of Numba
and OpenBLAS are fixed when they start) and prints a SHA-256 of every
parameter's bytes and of the loss array; all digests must agree.
"""

import os
import subprocess
import sys

import pytest

SCRIPT = r"""
import hashlib, sys
import numpy as np
import cnn

dtype = np.float32 if sys.argv[1] == "float32" else np.float64
rng = np.random.default_rng(5)
x = rng.random((100, 28, 28))
y = np.eye(10)[rng.integers(0, 10, 100)]
h = hashlib.sha256()
net = cnn.example_network(3, seed=1, dtype=dtype)           # Example 3, faithful
cnn.traincnn(net, x, y, 1, 50, verbose=False)
small = cnn.initcnn((13, 11), 0.1, mode="corrected", seed=2, dtype=dtype)
cnn.add_conv_layer(small, 5, (4, 3), "tanh")                 # 5 maps, 12 taps: remainders
cnn.add_pool_layer(small, 2)
cnn.add_conv_layer(small, 3, 2, "rect")
cnn.add_fc_layer(small, 7, "sigm")
cnn.traincnn(small, x[:21, :13, :11], rng.random((21, 7)), 2, 7, verbose=False)
for n in (net, small):
    for _, _, a in n.parameters():
        h.update(np.ascontiguousarray(a).tobytes())
    h.update(np.asarray(n.loss_array, dtype=np.float64).tobytes())
a, labels = cnn.predictcnn(net, x, chunk=30)
h.update(a.tobytes())
print(h.hexdigest())
"""

CONFIGS = [
    {"NUMBA_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"},
    {"NUMBA_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2"},
    {"NUMBA_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "1"},
    {"NUMBA_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "2"},
    {"NUMBA_NUM_THREADS": "3", "OPENBLAS_NUM_THREADS": "3"},  # uneven split of 50 examples
]


def _digest(env_update, dtype):
    env = dict(os.environ)
    env.update(env_update)
    r = subprocess.run(
        [sys.executable, "-c", SCRIPT, dtype], env=env, capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_bit_identical_for_any_thread_count(dtype):
    digests = {str(c): _digest(c, dtype) for c in CONFIGS}
    digests["again"] = _digest(CONFIGS[1], dtype)  # run after run
    assert len(set(digests.values())) == 1, digests

"""The helper process that compiles the fused step's backward task on an empty cache."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest

import cnn
from cnn import fused, precompile

TRAIN = r"""
import hashlib, subprocess, sys
import numpy as np
import cnn
from cnn import fused, precompile


def train(helper_fails=False):
    # one minibatch of Example 3 on the fused step: (helper started?, cache hits of
    # the backward task, digest of the weights)
    rng = np.random.default_rng(0)
    x = rng.random((50, 1, 28, 28))
    y = np.eye(10)[rng.integers(0, 10, 50)]
    net = cnn.example_network(3, seed=0)
    net.loss_func = "cros"
    fn = fused.FusedNet(net, 50)
    started = fn._helper is not None
    if helper_fails:
        fn._helper = precompile.Helper(subprocess.Popen([sys.executable, "-c", "exit(3)"]))
    fn.compute(x, y)  # with a helper: compiles the rest, waits for it, goes on
    fn.apply()
    assert fn._helper is None
    hits = fn._tasks[fused._backward_chunk].cache_hits
    h = hashlib.sha256()
    for _, _, a in net.parameters():
        h.update(np.ascontiguousarray(a).tobytes())
    return started, hits, h.hexdigest()


if __name__ == "__main__":
    # and how many of the parallel loop's compilations came from the disk cache
    print(*train(), sum(fused._run.stats.cache_hits.values()))
"""
_HERE = {}
exec(TRAIN.replace("__main__", "not run here"), _HERE)


def test_on_an_empty_cache_the_helper_compiles_the_backward_task(tmp_path):
    # a fresh process with an empty Numba cache: the helper starts, that process
    # loads the backward task from the cache (one cache hit) and trains exactly as
    # a process that compiled everything itself (this one, its cache warm)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    env.pop(precompile.ENV, None)
    r = subprocess.run(
        [sys.executable, "-c", TRAIN], env=env, capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stderr
    started, hits, digest, loop_hits = r.stdout.split()
    assert (started, hits, digest, loop_hits) == ("True", "1", _HERE["train"]()[2], "0")
    # a second fresh process loads everything, the parallel loop too (a loop that
    # Numba cannot cache, e.g. calling numba.get_num_threads(), compiles again: ~3 s)
    r = subprocess.run(
        [sys.executable, "-c", TRAIN], env=env, capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stderr
    started, hits, digest, loop_hits = r.stdout.split()
    assert (started, hits, digest, loop_hits) == ("False", "1", _HERE["train"]()[2], "1")


def test_a_failed_helper_changes_nothing():
    assert _HERE["train"](helper_fails=True)[2] == _HERE["train"]()[2]


def _compiled_net():
    net = cnn.example_network(3, seed=0)
    net.loss_func = "cros"
    fn = fused.FusedNet(net, 50)
    fn._task(fused._backward_chunk, fn._args())
    return fn


def test_when_a_helper_starts(monkeypatch):
    fn = _compiled_net()  # the backward task is compiled in this process now
    args = fn._args()
    assert fused.parallel.is_compiled(fused._backward_chunk, (0,) + args)
    assert precompile.start(fused._backward_chunk, args, np.float64, 8) is None
    # as if compiled nowhere, on two CPUs; a process that does nothing as the helper
    monkeypatch.setattr(fused.parallel, "is_compiled", lambda *a: False)
    monkeypatch.setattr(precompile, "in_disk_cache", lambda *a: False)
    monkeypatch.setattr(precompile, "_cpus", lambda: 2)
    monkeypatch.delenv(precompile.ENV, raising=False)
    popen = subprocess.Popen
    asked = []

    def fake_popen(cmd, **kwargs):
        asked.append((cmd, kwargs))
        return popen([sys.executable, "-c", "pass"])

    monkeypatch.setattr(precompile.subprocess, "Popen", fake_popen)
    helper = precompile.start(fused._backward_chunk, args, np.float64, 8)
    assert helper is not None and helper.wait() is True
    ((cmd, kwargs),) = asked
    assert cmd[0] == sys.executable and cmd[-3:] == ["_backward_chunk", "float64", "8"]
    env = kwargs["env"]
    assert env[precompile.ENV] == "0"  # the helper starts none of its own
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(cnn.__file__)))
    assert env["PYTHONPATH"].split(os.pathsep)[0] == package_root
    # switched off, or one CPU: none
    monkeypatch.setenv(precompile.ENV, "0")
    assert precompile.start(fused._backward_chunk, args, np.float64, 8) is None
    monkeypatch.delenv(precompile.ENV)
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    assert precompile.start(fused._backward_chunk, args, np.float64, 8) is None
    monkeypatch.delattr(sys, "frozen")
    monkeypatch.setattr(precompile, "_cpus", lambda: 1)
    assert precompile.start(fused._backward_chunk, args, np.float64, 8) is None
    assert len(asked) == 1


CACHE_CHECK = r"""
import numpy as np
import cnn
from cnn import fused, precompile
net = cnn.example_network(3, seed=0)
fn = fused.FusedNet(net, 5, train=False)
args = (0,) + fn._args()
before = precompile.in_disk_cache(fused._nothing, args)
fn._task(fused._nothing, fn._args())
print(before, precompile.in_disk_cache(fused._nothing, args))
"""


def test_in_disk_cache_sees_what_a_compile_wrote(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    r = subprocess.run(
        [sys.executable, "-c", CACHE_CHECK], env=env, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "True"]


def test_wait_stops_a_helper_past_its_time():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    t0 = time.perf_counter()
    assert precompile.Helper(proc).wait(timeout=0.5) is False
    assert proc.poll() is not None and time.perf_counter() - t0 < 30


def test_only_the_tasks_of_the_fused_module_can_be_asked_for():
    with pytest.raises(ValueError, match="8 entries"):
        fused.compile_task(fused._nothing, np.float64, 16)

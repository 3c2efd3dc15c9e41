"""Speed benchmark of the ``cnn`` package against PyTorch and a naive NumPy/SciPy port.

Usage::

    CNN_MNIST_DIR=/path/to/mnist python -m cnn.bench [--images N] [--test-images N]
        [--skip-torch] [--skip-naive] [--skip-busy] [--repeat R] [--json bench.json]

(``cnn bench ...`` and ``python scripts/bench.py ...`` run the same ``main``.)

Everything runs in one process on the same data: real MNIST when
``cnn.mnist.load_split(..., download=False)`` finds it (``CNN_MNIST_DIR``),
else random 28 x 28 images (the output says which). The network is the
original's Example 3 (conv 10@9x9 rect - pool 2 - conv 20@3x3 tanh - pool 2 -
FC 150 tanh - FC 10 sigm, cross-entropy, flag off), batch 50, lr 0.01, faithful
mode, minibatches in order.

Measured:

* ``train float64`` / ``train float32``: ``traincnn`` seconds per 60,000-image
  epoch (``--images`` timed, default 60,000; fewer are extrapolated), after an
  untimed warm-up minibatch so that compilation is not counted;
* ``testcnn 10k``: ``testcnn`` on 10,000 test images (float64, the network just
  trained);
* ``first call warm`` / ``cold``: a fresh Python process that imports ``cnn``,
  builds Example 3 and trains one minibatch (interpreter start not counted),
  with the Numba cache filled (the best of 2), and with ``NUMBA_CACHE_DIR``
  pointing at an empty directory (the median of ``--repeat`` processes, each
  on its own empty directory);
* ``peak RSS``: ``ru_maxrss`` (and ``VmHWM``) of a fresh process that loads the
  full training set (float64) and trains on ``--images`` images, started
  before this process loads anything big (Linux carries a parent's peak into
  the child's ``ru_maxrss``);
* PyTorch float64/float32 with 2 threads (``bench_peers.torch_epoch_time``, the
  best of ``--repeat`` runs as ours, and ``torch_test_time``; float64 test in
  batches of 100) when torch imports;
* the naive NumPy/SciPy port on ``--naive-images`` images, extrapolated;
* ``train float64, layer path``: the same epoch through the readable
  layer-by-layer step (``traincnn(..., step="layers")``) for comparison with
  the fused step (the default);
* ``busy machine``: the float64 epoch (``--busy-images`` images, extrapolated)
  with ``--burners`` CPU-bound processes (default: one per CPU) running beside
  it, ours and PyTorch's, and the ratio to the same run without burners in a
  fresh process just before (the host's speed drifts between the rows).

Every table is printed with the machine: CPU model, SIMD level, BLAS library
and kernel (threadpoolctl), Numba's threading layer and thread count, and
with what the machine allows (:mod:`cnn.bench_floor`, measured in the same
run): its matrix-product rate (the fastest of four samples spread over the
run), the time the network's conv and FC products
would take at that rate (the floor of the epoch and ``testcnn`` rows) and the
time a fresh process takes to import Numba and call one cached function (the
floor of the warm first minibatch). The "met?" column gives each floor beside
its time target: a target below its floor cannot be met on that machine.
PyTorch is optional: without it the benchmark says how to install the CPU
build and measures everything else.

A table (setting, value, PyTorch time / this time, target, met?) is printed
and, with ``--json``, written with the machine details.

PyTorch is imported before Numba starts its threads: when Numba's OpenMP
layer has loaded the system ``libgomp`` first, PyTorch (with its own bundled
``libgomp``) trains ~10x slower in the same process (measured; our timings do
not depend on the order).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import cnn

from . import bench_floor, bench_peers, mnist, threads

ROOT = Path(__file__).resolve().parent.parent
TORCH_INSTALL = "pip install torch --index-url https://download.pytorch.org/whl/cpu"

EPOCH = 60000
BATCH = 50


# --------------------------------------------------------------------------- data


def load_data(n_train, n_test, seed=0):
    """``(x, y, xt, yt, source)``: MNIST if found (no download), else random images."""
    try:
        x, y = mnist.load_split("train", download=False, progress=False)
        xt, yt = mnist.load_split("test", download=False, progress=False)
        source = f"MNIST from {mnist.mnist_dir()}"
    except (mnist.MNISTNotFoundError, mnist.MNISTError) as exc:
        print(f"MNIST not found ({type(exc).__name__}); using random 28x28 images", flush=True)
        x, y = bench_peers.random_data(max(n_train, BATCH), seed=seed)
        xt, yt = bench_peers.random_data(max(n_test, 1), seed=seed + 1)
        source = "random 28x28 images (MNIST not found; set CNN_MNIST_DIR)"
    return x, y, xt, yt, source


def _wrap(x, y, n):
    """The first n images, repeating the data if there are fewer."""
    if n <= len(x):
        return x[:n], y[:n]
    idx = np.arange(n) % len(x)
    return x[idx], y[idx]


# --------------------------------------------------------------------------- our package


def our_epoch_time(x, y, dtype, n_images, repeat=1, seed=0, step="fused"):
    """Best of ``repeat`` timed ``traincnn`` calls on ``n_images`` images (one epoch)."""
    xs, ys = _wrap(x, y, n_images)
    xs = np.ascontiguousarray(xs, dtype=dtype)  # the conversion is not what we time
    ys = np.ascontiguousarray(ys, dtype=dtype)
    warm = cnn.example_network(3, seed=seed, dtype=dtype)
    cnn.traincnn(
        warm, xs[:BATCH], ys[:BATCH], 1, BATCH, verbose=False, step=step
    )  # compile, untimed
    best, net = None, None
    for _ in range(repeat):
        net = cnn.example_network(3, seed=seed, dtype=dtype)
        t0 = time.perf_counter()
        cnn.traincnn(net, xs, ys, 1, BATCH, verbose=False, step=step)
        s = time.perf_counter() - t0
        best = s if best is None else min(best, s)
    return {
        "seconds": best,
        "images": n_images,
        "seconds_per_60k": best / n_images * EPOCH,
        "loss": float(np.mean(net.loss_array)),
        "dtype": np.dtype(dtype).name,
        "step": step,
    }, net


def our_test_time(net, xt, yt, repeat=3):
    xt = np.ascontiguousarray(xt, dtype=net.dtype)
    yt = np.ascontiguousarray(yt, dtype=net.dtype)
    cnn.testcnn(net, xt[:BATCH], yt[:BATCH])  # compile, untimed
    best = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        err = cnn.testcnn(net, xt, yt)
        s = time.perf_counter() - t0
        best = s if best is None else min(best, s)
    return {
        "seconds": best,
        "images": len(xt),
        "seconds_per_10k": best / len(xt) * 10000,
        "error": err,
    }


FIRST_CALL = r"""
import time
t0 = time.perf_counter()
import numpy as np
import cnn
rng = np.random.default_rng(0)
x = rng.random((50, 28, 28))
y = np.eye(10)[rng.integers(0, 10, 50)]
net = cnn.example_network(3, seed=0)
cnn.traincnn(net, x, y, 1, 50, verbose=False)
print(time.perf_counter() - t0)
"""


def _python(code, env=None, args=()):
    e = dict(os.environ)
    e.update(env or {})
    # the child imports this same cnn package (an installed one, or the source tree)
    e["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), e.get("PYTHONPATH", "")) if p)
    r = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        env=e,
        text=True,
        capture_output=True,
        check=False,
    )
    if r.returncode != 0:
        raise RuntimeError(f"subprocess failed:\n{r.stderr}")
    return r.stdout.strip().splitlines()[-1]


def first_call_times(cold_runs=1):
    """Seconds from ``import cnn`` to the end of the first minibatch in a fresh process:
    warm (the best of 2, the Numba cache filled) and cold (the median of ``cold_runs``
    processes, each on its own empty cache: a compile's time drifts with the host)."""
    _python(FIRST_CALL)  # fill the Numba cache
    warm = min(float(_python(FIRST_CALL)) for _ in range(2))
    cold = []
    for _ in range(cold_runs):
        with tempfile.TemporaryDirectory(prefix="numba-cold-") as d:
            cold.append(float(_python(FIRST_CALL, env={"NUMBA_CACHE_DIR": d})))
    return {"warm_seconds": warm, "cold_seconds": float(np.median(cold)), "cold_runs": cold}


PEAK_RSS = r"""
import resource, sys
import numpy as np
import cnn
from cnn import mnist
n = int(sys.argv[1])
try:
    x, y = mnist.load_split("train", download=False, progress=False)
except (mnist.MNISTNotFoundError, mnist.MNISTError):
    rng = np.random.default_rng(0)
    x = rng.random((60000, 28, 28))
    y = np.eye(10)[rng.integers(0, 10, 60000)]
net = cnn.example_network(3, seed=0)
cnn.traincnn(net, x[:n], y[:n], 1, 50, verbose=False)
hwm = -1
try:
    with open("/proc/self/status") as f:
        hwm = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM:"))
except (OSError, StopIteration):
    pass
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, hwm)
"""


def peak_rss(n_images):
    """Peak RSS of a fresh process that loads the training set and trains.

    Run while this process is still small: Linux carries the parent's peak RSS
    into a child's ``ru_maxrss`` through fork/exec. ``VmHWM`` (the new
    process image's own peak) is reported alongside.
    """
    maxrss, hwm = (int(v) for v in _python(PEAK_RSS, args=(n_images,)).split())
    return {"bytes": maxrss, "vmhwm_bytes": hwm, "images": n_images}


# --------------------------------------------------------------------------- busy machine

BURNER = "while True:\n    pass\n"


class burners:
    """Context manager: ``n`` CPU-bound Python processes running beside the block.

    They are this benchmark's own children and are terminated (by their
    ``Popen`` objects) when the block ends.
    """

    def __init__(self, n):
        self.n = n
        self.procs = []

    def __enter__(self):
        self.procs = [
            subprocess.Popen(
                [sys.executable, "-c", BURNER], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            for _ in range(self.n)
        ]
        time.sleep(0.5)  # let them start spinning
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = []


BUSY_RUN = r"""
import json, sys
import numpy as np
from cnn import bench, threads
who, n, repeat = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
x, y, *_ = bench.load_data(n, 1)
if who == "ours":
    r, _ = bench.our_epoch_time(x, y, np.float64, n, repeat=repeat)
else:
    with threads.defaults_for_others():  # PyTorch with its own OpenMP defaults
        import torch  # noqa: F401
    xs, ys = bench._wrap(x, y, n)
    r = bench.best_torch_epoch(xs, ys, "float64", n, repeat)
print(json.dumps(r))
"""


def busy_times(n_images, n_burners, use_torch, repeat=1):
    """Float64 epoch times (ours, fused, and PyTorch's) with ``n_burners`` burners beside;
    with ``repeat`` > 1, the best of that many runs of each (as the idle rows).

    Each side runs in a fresh process of its own, as its users run it. In one
    process both would share one OpenMP runtime: PyTorch's wheel ships a
    ``libgomp.so.1`` of the same name as the system's that Numba's OpenMP layer
    loads, and whichever is loaded first serves both, with the settings of the
    environment at that moment. This benchmark imports PyTorch first (in the
    other order PyTorch runs ~10x slower), so here Numba's workers spun
    libgomp's default 300,000 iterations at every join instead of the 20,000
    ``cnn/threads.py`` sets: with two burners, 2.6-2.9x the idle epoch against
    2.1x in a process of its own (measured 2026-12-03)."""
    out = {"burners": n_burners, "images": n_images, "repeat": repeat}
    for who in ("ours", "torch") if use_torch else ("ours",):
        # the same run without burners just before: the host's speed drifts, so the
        # ratio to an idle run minutes earlier read 1.8-3.5x for the same code
        out[who + "_idle"] = json.loads(_python(BUSY_RUN, args=(who, n_images, repeat)))
        with burners(n_burners):
            out[who] = json.loads(_python(BUSY_RUN, args=(who, n_images, repeat)))
    return out


def best_torch_epoch(xs, ys, dtype, n_images, repeat):
    """The fastest of ``repeat`` PyTorch epochs (``bench_peers.torch_epoch_time``, 2
    threads): the best of as many runs as ours (a single PyTorch run against our best
    of three biased the tables before 2026-12-03 18:40 UTC)."""
    runs = [
        bench_peers.torch_epoch_time(xs, ys, dtype, threads=2, n_images=n_images)
        for _ in range(repeat)
    ]
    return min(runs, key=lambda run: run["seconds"])


def interleaved_rounds(x, y, n_images, rounds, use_torch):
    """Ours and PyTorch in turn, ``rounds`` times (f64 ours, f64 torch, f32 ours, f32 torch).

    On a shared machine whose speed drifts, a ratio taken within one round is
    more trustworthy than a ratio of bests taken minutes apart. Returns, per
    setting, the seconds per 60,000 images of every round with their minimum and
    median, and the ratio torch / ours of each round (> 1: ours is faster).
    """
    xs, ys = _wrap(x, y, n_images)
    times = {}
    for _ in range(rounds):
        for dt in ("float64", "float32"):
            ours, _ = our_epoch_time(x, y, np.dtype(dt).type, n_images)
            times.setdefault("ours_" + dt, []).append(ours["seconds_per_60k"])
            if use_torch:
                t = bench_peers.torch_epoch_time(xs, ys, dt, threads=2, n_images=n_images)
                times.setdefault("torch_" + dt, []).append(t["seconds_per_60k"])
    out = {"rounds": rounds, "images": n_images, "seconds_per_60k": times}
    if use_torch:
        out["torch_over_ours"] = {
            dt: [t / o for t, o in zip(times["torch_" + dt], times["ours_" + dt])]
            for dt in ("float64", "float32")
        }
    return out


def interleaved_rows(il):
    """Rows (what, min, median, max) of :func:`interleaved_rounds`' result."""
    rows = [
        (f"{k.replace('_', ' ')}, s/epoch", *(_fmt_s(f(v)) for f in (min, np.median, max)))
        for k, v in il["seconds_per_60k"].items()
    ]
    for dt, v in il.get("torch_over_ours", {}).items():
        rows.append(
            (f"torch / ours {dt}, per round", *(f"{f(v):.2f}x" for f in (min, np.median, max)))
        )
    return rows


# --------------------------------------------------------------------------- report


def _fmt_s(s):
    return f"{s:.3f} s" if s < 10 else f"{s:.1f} s"


def floor_line(f):
    """One line on the machine's floors (:func:`cnn.bench_floor.floors`)."""
    g, e = f["gemm_gflops"], f["train_epoch_seconds"]
    n = len(f.get("gemm_samples", [])) or 1
    return (
        f"Floors: matrix product {g['float64']:.1f} GFLOP/s float64, {g['float32']:.1f} "
        f"float32 ({f['threads']} BLAS threads, the fastest of {n} samples); conv and FC products "
        f"{f['flop_per_image']['training'] / 1e6:.2f} MFLOP per training image, "
        f"{f['flop_per_image']['forward'] / 1e6:.2f} forward: an epoch at least "
        f"{e['float64']:.2f} s float64 ({e['float32']:.2f} s float32), testcnn 10k at least "
        f"{f['test_10k_seconds']:.3f} s; a cached Numba call in a fresh process "
        f"{f['numba_start_seconds']:.2f} s"
    )


def _met(ok, floor=None):
    """``'yes'``/``'NO'`` for a time target, with this machine's floor for it when known."""
    return ("yes" if ok else "NO") + ("" if floor is None else f" (floor {_fmt_s(floor)})")


def make_table(r):
    """Rows (setting, value, vs torch, target, met) from the results dict."""
    rows = []
    t = r.get("torch", {})
    fl = r.get("floor", {})

    def ratio(peer, ours):  # torch time / this setting's time: > 1 means faster than torch
        return f"{peer / ours:.2f}" if peer and ours else ""

    o64, o32 = r["train_float64"]["seconds_per_60k"], r["train_float32"]["seconds_per_60k"]
    t64 = t.get("train_float64", {}).get("seconds_per_60k")
    t32 = t.get("train_float32", {}).get("seconds_per_60k")
    parts = ["< 4 s " + _met(o64 < 4.0, fl.get("train_epoch_seconds", {}).get("float64"))]
    parts.append(
        "4x not timed"
        if t64 is None
        else f"4x {'yes' if t64 / o64 >= 4.0 else 'NO'} ({t64 / o64:.2f}x)"
    )
    rows.append(
        (
            "train float64, s/epoch (ours, fused step)",
            _fmt_s(o64),
            ratio(t64, o64),
            "< 4 s and >= 4x torch f64",
            ", ".join(parts),
        )
    )
    rows.append(
        (
            "train float32, s/epoch (ours, fused step)",
            _fmt_s(o32),
            ratio(t32, o32),
            ">= 3x torch f32",
            "not timed"
            if t32 is None
            else f"{'yes' if t32 / o32 >= 3.0 else 'NO'} ({t32 / o32:.2f}x)",
        )
    )
    if t64:
        rows.append(("train float64, s/epoch (torch, 2 thr)", _fmt_s(t64), "1.00", "", ""))
        rows.append(("train float32, s/epoch (torch, 2 thr)", _fmt_s(t32), "1.00", "", ""))
    if "train_float64_layers" in r:
        lp = r["train_float64_layers"]["seconds_per_60k"]
        rows.append(
            (
                "train float64, s/epoch (ours, layer-by-layer path)",
                _fmt_s(lp),
                ratio(t64, lp),
                "",
                f"fused is {lp / o64:.2f}x faster",
            )
        )
    if "busy" in r:
        b = r["busy"]
        bo = b["ours"]["seconds_per_60k"]
        # idle: the same run in a fresh process just before (older results: the idle row)
        io = b.get("ours_idle", {}).get("seconds_per_60k", o64)
        rows.append(
            (
                f"busy machine: train float64 with {b['burners']} CPU burners (ours)",
                _fmt_s(bo),
                "",
                "<= 3x idle",
                f"{bo / io:.2f}x idle " + ("yes" if bo <= 3 * io else "NO"),
            )
        )
        if "torch" in b and t64:
            bt = b["torch"]["seconds_per_60k"]
            it = b.get("torch_idle", {}).get("seconds_per_60k", t64)
            rows.append(
                (
                    f"busy machine: train float64 with {b['burners']} CPU burners (torch)",
                    _fmt_s(bt),
                    ratio(bt, bo),
                    "",
                    f"{bt / it:.2f}x idle",
                )
            )
    if "naive" in r:
        nv = r["naive"]["seconds_per_60k"]
        rows.append(
            ("train float64, s/epoch (naive NumPy/SciPy)", _fmt_s(nv), ratio(t64, nv), "", "")
        )
    ts = r["testcnn"]["seconds_per_10k"]
    tt = t.get("test_float64", {}).get("seconds_per_10k")
    rows.append(
        (
            "testcnn 10k images, float64 (ours)",
            _fmt_s(ts),
            ratio(tt, ts),
            "< 0.3 s",
            _met(ts < 0.3, fl.get("test_10k_seconds")),
        )
    )
    if tt:
        rows.append(("test 10k images, float64 (torch, batch 100)", _fmt_s(tt), "1.00", "", ""))
        rows.append(
            (
                "test 10k images, float32 (torch, batch 1000)",
                _fmt_s(t["test_float32"]["seconds_per_10k"]),
                "",
                "",
                "",
            )
        )
    fc = r["first_call"]
    rows.append(
        (
            "first minibatch, fresh process, warm cache",
            _fmt_s(fc["warm_seconds"]),
            "",
            "< 1 s",
            _met(fc["warm_seconds"] < 1, fl.get("numba_start_seconds")),
        )
    )
    runs = fc.get("cold_runs", [fc["cold_seconds"]])
    spread = f" (median of {len(runs)}, {min(runs):.1f}-{max(runs):.1f} s)" if len(runs) > 1 else ""
    rows.append(
        (
            "first minibatch, fresh process, cold cache",
            _fmt_s(fc["cold_seconds"]) + spread,
            "",
            "< 15 s",
            "yes" if fc["cold_seconds"] < 15 else "NO",
        )
    )
    pr = r["peak_rss"]
    hwm = f", VmHWM {pr['vmhwm_bytes'] / 2**30:.2f} GiB" if pr.get("vmhwm_bytes", -1) > 0 else ""
    rows.append(
        (
            f"peak RSS (ru_maxrss), training on {pr['images']} images, 60,000 loaded",
            f"{pr['bytes'] / 2**30:.2f} GiB{hwm}",
            "",
            "< 1 GB",
            "yes" if pr["bytes"] < 1e9 else "NO",
        )
    )
    return rows


def print_table(rows):
    head = ("setting", "value", "torch / this", "target", "met?")
    widths = [max(len(str(x[i])) for x in rows + [head]) for i in range(5)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |"
    print(line)
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths)) + " |")


def simd_level():
    """The widest x86 SIMD level the CPU reports (``/proc/cpuinfo`` flags), or ``'unknown'``."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(
                next(line.split(":", 1)[1].split() for line in f if line.startswith("flags"))
            )
    except (OSError, StopIteration):
        return "unknown"
    if "avx512f" in flags:
        return "AVX-512" + (" (+FMA)" if "fma" in flags else "")
    if "avx2" in flags:
        return "AVX2" + ("+FMA" if "fma" in flags else "")
    if "avx" in flags:
        return "AVX"
    return "SSE" if "sse2" in flags else "none"


def blas_info():
    """``'openblas 0.3.31 Haswell, 1 thread; ...'``: every BLAS loaded (threadpoolctl)."""
    import scipy.linalg.cython_blas  # noqa: F401  (load SciPy's BLAS too)
    from threadpoolctl import threadpool_info

    parts = []
    for lib in threadpool_info():
        if lib.get("user_api") != "blas":
            continue
        parts.append(
            f"{lib.get('internal_api')} {lib.get('version')} "
            f"{lib.get('architecture') or ''} ({lib.get('num_threads')} threads, "
            f"{Path(lib.get('filepath', '')).name})"
        )
    return "; ".join(parts) or "none found"


def threading_layer():
    """Numba's threading layer (after a parallel call) and thread count."""
    import numba

    try:
        layer = numba.threading_layer()
    except ValueError:
        layer = "not started yet"
    return f"{layer}, {numba.get_num_threads()} threads"


def machine_header(r):
    """The lines printed with every table: CPU, SIMD, BLAS, Numba threading."""
    m = r["machine"]
    return (
        f"CPU: {m.get('cpu_model', m.get('processor', '?'))} ({m['cpu_count']} CPUs; "
        f"SIMD {m['simd']}; LLVM target {m.get('llvm_cpu', '?')})\n"
        + _held_line(m)
        + f"Conv and FC kernels: {m.get('conv_kernels', '?')}\n"
        f"BLAS: {m['blas']}\n"
        f"Numba threading layer: {threading_layer()}; "
        f"GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT', 'unset')}, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}"
    )


HELD_BY = (
    "NUMBA_CPU_NAME",
    "NUMBA_CPU_FEATURES",
    "OPENBLAS_CORETYPE",
    "ATEN_CPU_CAPABILITY",
    "ONEDNN_MAX_CPU_ISA",
    "MKL_ENABLE_INSTRUCTIONS",
)
"""Environment variables that make Numba, OpenBLAS or PyTorch compile or choose code
for another CPU than this one (a run held to AVX2 on an AVX-512 machine)."""


def _held_line(m):
    """A header line naming the CPU Numba compiles for and the variables that hold the
    libraries to other instructions, when any is set (else nothing)."""
    held = m.get("held_by") or {}
    if not held:
        return ""
    settings = ", ".join(f"{k}={v}" for k, v in held.items())
    return f"Held to another target: Numba compiles for {m.get('numba_cpu', '?')}; {settings}\n"


def machine_info():
    import numba

    info = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "numba_threads": numba.get_num_threads(),
        "cnn": cnn.__version__,
    }
    try:
        info["cpu_affinity"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu_model"] = next(
                line.split(":", 1)[1].strip() for line in f if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    info["simd"] = simd_level()
    import llvmlite.binding as llvm  # Numba's own dependency

    info["llvm_cpu"] = llvm.get_host_cpu_name()
    from numba.core.registry import cpu_target

    info["numba_cpu"] = cpu_target.target_context.codegen().magic_tuple()[1]
    info["held_by"] = {k: os.environ[k] for k in HELD_BY if os.environ.get(k)}
    from . import simd

    info["conv_kernels"] = (
        f"register-blocked SIMD (cnn.simd, cnn.dense: {simd.MAPS} maps x {simd.VECTORS} "
        f"vectors of {simd.LANES64} float64)"
        if simd.ENABLED
        else "portable loops and BLAS (cnn.simd not enabled on this target)"
    )
    info["blas"] = blas_info()
    # the version without importing torch (see run for the import order)
    from importlib.metadata import PackageNotFoundError, version

    with contextlib.suppress(PackageNotFoundError):
        info["torch"] = version("torch")
    return info


def _parser():
    ap = argparse.ArgumentParser(prog="cnn bench", description=__doc__.splitlines()[0])
    ap.add_argument(
        "--images",
        type=int,
        default=EPOCH,
        help="training images timed (multiple of 50; default a full epoch)",
    )
    ap.add_argument("--test-images", type=int, default=10000, help="testcnn images (default 10000)")
    ap.add_argument(
        "--naive-images",
        type=int,
        default=500,
        help="images timed for the naive port (default 500, extrapolated)",
    )
    ap.add_argument(
        "--busy-images",
        type=int,
        default=6000,
        help="images timed on the busy machine (default 6000, extrapolated)",
    )
    ap.add_argument(
        "--burners",
        type=int,
        default=os.cpu_count() or 2,
        help="CPU-bound processes beside the busy-machine run (default: one per CPU)",
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="timed training runs per setting, the best kept (default 1); with "
        "PyTorch and R > 1, also R interleaved rounds of ours and PyTorch; the cold "
        "first minibatch: the median of R fresh processes",
    )
    ap.add_argument("--skip-torch", action="store_true", help="do not time PyTorch")
    ap.add_argument("--skip-naive", action="store_true", help="do not time the naive port")
    ap.add_argument(
        "--skip-layers", action="store_true", help="do not time the layer-by-layer path"
    )
    ap.add_argument("--skip-busy", action="store_true", help="do not time the busy machine")
    ap.add_argument("--json", type=Path, help="write the results here")
    return ap


def main(argv=None) -> int:
    """Run the benchmark (command line ``argv``); print the table. Returns the exit code."""
    ap = _parser()
    args = ap.parse_args(argv)
    for name in ("images", "busy_images"):
        v = getattr(args, name)
        if v < BATCH or v % BATCH:
            ap.error(f"--{name.replace('_', '-')} must be a positive multiple of {BATCH}")
    if args.burners < 1 or args.repeat < 1 or args.test_images < 1 or args.naive_images < 1:
        ap.error("--burners, --repeat, --test-images and --naive-images must be >= 1")
    try:
        run(args)
    except KeyboardInterrupt:
        print("cnn bench: interrupted", file=sys.stderr)
        return 130
    return 0


def run(args):
    """The measurements of :func:`main` (parsed ``args``); returns the results dict."""
    r = {"load_before": os.getloadavg()}
    # fresh processes first, while this one is small (see peak_rss)
    r["peak_rss"] = peak_rss(args.images)
    print(f"peak RSS of a training run: {r['peak_rss']['bytes'] / 2**30:.2f} GiB", flush=True)
    r["first_call"] = first_call_times(args.repeat)
    cold = ", ".join(f"{t:.2f}" for t in r["first_call"]["cold_runs"])
    print(
        f"first call: warm {r['first_call']['warm_seconds']:.2f} s, cold {cold} s",
        flush=True,
    )
    # torch_available() imports torch before Numba starts its threads (machine_info asks
    # Numba for its thread count): in the other order PyTorch runs ~10x slower (measured)
    # PyTorch's own libgomp gets its default wait policy, not the one cnn/threads.py sets
    with threads.defaults_for_others():
        use_torch = not args.skip_torch and bench_peers.torch_available()
    if not args.skip_torch and not use_torch:
        print(
            f"PyTorch is not importable: its rows are skipped. For them, install the CPU "
            f"build: {TORCH_INSTALL}",
            flush=True,
        )
    r["machine"] = machine_info()
    # the machine's floors: the matrix-product rate sampled now and after each part
    # (the fastest kept), one cached Numba call in fresh processes
    n_threads = r["machine"]["numba_threads"]
    rate_samples = [bench_floor.gemm_rates(n_threads)]
    numba_start = bench_floor.numba_start(_python)

    x, y, xt, yt, source = load_data(args.images, args.test_images)
    xt, yt = _wrap(xt, yt, args.test_images)
    r["data"] = source
    r["settings"] = {
        "network": "Example 3",
        "batch_size": BATCH,
        "learning_rate": 0.01,
        "mode": "faithful",
        "images": args.images,
        "test_images": args.test_images,
        "repeat": args.repeat,
    }
    print(f"data: {source}; timing {args.images} training images per setting", flush=True)

    r["train_float64"], net = our_epoch_time(x, y, np.float64, args.images, args.repeat)
    print(
        f"  ours float64 (fused): {r['train_float64']['seconds_per_60k']:.2f} s/epoch", flush=True
    )
    print(machine_header(r), flush=True)
    r["testcnn"] = our_test_time(net, xt, yt)
    print(
        f"  ours testcnn: {r['testcnn']['seconds_per_10k']:.3f} s/10k "
        f"(test error {r['testcnn']['error']:.4f})",
        flush=True,
    )
    rate_samples.append(bench_floor.gemm_rates(n_threads))
    r["train_float32"], _ = our_epoch_time(x, y, np.float32, args.images, args.repeat)
    print(
        f"  ours float32 (fused): {r['train_float32']['seconds_per_60k']:.2f} s/epoch", flush=True
    )
    if not args.skip_layers:
        r["train_float64_layers"], _ = our_epoch_time(
            x, y, np.float64, args.images, args.repeat, step="layers"
        )
        print(
            f"  ours float64 (layer path): "
            f"{r['train_float64_layers']['seconds_per_60k']:.2f} s/epoch",
            flush=True,
        )

    if use_torch:
        xs, ys = _wrap(x, y, args.images)
        t = {}
        for dt in ("float64", "float32"):
            t["train_" + dt] = best_torch_epoch(xs, ys, dt, args.images, args.repeat)
            t["test_" + dt] = bench_peers.torch_test_time(
                xt, yt, dt, threads=2, batch_size=100 if dt == "float64" else 1000
            )
            print(
                f"  torch {dt}: {t['train_' + dt]['seconds_per_60k']:.2f} s/epoch, "
                f"test {t['test_' + dt]['seconds_per_10k']:.3f} s/10k",
                flush=True,
            )
        r["torch"] = t
    rate_samples.append(bench_floor.gemm_rates(n_threads))
    if use_torch and args.repeat > 1:
        r["interleaved"] = interleaved_rounds(x, y, args.images, args.repeat, use_torch)
    if not args.skip_busy:
        r["busy"] = busy_times(args.busy_images, args.burners, use_torch, repeat=args.repeat)
        msg = f"  busy ({args.burners} burners): ours {r['busy']['ours']['seconds_per_60k']:.2f}"
        if "torch" in r["busy"]:
            msg += f", torch {r['busy']['torch']['seconds_per_60k']:.2f}"
        print(msg + " s/epoch", flush=True)
    if not args.skip_naive:
        r["naive"] = bench_peers.naive_epoch_time(x, y, n_images=args.naive_images)
        print(f"  naive: {r['naive']['seconds_per_60k']:.1f} s/epoch", flush=True)
    rate_samples.append(bench_floor.gemm_rates(n_threads))
    r["floor"] = bench_floor.floors(
        cnn.example_network(3, seed=0), rate_samples, numba_start, n_threads
    )
    r["load_after"] = os.getloadavg()

    rows = make_table(r)
    r["table"] = [dict(zip(("setting", "value", "vs_torch", "target", "met"), row)) for row in rows]
    r["machine"]["numba_threading_layer"] = threading_layer()
    print()
    print(
        f"Example 3, batch 50, faithful; {source}; {r['machine']['date']}; "
        f"load {r['load_before'][0]:.2f} before, {r['load_after'][0]:.2f} after"
    )
    print(machine_header(r))
    if "floor" in r:
        print(floor_line(r["floor"]))
    print_table(rows)
    if "interleaved" in r:
        il = r["interleaved"]
        print(
            f"\nInterleaved: {il['rounds']} rounds of ours and torch in turn, "
            f"{il['images']} images each"
        )
        print("| what | min | median | max |\n|---|---|---|---|")
        for row in interleaved_rows(il):
            print("| " + " | ".join(row) + " |")
    if args.json:
        from .atomic import write_text

        write_text(args.json, json.dumps(r, indent=2, default=float) + "\n")
        print(f"\nwrote {args.json}")
    return r


if __name__ == "__main__":
    sys.exit(main())

"""cnn.bench_floor (what the machine allows, printed by cnn bench beside its targets)."""

from pathlib import Path

import numpy as np
import pytest
from _nets import build

import cnn
from cnn import bench, bench_floor


def test_example_3_arithmetic_by_hand():
    """Example 3 on 28 x 28: conv 10@9x9 -> 20x20, pool, conv 20@3x3 on 10 maps -> 8x8,
    pool, FC 150 on 20*4*4 = 320, FC 10 on 150 (2 FLOP per multiply-add)."""
    conv1 = 2 * 10 * 1 * 9 * 9 * 20 * 20  # 648,000
    conv2 = 2 * 20 * 10 * 3 * 3 * 8 * 8  # 230,400
    fc1 = 2 * 150 * 320  # 96,000
    fc2 = 2 * 10 * 150  # 3,000
    forward = conv1 + conv2 + fc1 + fc2
    # gradients of all four; errors passed down by all but conv 1 (the input needs none)
    training = 2 * forward + conv2 + fc1 + fc2
    assert bench_floor.products_flop(cnn.example_network(3, seed=0)) == (forward, training)
    # the figure: 137.1 GFLOP per 60,000-image epoch
    assert round(60000 * training / 1e9, 1) == 137.1


def test_layers_without_parameters_count_nothing_and_pass_no_error_need():
    """A pool layer first: the conv above it still has no layer with parameters below,
    so no error is passed down; the FC layers above it do pass errors down."""
    net = build([("p", 2), ("c", 3, 3, "tanh"), ("f", 4, "sigm")], image=(12, 12))
    conv = 2 * 3 * 1 * 3 * 3 * 4 * 4  # 6x6 pooled image, 3x3 kernels -> 4x4
    fc = 2 * 4 * (3 * 4 * 4)
    assert bench_floor.products_flop(net) == (conv + fc, 2 * conv + 3 * fc)


def test_gemm_rate_is_a_positive_rate_and_sized_by_n(monkeypatch):
    ticks = iter(np.arange(0.0, 100.0, 0.5))  # every product "takes" 0.5 s
    monkeypatch.setattr(bench_floor.time, "perf_counter", lambda: next(ticks))
    assert bench_floor.gemm_rate(np.float64, threads=1, n=100, repeat=3) == pytest.approx(
        2 * 100**3 / 0.5 / 1e9
    )


def test_floors_divide_the_arithmetic_by_the_fastest_rate_sampled():
    net = cnn.example_network(3, seed=0)
    fwd, train = bench_floor.products_flop(net)
    samples = [
        {"float64": 12.0, "float32": 40.0},
        {"float64": 20.0, "float32": 30.0},  # the host's speed drifts between samples
    ]
    f = bench_floor.floors(net, samples, 1.25, 2)
    assert f["gemm_gflops"] == {"float64": 20.0, "float32": 40.0}
    assert f["train_epoch_seconds"]["float64"] == pytest.approx(60000 * train / 20e9)
    assert f["train_epoch_seconds"]["float32"] == pytest.approx(60000 * train / 40e9)
    assert f["test_10k_seconds"] == pytest.approx(10000 * fwd / 20e9)
    assert f["numba_start_seconds"] == 1.25 and f["threads"] == 2
    line = bench.floor_line(f)
    assert "20.0 GFLOP/s float64" in line and "fastest of 2 samples" in line
    assert "testcnn 10k at least 0.489 s" in line


def test_gemm_rates_of_both_dtypes(monkeypatch):
    seen = []

    def fake(dtype, threads):
        seen.append((dtype.name, threads))
        return 10.0 if dtype == np.float64 else 20.0

    monkeypatch.setattr(bench_floor, "gemm_rate", fake)
    assert bench_floor.gemm_rates(3) == {"float64": 10.0, "float32": 20.0}
    assert seen == [("float64", 3), ("float32", 3)]


def test_numba_start_times_a_cached_call_in_fresh_processes():
    """The runs after the first load the probe from the cache the first one filled."""
    seen = []

    def run(code, env):
        out = bench._python(code, env)
        seen.append(sorted(p.suffix for p in Path(env["NUMBA_CACHE_DIR"]).rglob("*")))
        return out

    s = bench_floor.numba_start(run, repeat=1)
    assert 0 < s < 60 and len(seen) == 2
    assert ".nbi" in seen[0] and ".nbc" in seen[0] and seen[1] == seen[0]


def test_table_gives_the_floor_beside_the_time_targets():
    r = {
        "train_float64": {"seconds_per_60k": 7.0},
        "train_float32": {"seconds_per_60k": 4.0},
        "testcnn": {"seconds_per_10k": 0.5},
        "first_call": {"warm_seconds": 1.4, "cold_seconds": 20.0},
        "peak_rss": {"bytes": 5e8, "vmhwm_bytes": 5e8, "images": 60000},
        "floor": {
            "train_epoch_seconds": {"float64": 5.0, "float32": 2.7},
            "test_10k_seconds": 0.36,
            "numba_start_seconds": 1.2,
        },
    }
    rows = {row[0]: row for row in bench.make_table(r)}
    assert rows["train float64, s/epoch (ours, fused step)"][4].startswith(
        "< 4 s NO (floor 5.000 s)"
    )
    assert rows["testcnn 10k images, float64 (ours)"][4] == "NO (floor 0.360 s)"
    assert rows["first minibatch, fresh process, warm cache"][4] == "NO (floor 1.200 s)"
    del r["floor"]  # results without floors (older JSON): the plain answer
    rows = {row[0]: row for row in bench.make_table(r)}
    assert rows["testcnn 10k images, float64 (ours)"][4] == "NO"

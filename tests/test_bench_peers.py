"""Checks of the benchmark peers in cnn/bench_peers.py (naive NumPy/SciPy and PyTorch)."""

import sys

import numpy as np
import pytest

import cnn.bench_peers as bp


@pytest.fixture(scope="module")
def tiny():
    params = bp.make_params(7)
    x, y = bp.random_data(2, seed=11)
    return params, x, y


def test_make_params_shapes_and_ranges():
    p = bp.make_params(0)
    assert set(p) == set(bp.PARAM_SHAPES)
    for k, shape in bp.PARAM_SHAPES.items():
        assert p[k].shape == shape and p[k].dtype == np.float64
    assert not p["b1"].any() and not p["b2"].any()
    for k in ("K1", "K2", "W3", "b3", "W4", "b4"):
        assert p[k].min() >= -0.25 and p[k].max() < 0.25 and p[k].std() > 0.05
    q = bp.make_params(0)
    assert all(np.array_equal(p[k], q[k]) for k in p)


def test_import_does_not_import_torch():
    # the benchmark modules must stay torch-free on import (torch is lazy)
    import os
    import subprocess
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    code = "import sys, cnn.bench_peers, cnn.bench; print('torch' in sys.modules)"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.strip() == "False"


def test_numpy_forward_shapes_and_flatten_order(tiny):
    params, x, y = tiny
    o = bp.numpy_forward(params, x)
    assert o.shape == (2, 10) and np.all((o > 0) & (o < 1))
    # loss agrees with the textbook formula on the sigmoid outputs
    ref = -np.sum(y * np.log(o) + (1 - y) * np.log(1 - o)) / len(x)
    assert bp.numpy_loss(params, x, y) == pytest.approx(ref, rel=1e-12)
    # column-major flatten: feature j*16 + c*4 + r for map j, row r, column c
    c = bp._forward_cache(params, x)
    s2 = c["s2"]
    assert c["f"][0, 0 * 16 + 2 * 4 + 1] == s2[0, 0, 1, 2]
    assert c["f"][1, 3 * 16 + 1 * 4 + 3] == s2[1, 3, 3, 1]


def test_numpy_gradients_match_central_differences(tiny):
    params, x, y = tiny
    g = bp.numpy_gradients(params, x, y)
    rng = np.random.default_rng(0)
    eps = 1e-6
    for k, shape in bp.PARAM_SHAPES.items():
        assert g[k].shape == shape
        size = int(np.prod(shape))
        idx = rng.choice(size, size=min(20, size), replace=False)
        num = np.empty(len(idx))
        for t, i in enumerate(idx):
            p = {kk: v.copy() for kk, v in params.items()}
            flat = p[k].reshape(-1)
            flat[i] += eps
            lp = bp.numpy_loss(p, x, y)
            flat[i] -= 2 * eps
            lm = bp.numpy_loss(p, x, y)
            num[t] = (lp - lm) / (2 * eps)
        ana = g[k].reshape(-1)[idx]
        scale = np.max(np.abs(g[k]))
        np.testing.assert_allclose(ana, num, rtol=1e-6, atol=1e-7 * scale, err_msg=k)


def test_torch_gradients_equal_numpy(tiny):
    pytest.importorskip("torch")
    params, x, y = tiny
    gn = bp.numpy_gradients(params, x, y)
    gt = bp.torch_gradients(params, x, y, dtype="float64")
    for k in bp.PARAM_SHAPES:
        np.testing.assert_allclose(
            gt[k], gn[k], rtol=1e-9, atol=1e-12 * np.max(np.abs(gn[k])), err_msg=k
        )
    torch = pytest.importorskip("torch")
    gt2 = bp.torch_gradients(params, x, y, dtype=torch.float64)
    for k in gt:  # torch's threaded CPU kernels are not bitwise reproducible: round-off only
        np.testing.assert_allclose(gt2[k], gt[k], rtol=1e-12, atol=1e-15, err_msg=k)


def test_torch_forward_equals_numpy(tiny):
    torch = pytest.importorskip("torch")
    params, x, _ = tiny
    model = bp.build_torch_model(params, "float64")
    with torch.no_grad():
        o = torch.sigmoid(model(torch.as_tensor(x))).numpy()
    np.testing.assert_allclose(o, bp.numpy_forward(params, x), rtol=1e-12)
    back = model.to_params()
    assert all(np.array_equal(back[k], params[k]) for k in params)
    assert isinstance(model, bp.TorchExample3)


def test_one_sgd_step_torch_equals_naive():
    pytest.importorskip("torch")
    params = bp.make_params(3)
    x, y = bp.random_data(4, seed=5)
    pn = bp.naive_sgd_step(params, x, y, lr=0.01)
    pt = bp.torch_sgd_step(params, x, y, lr=0.01, dtype="float64")
    for k in bp.PARAM_SHAPES:
        assert not np.array_equal(pn[k], params[k]), k  # the step did something
        np.testing.assert_allclose(pt[k], pn[k], rtol=1e-9, atol=1e-14, err_msg=k)
    # and the naive step is exactly W - lr * dL/dW
    g = bp.numpy_gradients(params, x, y)
    np.testing.assert_allclose(pn["W3"], params["W3"] - 0.01 * g["W3"], rtol=0, atol=0)


def _check_epoch_result(r, images):
    for key in (
        "peer",
        "dtype",
        "threads",
        "batch_size",
        "seconds",
        "images",
        "seconds_per_60k",
        "loss",
    ):
        assert key in r, key
    assert r["images"] == images and r["batch_size"] == 50
    assert r["seconds"] > 0 and np.isfinite(r["seconds"])
    assert r["seconds_per_60k"] == pytest.approx(r["seconds"] / images * 60000)
    assert np.isfinite(r["loss"]) and r["loss"] > 0


def test_naive_epoch_time_sane():
    x, y = bp.random_data(100, seed=2)
    r = bp.naive_epoch_time(x, y, n_images=100)
    _check_epoch_result(r, 100)
    assert r["peer"] == "numpy-scipy-naive" and r["dtype"] == "float64"
    with pytest.raises(ValueError):
        bp.naive_epoch_time(x, y, n_images=75)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_torch_epoch_and_test_time_sane(dtype):
    torch = pytest.importorskip("torch")
    x, y = bp.random_data(100, seed=2)
    before = torch.get_num_threads()
    r = bp.torch_epoch_time(x, y, dtype, threads=1, n_images=100, warmup_batches=1)
    _check_epoch_result(r, 100)
    assert r["peer"] == "torch" and r["dtype"] == dtype and r["threads"] == 1
    assert torch.get_num_threads() == before  # restored
    # same mean batch loss as the naive port trained on the same batches
    rn = bp.naive_epoch_time(x, y, n_images=100)
    assert r["loss"] == pytest.approx(rn["loss"], rel=1e-9 if dtype == "float64" else 1e-4)
    # default n_images = all whole batches; n_images > len(x) wraps round
    assert bp.torch_epoch_time(x, y, dtype, threads=1, warmup_batches=0)["images"] == 100
    assert bp.torch_epoch_time(x[:50], y[:50], dtype, threads=1, n_images=150)["images"] == 150
    t = bp.torch_test_time(x, y, getattr(torch, dtype), threads=1, batch_size=30)
    assert t["images"] == 100 and 0.0 <= t["error"] <= 1.0 and t["seconds"] > 0
    assert t["dtype"] == dtype


def test_torch_available_is_bool():
    assert isinstance(bp.torch_available(), bool)

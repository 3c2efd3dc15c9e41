"""The fused training step (cnn/fused.py) against the layer-by-layer path and the
Octave fixtures.

* every golden fixture network: one fused step gives the fixture's loss, errors,
  gradients and updated parameters at 1e-10, and a fused ``traincnn`` the
  fixture's loss array, trained parameters, test error and predictions;
* random networks covering every layer transition (input/conv/pool/FC into
  conv/pool/FC, conv after conv, pool after pool, pool-last and conv-last),
  every activation, both losses, the flag on and off, both modes and both
  dtypes: fused and layer-by-layer training give the same parameters (1e-12
  relative in float64) and loss array;
* the fused step is bit-identical for 1 and 2 Numba threads (subprocesses).
"""

import os
import subprocess
import sys

import numpy as np
import pytest
from _golden import (
    TRAINED,
    build,
    check_backward,
    check_params,
    close,
    forced_flag,
    images,
    load,
    scalar,
    targets,
)
from _nets import build as build_net
from _nets import data

import cnn
from cnn import fused
from cnn.backward import prepare_loss_and_flag
from cnn.workspace import check_x, check_y


def _params(net):
    return [a for _, _, a in net.parameters()]


def _assert_same_params(a, b, rtol, atol, scaled=False):
    """Parameters close; ``scaled``: ``atol`` relative to the array's largest entry."""
    for (i, name, pa), (_, _, pb) in zip(a.parameters(), b.parameters()):
        tol = atol * max(1.0, float(np.abs(pb).max())) if scaled else atol
        np.testing.assert_allclose(pa, pb, rtol=rtol, atol=tol, err_msg=f"layer {i} {name}")


# --------------------------------------------------------------------------- golden fixtures


@pytest.mark.parametrize("name", TRAINED)
def test_fused_step_matches_fixture(name):
    d = load(name)
    net = build(d)
    prepare_loss_and_flag(net, forced_flag(d))
    x = check_x(net, images(d["x"]))
    y = check_y(net, targets(d["y"]), x.shape[0])
    f = fused.FusedNet(net, x.shape[0])
    f.compute(x, y)
    f.apply()
    f.expose()
    check_backward(net, d)  # loss, outputs, er, dK/dW/db at 1e-10
    check_params(net, d, "1", "after one fused step")


@pytest.mark.parametrize("name", TRAINED)
@pytest.mark.parametrize("step", ["fused", "layers"])
def test_traincnn_both_steps_match_fixture(name, step):
    d = load(name)
    net = build(d)
    cnn.traincnn(
        net,
        images(d["train_x"]),
        targets(d["train_y"]),
        int(scalar(d, "epochs")),
        int(scalar(d, "batch_size")),
        calc_last_layer_act_derivative=forced_flag(d),
        verbose=False,
        step=step,
    )
    close(net.loss_array, d["loss_array"].ravel(), "loss_array")
    check_params(net, d, "t", "after training")
    test_x, test_y = images(d["test_x"]), targets(d["test_y"])
    assert cnn.testcnn(net, test_x, test_y, step=step) == scalar(d, "test_err")
    a, labels = cnn.predictcnn(net, test_x, step=step)
    close(a, d["pred_a"].ravel(), "predictcnn a")
    np.testing.assert_array_equal(labels + 1, d["pred_l"].ravel().astype(int))


@pytest.mark.parametrize("name", TRAINED)
@pytest.mark.parametrize("mode", ["faithful", "corrected"])
def test_fixture_networks_fused_equals_layers(name, mode):
    d = load(name)
    nets = {}
    for step in ("fused", "layers"):
        net = build(d, mode=mode)
        cnn.traincnn(
            net,
            images(d["train_x"]),
            targets(d["train_y"]),
            2,
            int(scalar(d, "batch_size")),
            calc_last_layer_act_derivative=forced_flag(d),
            verbose=False,
            step=step,
        )
        nets[step] = net
    _assert_same_params(nets["fused"], nets["layers"], 1e-12, 1e-14)
    np.testing.assert_allclose(nets["fused"].loss_array, nets["layers"].loss_array, rtol=1e-12)


# --------------------------------------------------------------------------- random networks

# (spec, image, loss, flag): every transition into and out of conv, pool and FC layers
NETS = [
    ([("c", 3, 3, "tanh"), ("p", 2), ("f", 4, "sigm")], (10, 9), "cros", None),
    ([("c", 2, (2, 3), "rect"), ("c", 3, 2, "soft"), ("f", 3, "soft")], (7, 8), "cros", None),
    (
        [("p", 2), ("c", 3, 2, "plus"), ("p", 2), ("f", 5, "tanh"), ("f", 2, "none")],
        (11, 12),
        "quad",
        None,
    ),
    ([("c", 4, 3, "sigm"), ("p", 2), ("p", 2)], (13, 14), "quad", True),  # pool last
    ([("c", 3, 3, "none"), ("c", 2, 2, "sigm")], (8, 7), "cros", None),  # conv last (D3)
    ([("c", 3, 2, "tanh"), ("c", 3, 2, "soft")], (6, 6), "cros", True),  # conv softmax last
    ([("c", 2, 3, "rect"), ("c", 2, 2, "tanh")], (7, 7), "quad", None),
    (
        [("f", 6, "plus"), ("f", 5, "soft"), ("f", 4, "rect"), ("f", 3, "sigm")],
        (5, 4),
        "quad",
        False,
    ),
    ([("p", 3), ("f", 3, "tanh")], (9, 10), "quad", None),  # input -> pool
    ([("c", 5, 1, "none"), ("f", 3, "none")], (4, 5), "quad", True),  # D2
]


def _train_pair(spec, image, loss, flag, mode, dtype, epochs=2, n=12, batch=4):
    out = {}
    for step in ("fused", "layers"):
        net = build_net(spec, image, mode=mode, loss=loss, seed=3, lr=0.1, dtype=dtype)
        x, y = data(net, n=n, seed=4, one_hot=loss == "cros")
        # divergence_guard=False: faithful D3 nets run away at lr 0.1; the paths must agree anyway
        cnn.traincnn(
            net,
            x,
            y,
            epochs,
            batch,
            calc_last_layer_act_derivative=flag,
            verbose=False,
            step=step,
            divergence_guard=False,
        )
        out[step] = (net, cnn.predictcnn(net, x, step=step))
    return out


@pytest.mark.parametrize("k", range(len(NETS)))
@pytest.mark.parametrize("mode", ["faithful", "corrected"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_random_networks_fused_equals_layers(k, mode, dtype):
    spec, image, loss, flag = NETS[k]
    out = _train_pair(spec, image, loss, flag, mode, dtype)
    (nf, (af, _)), (nl, (al, _)) = out["fused"], out["layers"]
    assert fused.supports(nf)
    rtol, atol = (1e-12, 1e-12) if dtype == np.float64 else (2e-5, 2e-5)
    _assert_same_params(nf, nl, rtol, atol, scaled=dtype == np.float32)
    np.testing.assert_allclose(nf.loss_array, nl.loss_array, rtol=rtol, atol=atol)
    np.testing.assert_allclose(af, al, rtol=rtol, atol=atol)
    for _, _, a in nf.parameters():
        assert a.dtype == dtype
    assert np.asarray(af).dtype == dtype


@pytest.mark.parametrize("mode", ["faithful", "corrected"])
def test_runtime_fields_match_layer_path(mode):
    """After one minibatch the exposed maps, errors and gradients are the layer path's."""
    spec, image, loss, _ = NETS[2]
    nets = {}
    for step in ("fused", "layers"):
        net = build_net(spec, image, mode=mode, loss=loss, seed=3, lr=0.2)
        x, y = data(net, n=4, seed=4, one_hot=False)
        cnn.traincnn(net, x, y, 1, 4, verbose=False, step=step)
        nets[step] = net
    for lf, ll in zip(nets["fused"].layers[1:], nets["layers"].layers[1:]):
        for name in ("featuremaps", "outputs", "er", "dK", "dW", "db", "z"):
            a, b = getattr(lf, name, None), getattr(ll, name, None)
            if b is None:
                continue
            np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-14, err_msg=name)


def test_step_switch_and_env(monkeypatch):
    from cnn.training import _resolve_step

    monkeypatch.delenv("CNN_STEP", raising=False)
    assert _resolve_step(None) == "fused"  # the default
    with cnn.use_kernels("reference"):
        assert _resolve_step(None) == "layers"  # the readable kernels: the readable path
    net = build_net(NETS[0][0], NETS[0][1], loss="cros")
    x, y = data(net, n=4)
    with pytest.raises(ValueError, match="step='fast'"):
        cnn.traincnn(net, x, y, 1, 2, verbose=False, step="fast")
    monkeypatch.setenv("CNN_STEP", "nope")
    with pytest.raises(ValueError, match=r"\$CNN_STEP='nope'"):
        cnn.traincnn(net, x, y, 1, 2, verbose=False)
    monkeypatch.setenv("CNN_STEP", "fused")
    cnn.traincnn(net, x, y, 1, 2, verbose=False)
    assert net.layers[1].featuremaps is not None


def test_callback_and_resume_same_as_layers():
    """start_batch (resume) and the callback see the same networks in both paths."""
    spec, image, loss, _ = NETS[0]
    seen = {}
    for step in ("fused", "layers"):
        net = build_net(spec, image, loss=loss, seed=3, lr=0.2)
        x, y = data(net, n=12, seed=4)
        losses = []

        def record(n, e, b, losses=losses):
            losses.append((e, b, n.loss, float(n.layers[-1].W.sum())))

        cnn.traincnn(net, x, y, 2, 4, verbose=False, step=step, start_batch=2, callback=record)
        seen[step] = (losses, net)
    lf, ll = seen["fused"][0], seen["layers"][0]
    assert (
        [(e, b) for e, b, *_ in lf]
        == [(e, b) for e, b, *_ in ll]
        == [(0, 2), (1, 0), (1, 1), (1, 2)]
    )
    np.testing.assert_allclose([v[2:] for v in lf], [v[2:] for v in ll], rtol=1e-12)
    assert len(seen["fused"][1].loss_array) == 4


def test_read_only_input_is_copied_not_refused():
    """A read-only input (a memory map, a study worker's shared array) trains as a
    writeable one (the kernels are compiled for writeable arrays only)."""
    spec, image, loss, _ = NETS[0]
    nets = []
    for writeable in (True, False):
        net = build_net(spec, image, loss=loss, seed=3, lr=0.2)
        x, y = data(net, n=8, seed=4)
        x = np.ascontiguousarray(x, dtype=net.dtype)
        x.flags.writeable = writeable
        cnn.traincnn(net, x, y, 1, 4, verbose=False, step="fused")
        nets.append(net)
    _assert_same_params(nets[0], nets[1], 0, 0)


def test_nonfinite_stops_in_both_paths():
    for step in ("fused", "layers"):
        net = build_net(NETS[2][0], NETS[2][1], loss="quad", seed=3, lr=1e300)
        x, y = data(net, n=8, seed=4, one_hot=False)
        with pytest.raises(cnn.training.NonFiniteError), np.errstate(all="ignore"):
            cnn.traincnn(net, x * 1e200, y, 3, 4, verbose=False, step=step)


@pytest.mark.parametrize("k", [0, 2, 4])
def test_parameter_check_from_the_update(k):
    """The update's record of what it wrote: finiteness and the largest weight, as the
    guard would find them by looking."""
    from cnn.guard import _largest_weight

    spec, image, loss, _ = NETS[k]
    net = build_net(spec, image, loss=loss, seed=5, lr=0.3)
    x, y = data(net, n=10, seed=6, one_hot=loss == "cros")
    prepare_loss_and_flag(net)
    f = fused.FusedNet(net, 5)
    assert f.parameter_check() is None  # nothing written yet
    for i in range(2):
        f.compute(x[5 * i : 5 * i + 5], y[5 * i : 5 * i + 5])
        f.apply()
        finite, largest = f.parameter_check()
        assert finite
        assert largest == _largest_weight(net)
    # a parameter replaced by a new array is not vouched for; a NaN written is seen
    top = [layer for layer in net.layers if layer.type in "cf"][-1]
    top.b = top.b.copy()
    f.sync_params()
    assert f.parameter_check() is None
    top.b[0] = np.nan
    f.compute(x[:5], y[:5])
    f.apply()
    assert f.parameter_check()[0] is False
    f.invalidate()
    assert f.parameter_check() is None


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_watch_finds_largest_and_nonfinite(dtype):
    """The update's one-pass check (an integer maximum of the bits of |p|)."""
    rng = np.random.default_rng(11)
    p = rng.standard_normal(37).astype(dtype)
    p[5] = -7.5
    stat = np.zeros(3)
    fused._watch(p, stat, 0)
    assert stat[0] == 7.5 and stat[2] == 0
    stat = np.array([0.0, 9.0, 0.0])
    fused._watch(p, stat, 1)  # a larger earlier maximum is kept
    assert stat[1] == 9.0 and stat[2] == 0
    tiny = np.array([-0.0, np.finfo(dtype).smallest_subnormal, 0.0], dtype)
    stat = np.zeros(3)
    fused._watch(tiny, stat, 0)
    assert stat[0] == np.finfo(dtype).smallest_subnormal and stat[2] == 0
    for bad in (np.inf, -np.inf, np.nan):
        q = p.copy()
        q[30] = bad
        stat = np.zeros(3)
        fused._watch(q, stat, 0)
        assert np.isnan(stat[2]), bad


def test_divergence_stops_alike_in_both_paths():
    """The guard (fed by the fused update's record) stops at the same minibatch with
    the same message as the layer path (which looks at the parameters)."""
    from cnn.synthetic import synthetic_digits

    x, y = synthetic_digits(100, seed=1)
    messages = {}
    for step in ("fused", "layers"):
        net = cnn.example_network(3, seed=0)
        net.learning_rate = 1e6
        with pytest.raises(cnn.DivergenceError) as err, np.errstate(all="ignore"):
            cnn.traincnn(net, x, y, 1, 50, verbose=False, step=step)
        messages[step] = str(err.value)
    assert "diverging at epoch 1, minibatch" in messages["fused"]
    assert messages["fused"] == messages["layers"]


# --------------------------------------------------------------------------- threads

SCRIPT = r"""
import hashlib, sys
sys.path.insert(0, sys.argv[2])
import numpy as np
import cnn
from _nets import build, data
h = hashlib.sha256()
dtype = np.float32 if sys.argv[1] == "float32" else np.float64
for spec, image, loss in [
        ([("c", 3, 3, "tanh"), ("p", 2), ("f", 4, "sigm")], (10, 9), "cros"),
        ([("c", 3, 3, "none"), ("c", 2, 2, "sigm")], (8, 7), "cros"),
        ([("c", 4, 3, "sigm"), ("p", 2), ("p", 2)], (13, 14), "quad")]:
    for mode in ("faithful", "corrected"):
        net = build(spec, image, mode=mode, loss=loss, seed=3, lr=0.2, dtype=dtype)
        x, y = data(net, n=21, seed=4, one_hot=loss == "cros")
        cnn.traincnn(net, x, y, 2, 7, verbose=False, step="fused", divergence_guard=False)
        for _, _, a in net.parameters():
            h.update(np.ascontiguousarray(a).tobytes())
        h.update(np.asarray(net.loss_array, dtype=np.float64).tobytes())
        h.update(cnn.predictcnn(net, x, chunk=5, step="fused")[0].tobytes())
print(h.hexdigest())
"""


def _digest(threads, dtype):
    env = dict(os.environ, NUMBA_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
    r = subprocess.run(
        [sys.executable, "-c", SCRIPT, dtype, os.path.dirname(__file__)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_fused_bit_identical_for_1_and_2_threads(dtype):
    assert _digest(1, dtype) == _digest(2, dtype)


def test_every_task_and_the_loop_take_the_one_argument_list():
    # Numba needs the list spelled out in the parallel loop and in each task (a
    # star argument cannot cross the loop); fused.ARGS is the one source of truth
    import inspect

    def params(f):
        return tuple(inspect.signature(f).parameters)

    assert params(fused._run.py_func) == ("first", "then", "count", "threads", "taken") + fused.ARGS
    tasks = (
        fused._forward_chunk,
        fused._backward_chunk,
        fused._nothing,
        fused._d3_task,
        fused._update_task,
    )
    for task in tasks:
        assert params(task)[1:] == fused.ARGS, task.__name__
    source = inspect.getsource(fused._run.py_func)
    for name in ("first", "then"):
        call = source.rsplit(f"{name}(", 1)[1].split(")\n", 1)[0]
        passed = [a.strip() for a in call.split(",") if a.strip()]
        assert passed[0] == "i" and tuple(passed[1:]) == fused.ARGS, name

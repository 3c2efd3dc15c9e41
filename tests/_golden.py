"""Helpers for the golden tests: fixtures made by the original under GNU Octave.

See tests/fixtures/README.md for what each variable is.
"""

from pathlib import Path

import numpy as np
import scipy.io

import cnn
from cnn.matlab import kernels_from_matlab, maps_from_matlab

FIXTURE_DIR = Path(__file__).parent / "fixtures"
FIXTURES = sorted(p.stem for p in FIXTURE_DIR.glob("g*.mat"))
TRAINED = [f for f in FIXTURES if not f.startswith("g10")]
RTOL, ATOL = 1e-10, 1e-12


def load(name):
    return scipy.io.loadmat(FIXTURE_DIR / f"{name}.mat")


def scalar(d, key):
    return float(d[key].ravel()[0])


def text(d, key):
    return str(d[key].ravel()[0]).strip()


def layer_types(d):
    return text(d, "layer_types")


def forced_flag(d):
    f = scalar(d, "flag_forced")
    return None if f < 0 else bool(f)


def build(d, mode="faithful"):
    """Build the fixture's network with the public constructors, then load the
    fixture's initial parameters (the Octave generator cannot be replayed)."""
    types = layer_types(d)
    acts = [str(a).strip() for a in d["layer_acts"]]
    x = d["x"]
    net = cnn.initcnn(x.shape[:2], scalar(d, "learning_rate"), mode=mode, seed=0)
    for l, (t, act) in enumerate(zip(types, acts), start=1):
        if t == "c":
            kh, kw = (int(v) for v in d[f"L{l}_kernel_hw"].ravel())
            M = int(scalar(d, f"L{l}_no_featuremaps"))
            cnn.add_conv_layer(net, M, (kh, kw), act)
        elif t == "p":
            cnn.add_pool_layer(net, int(scalar(d, f"L{l}_rate")))
        elif t == "f":
            cnn.add_fc_layer(net, d[f"L{l}_W0"].shape[0], act)
    set_params(net, d, "0")
    net.loss_func = text(d, "loss_func_requested")
    return net


def set_params(net, d, suffix):
    for l, layer in enumerate(net.layers, start=1):
        if layer.type == "c":
            layer.K = kernels_from_matlab(
                d[f"L{l}_K{suffix}"],
                layer.n_maps,
                layer.n_prev_maps,
                layer.kernel_height,
                layer.kernel_width,
            )
            layer.b = d[f"L{l}_b{suffix}"].ravel().astype(float)
        elif layer.type == "f":
            layer.W = np.ascontiguousarray(d[f"L{l}_W{suffix}"], dtype=float)
            layer.b = d[f"L{l}_b{suffix}"].ravel().astype(float)


def images(a):
    """Fixture images H x W x N -> (N, H, W)."""
    return np.ascontiguousarray(np.asarray(a).transpose(2, 0, 1))


def targets(a):
    """Fixture targets C x N -> (N, C)."""
    return np.ascontiguousarray(np.asarray(a).T)


def close(actual, expected, what):
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL, err_msg=what)


def expected_grad(net, d, l, name):
    layer = net.layers[l - 1]
    g = d[f"L{l}_{name}"]
    if name == "dK":
        return kernels_from_matlab(
            g, layer.n_maps, layer.n_prev_maps, layer.kernel_height, layer.kernel_width
        )
    return g.ravel() if name == "db" else g


def check_forward(net, d):
    for l, layer in enumerate(net.layers, start=1):
        if f"L{l}_fm" in d:
            close(layer.featuremaps, maps_from_matlab(d[f"L{l}_fm"]), f"layer {l} featuremaps")
        if f"L{l}_out" in d and layer.outputs is not None:
            close(layer.outputs, d[f"L{l}_out"].T, f"layer {l} outputs")


def check_backward(net, d):
    close(net.loss, scalar(d, "loss"), "loss")
    assert net.calc_last_layer_act_derivative == bool(scalar(d, "flag"))
    assert net.loss_func == text(d, "loss_func")
    for l, layer in enumerate(net.layers, start=1):
        if f"L{l}_out" in d:
            close(layer.outputs, d[f"L{l}_out"].T, f"layer {l} outputs")
        if f"L{l}_er" in d:
            e = d[f"L{l}_er"]
            close(layer.er, e.T if layer.type == "f" else maps_from_matlab(e), f"layer {l} er")
        for g in ("dK", "dW", "db"):
            if f"L{l}_{g}" in d:
                close(getattr(layer, g), expected_grad(net, d, l, g), f"layer {l} {g}")


def check_params(net, d, suffix, what):
    for l, layer in enumerate(net.layers, start=1):
        if layer.type == "c":
            close(
                layer.K,
                kernels_from_matlab(
                    d[f"L{l}_K{suffix}"],
                    layer.n_maps,
                    layer.n_prev_maps,
                    layer.kernel_height,
                    layer.kernel_width,
                ),
                f"{what}: layer {l} K",
            )
        if layer.type in "cf":
            close(layer.b, d[f"L{l}_b{suffix}"].ravel(), f"{what}: layer {l} b")
        if layer.type == "f":
            close(layer.W, d[f"L{l}_W{suffix}"], f"{what}: layer {l} W")


def check_training(net, d):
    """traincnn from the current (initial) parameters, then testcnn/predictcnn."""
    cnn.traincnn(
        net,
        images(d["train_x"]),
        targets(d["train_y"]),
        int(scalar(d, "epochs")),
        int(scalar(d, "batch_size")),
        calc_last_layer_act_derivative=forced_flag(d),
        verbose=False,
    )
    close(net.loss_array, d["loss_array"].ravel(), "loss_array")
    check_params(net, d, "t", "after training")
    test_x, test_y = images(d["test_x"]), targets(d["test_y"])
    assert cnn.testcnn(net, test_x, test_y) == scalar(d, "test_err")
    a, labels = cnn.predictcnn(net, test_x)
    close(a, d["pred_a"].ravel(), "predictcnn a")
    np.testing.assert_array_equal(labels + 1, d["pred_l"].ravel().astype(int))

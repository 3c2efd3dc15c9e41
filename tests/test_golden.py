"""The port against the original, run under GNU Octave (tests/fixtures/g*.mat).

Every stored variable is compared at relative tolerance 1e-10 (absolute 1e-12
near 0), in faithful mode, quirks included.
"""

import numpy as np
import pytest
import scipy.io
from _golden import (
    FIXTURE_DIR,
    FIXTURES,
    TRAINED,
    build,
    check_backward,
    check_forward,
    check_params,
    check_training,
    close,
    forced_flag,
    images,
    load,
    scalar,
    targets,
)

import cnn
from cnn.matlab import load_cnn, save_cnn


def _prepare(net, d):
    cnn.backward.prepare_loss_and_flag(net, forced_flag(d))


@pytest.mark.parametrize("name", FIXTURES)
def test_forward(name):
    d = load(name)
    net = build(d)
    cnn.ffcnn(net, images(d["x"]))
    check_forward(net, d)


@pytest.mark.parametrize("name", TRAINED)
def test_backward_and_step(name):
    d = load(name)
    net = build(d)
    _prepare(net, d)
    cnn.ffcnn(net, images(d["x"]))
    cnn.bpcnn(net, targets(d["y"]))
    check_backward(net, d)
    cnn.gradientdescentcnn(net)
    check_params(net, d, "1", "after one step")


@pytest.mark.parametrize("name", TRAINED)
def test_training_test_predict(name):
    d = load(name)
    check_training(build(d), d)


@pytest.mark.parametrize("name", TRAINED)
def test_load_octave_struct(name):
    """The Octave-saved struct itself (cnn_setup) gives the same numbers."""
    d = load(name)
    net = load_cnn(FIXTURE_DIR / f"{name}.mat", var="cnn_setup")
    assert net.loss_func == d["loss_func"][0]
    assert net.calc_last_layer_act_derivative == bool(scalar(d, "flag"))
    assert net.learning_rate == scalar(d, "learning_rate")
    check_params(net, d, "0", "loaded")
    cnn.ffcnn(net, images(d["x"]))
    cnn.bpcnn(net, targets(d["y"]))
    check_backward(net, d)
    cnn.gradientdescentcnn(net)
    check_params(net, d, "1", "after one step")
    check_training(load_cnn(FIXTURE_DIR / f"{name}.mat", var="cnn_setup"), d)


@pytest.mark.parametrize("name", TRAINED)
def test_save_cnn_writes_matlab_layout(name, tmp_path):
    """save_cnn after ffcnn/bpcnn writes every field in MATLAB's layout."""
    d = load(name)
    net = build(d)
    _prepare(net, d)
    cnn.ffcnn(net, images(d["x"]))
    cnn.bpcnn(net, targets(d["y"]))
    save_cnn(tmp_path / "net.mat", net)
    s = scipy.io.loadmat(tmp_path / "net.mat", squeeze_me=False)["cnn"][0, 0]
    close(s["loss"][0, 0], scalar(d, "loss"), "loss")
    assert s["CalcLastLayerActDerivative"][0, 0] == scalar(d, "flag")
    assert s["loss_func"][0] == d["loss_func"][0]
    layers = s["layers"][0]
    for l in range(1, len(layers) + 1):
        L = layers[l - 1][0, 0]
        t = L["type"][0]
        if f"L{l}_fm" in d:
            fm = d[f"L{l}_fm"]
            fm = fm[..., None] if fm.ndim == 3 else fm
            maps = L["featuremaps"][0]
            assert len(maps) == fm.shape[3]
            for j in range(fm.shape[3]):
                close(
                    maps[j].reshape(fm.shape[:3]), fm[..., j], f"layer {l} featuremaps{{{j + 1}}}"
                )
        if f"L{l}_out" in d:
            close(L["outputs"], d[f"L{l}_out"], f"layer {l} outputs")
        if f"L{l}_er" in d:
            er = L["er"][0]
            if t == "f":
                close(er[0], d[f"L{l}_er"], f"layer {l} er{{1}}")
            else:
                e = d[f"L{l}_er"]
                e = e[..., None] if e.ndim == 3 else e
                for j in range(e.shape[3]):
                    close(er[j].reshape(e.shape[:3]), e[..., j], f"layer {l} er{{{j + 1}}}")
        for g in ("K", "b", "dK", "db", "dW", "W"):
            key = f"L{l}_{g}0" if g in ("K", "b", "W") else f"L{l}_{g}"
            if key in d:
                close(L[g].reshape(d[key].shape), d[key], f"layer {l} {g}")


@pytest.mark.parametrize("name", TRAINED)
def test_save_load_round_trip_continues_training(name, tmp_path):
    """Saving and loading mid-way gives the same trained network as no round trip."""
    d = load(name)
    ref = build(d)
    x, y = images(d["train_x"]), targets(d["train_y"])
    bs, flag = int(scalar(d, "batch_size")), forced_flag(d)
    cnn.traincnn(ref, x, y, 2, bs, calc_last_layer_act_derivative=flag, verbose=False)
    net = build(d)
    cnn.traincnn(net, x, y, 1, bs, calc_last_layer_act_derivative=flag, verbose=False)
    save_cnn(tmp_path / "mid.mat", net)
    net2 = load_cnn(tmp_path / "mid.mat")
    assert net2.calc_last_layer_act_derivative == net.calc_last_layer_act_derivative
    cnn.traincnn(net2, x, y, 1, bs, calc_last_layer_act_derivative=flag, verbose=False)
    for (_, _, a), (_, _, b) in zip(ref.parameters(), net2.parameters()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ref.loss_array[-len(net2.loss_array) :], net2.loss_array)


def test_pool_not_divisible_runs_backward():
    """g10: the original's bpcnn fails (D7); the port floors and back-propagates."""
    d = load("g10_pool_not_divisible_forward")
    assert "nonconformant" in str(d["backward_error"][0])
    net = build(d)
    cnn.ffcnn(net, images(d["x"]))
    check_forward(net, d)
    cnn.bpcnn(net, targets(d["y"]))
    pool = net.layers[2]
    assert pool.er.shape == net.layers[1].featuremaps.shape  # 8x8: last row/col get zero
    assert np.all(pool.er[:, :, 6:, :] == 0) and np.all(pool.er[:, :, :, 6:] == 0)
    assert np.isfinite(net.loss)


SAVECNN_FIELDS = {  # what the original savecnn.m copies into its variable cnn1
    "i": (
        "type",
        "no_featuremaps",
        "featuremap_width",
        "featuremap_height",
        "prev_layer_no_featuremaps",
    ),
    "c": (
        "type",
        "K",
        "b",
        "act_func",
        "no_featuremaps",
        "kernel_width",
        "kernel_height",
        "featuremap_width",
        "featuremap_height",
    ),
    "p": (
        "type",
        "subsample_rate",
        "subsample_method",
        "no_featuremaps",
        "featuremap_width",
        "featuremap_height",
        "act_func",
    ),
    "f": ("type", "no_of_nodes", "act_func", "no_of_inputs", "convert_input_to_1D", "W", "b"),
}


@pytest.mark.parametrize("name", ["g01_c2p_ex3like_auto_cros", "g02_quad_sigm_flag_on"])
def test_load_savecnn_struct_and_continue_training(name, tmp_path):
    """A struct with exactly the fields the original's savecnn writes (variable cnn1:
    no flag, no prev_layer_no_featuremaps for conv layers) loads and trains on."""
    d = load(name)
    setup = scipy.io.loadmat(FIXTURE_DIR / f"{name}.mat", simplify_cells=True)["cnn_setup"]
    cnn1 = {
        k: setup[k]
        for k in (
            "no_of_layers",
            "input_image_height",
            "input_image_width",
            "no_of_input_channels",
            "loss_func",
            "regularization_const",
            "learning_rate",
        )
    }
    cnn1["namaste"] = 1.0
    cnn1["loss_func"] = str(d["loss_func_requested"][0])
    layers = np.empty((1, len(setup["layers"])), dtype=object)
    for i, L in enumerate(setup["layers"]):
        layers[0, i] = {k: L[k] for k in SAVECNN_FIELDS[L["type"]]}
    cnn1["layers"] = layers
    scipy.io.savemat(tmp_path / "saved.mat", {"cnn1": cnn1})
    net = load_cnn(tmp_path / "saved.mat", var="cnn1")
    assert net.calc_last_layer_act_derivative is None
    assert net.loss_func == str(d["loss_func_requested"][0])
    check_params(net, d, "0", "loaded from savecnn layout")
    check_training(net, d)

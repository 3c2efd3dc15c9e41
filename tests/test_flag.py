"""The CalcLastLayerActDerivative flag: derivation, forcing, and what it means."""

import numpy as np
import pytest
from _nets import build, data

import cnn
from cnn import derive_flag, gradient_checker, resolve_loss

SPEC = [("c", 2, 3, "tanh"), ("p", 2), ("f", 5, "tanh"), ("f", 3, "sigm")]


# the table of the reference document, section 8
@pytest.mark.parametrize(
    "requested, act, loss, flag",
    [
        ("auto", "sigm", "cros", False),
        ("quad", "sigm", "quad", True),
        ("auto", "tanh", "quad", True),
        ("auto", "rect", "quad", True),
        ("auto", "plus", "quad", True),
        ("auto", "soft", "quad", True),
        ("auto", "none", "quad", False),
        ("quad", "none", "quad", False),
        ("cros", "soft", "cros", False),
        ("cros", "sigm", "cros", False),
    ],
)
def test_derived_flag_table(requested, act, loss, flag):
    assert resolve_loss(requested, act) == loss
    assert derive_flag(loss, act) is flag
    net = build([("f", 4, "tanh"), ("f", 3, act)], (3, 3), loss=requested)
    x, y = data(net, n=2)
    cnn.traincnn(net, x, y, 1, 2, verbose=False)
    assert (net.loss_func, net.calc_last_layer_act_derivative) == (loss, flag)


def _grads(net, x, y):
    cnn.bpcnn(cnn.ffcnn(net, x), y)
    return [getattr(net.layers[i], "d" + p).copy() for i, p, _ in net.parameters()]


def test_forced_on_under_cross_entropy_gives_exactly_the_quadratic_gradients():
    cros = build(SPEC, (8, 8))
    quad = build(SPEC, (8, 8), loss="quad")
    x, y = data(cros)
    cnn.backward.prepare_loss_and_flag(cros, True)
    cnn.backward.prepare_loss_and_flag(quad, None)
    assert (cros.loss_func, quad.loss_func, quad.calc_last_layer_act_derivative) == (
        "cros",
        "quad",
        True,
    )
    for a, b in zip(_grads(cros, x, y), _grads(quad, x, y)):
        np.testing.assert_array_equal(a, b)
    assert cros.loss != quad.loss  # the reported loss does not depend on the flag


def test_flag_selects_which_loss_the_gradients_belong_to():
    net = build(SPEC, (8, 8))
    x, y = data(net)
    off = gradient_checker(net, x, y)  # derived: cros, flag 0
    assert off.passed and off.flag is False
    net.calc_last_layer_act_derivative = True  # forced on, cross-entropy reported
    on = gradient_checker(net, x, y)
    assert not on.passed
    assert all(c.norm_rel > 0.1 for c in on.checks)  # wrong in every layer
    quad = build(SPEC, (8, 8), loss="quad")  # against the quadratic loss: right
    quad.calc_last_layer_act_derivative = True
    assert gradient_checker(quad, x, y).passed


def test_last_layer_delta_with_and_without_the_flag():
    net = build(SPEC, (8, 8))
    x, y = data(net)
    cnn.ffcnn(net, x)
    o = net.layers[-1].outputs.copy()
    net.calc_last_layer_act_derivative = False
    cnn.bpcnn(net, y)
    np.testing.assert_array_equal(net.layers[-1].er, o - y)
    net.calc_last_layer_act_derivative = True
    cnn.bpcnn(net, y)
    np.testing.assert_array_equal(net.layers[-1].er, o * (1 - o) * (o - y))
    assert np.all(np.abs(net.layers[-1].er) <= np.abs(o - y) / 4)


def test_traincnn_forces_and_records_the_flag():
    net = build(SPEC, (8, 8))
    x, y = data(net, n=4)
    cnn.traincnn(net, x, y, 1, 2, calc_last_layer_act_derivative=True, verbose=False)
    assert net.calc_last_layer_act_derivative is True and net.loss_func == "cros"
    cnn.traincnn(net, x, y, 1, 2, verbose=False)  # None: derived again, as the original
    assert net.calc_last_layer_act_derivative is False


def test_bpcnn_without_flag_derives_it():
    """The original stops ('no member CalcLastLayerActDerivative'); the port derives it."""
    net = build(SPEC, (8, 8))
    x, y = data(net)
    assert net.calc_last_layer_act_derivative is None
    cnn.bpcnn(cnn.ffcnn(net, x), y)
    assert net.calc_last_layer_act_derivative is False and net.loss_func == "cros"


def test_bad_flag_value():
    net = build(SPEC, (8, 8))
    x, y = data(net)
    with pytest.raises(TypeError, match="calc_last_layer_act_derivative"):
        cnn.traincnn(net, x, y, 1, 2, calc_last_layer_act_derivative="yes", verbose=False)

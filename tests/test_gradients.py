"""Analytic gradients against central differences of the loss.

Corrected mode: every gradient equals the numerical gradient, for every
activation, layer transition and the cases where the original crashes.
Faithful mode: the checker finds the original's defects exactly where the
original has them, and passes where the original passes.
"""

import numpy as np
import pytest
from _nets import build, data

import cnn
from cnn import ACTIVATIONS, gradient_checker

HIDDEN_ACTS = ACTIVATIONS


def check(net, n=4, one_hot=True, **kw):
    x, y = data(net, n=n, one_hot=one_hot)
    return gradient_checker(net, x, y, **kw)


def assert_passes(report):
    assert report.passed, str(report)


# ----------------------------------------------------------------- corrected mode: everything


@pytest.mark.parametrize("act", HIDDEN_ACTS)
def test_hidden_fc_activation(act):
    assert_passes(check(build([("f", 5, act), ("f", 3, "sigm")], (4, 5))))


@pytest.mark.parametrize("act", HIDDEN_ACTS)
def test_hidden_conv_activation(act):
    assert_passes(check(build([("c", 3, (3, 2), act), ("p", 2), ("f", 3, "sigm")], (7, 7))))


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_output_activation_with_derived_loss(act):
    # sigm: cros, flag 0; tanh rect plus soft: quad, flag 1; none: quad, flag 0
    net = build([("f", 5, "tanh"), ("f", 3, act)], (4, 5))
    report = check(net, one_hot=act in ("sigm", "soft"))
    assert_passes(report)


def test_sigmoid_output_with_quadratic_loss():
    assert_passes(
        check(build([("f", 5, "tanh"), ("f", 3, "sigm")], (4, 5), loss="quad"), one_hot=False)
    )


@pytest.mark.parametrize(
    "name, spec, image",
    [
        ("f<-f", [("f", 6, "tanh"), ("f", 5, "rect"), ("f", 3, "sigm")], (4, 4)),
        ("p<-f", [("c", 2, 3, "tanh"), ("p", 2), ("f", 3, "sigm")], (8, 8)),
        ("c<-f", [("c", 2, (3, 2), "tanh"), ("f", 3, "sigm")], (6, 7)),
        (
            "p<-c, c<-p",
            [("c", 2, 3, "tanh"), ("p", 2), ("c", 3, (2, 3), "sigm"), ("p", 1), ("f", 3, "sigm")],
            (12, 13),
        ),
        ("p<-p", [("c", 2, 2, "tanh"), ("p", 2), ("p", 2), ("f", 3, "sigm")], (9, 9)),
        (
            "c<-c (not in the original)",
            [("c", 2, 3, "tanh"), ("c", 2, 2, "rect"), ("f", 3, "sigm")],
            (7, 7),
        ),
        (
            "three conv layers",
            [
                ("c", 2, 3, "rect"),
                ("p", 2),
                ("c", 2, 3, "tanh"),
                ("p", 1),
                ("c", 2, 2, "sigm"),
                ("f", 3, "sigm"),
            ],
            (14, 14),
        ),
    ],
)
def test_layer_transitions(name, spec, image):
    assert_passes(check(build(spec, image)))


def test_conv_last_layer():
    net = build([("c", 2, (3, 2), "sigm")], (6, 5))
    x, y = data(net, n=3)
    assert_passes(gradient_checker(net, x, y))


def test_pool_last_layer():
    assert_passes(check(build([("c", 2, 3, "sigm"), ("p", 2)], (6, 6)), n=3, one_hot=False))


def test_softmax_conv_last_layer_flag_on():
    # softmax across maps at each position, quadratic loss, flag on
    assert_passes(check(build([("c", 3, 2, "soft")], (4, 4)), n=3, one_hot=False))


@pytest.mark.parametrize(
    "spec",
    [
        [("c", 2, 3, "tanh"), ("p", 2), ("f", 3, "sigm")],
        [("c", 2, 3, "tanh"), ("f", 3, "sigm")],
        [("f", 4, "tanh"), ("f", 3, "sigm")],
    ],
)
def test_multi_channel_input(spec):
    """D6: the original cannot train on C > 1 channels; the port can."""
    net = build(spec, (8, 8, 3))
    assert net.layers[1].n_prev_maps == 3 if spec[0][0] == "c" else True
    assert_passes(check(net))


def test_batch_of_one():
    """D5: the original fails for N = 1 with conv/pool layers."""
    net = build(
        [("c", 2, 3, "tanh"), ("p", 2), ("c", 2, 2, "sigm"), ("p", 1), ("f", 3, "sigm")], (10, 10)
    )
    assert_passes(check(net, n=1))


@pytest.mark.parametrize(
    "spec",
    [
        [("c", 2, 2, "tanh"), ("p", 3), ("f", 3, "sigm")],  # 8x8 pooled by 3, FC after it
        [("c", 2, 2, "tanh"), ("p", 3), ("c", 2, 2, "sigm")],  # the g10 shape, conv after it
        [("c", 2, (2, 3), "tanh"), ("p", 2), ("f", 3, "sigm")],  # 8x7: one dim not divisible
    ],
)
def test_pool_not_divisible(spec):
    """D7: floor like the forward pass, zero gradient for the dropped rows."""
    net = build(spec, (9, 9))
    report = check(net, n=3)
    assert_passes(report)
    x, y = data(net, n=3)
    cnn.ffcnn(net, x)
    cnn.bpcnn(net, y)
    pool = net.layers[2]
    H, W = net.layers[1].map_shape
    r = pool.rate
    assert pool.er.shape[2:] == (H, W)
    assert np.all(pool.er[:, :, (H // r) * r :, :] == 0)
    assert np.all(pool.er[:, :, :, (W // r) * r :] == 0)


@pytest.mark.parametrize("last", ["f", "c"])
def test_softmax_with_cross_entropy(last):
    """D8: categorical cross-entropy with a softmax output, flag 0."""
    if last == "f":
        net = build([("c", 2, 3, "tanh"), ("p", 2), ("f", 4, "soft")], (8, 8), loss="cros")
        x, y = data(net)
    else:  # softmax across maps: one-hot over the maps at each position
        net = build([("c", 3, 3, "soft")], (4, 4), loss="cros")
        x, _ = data(net, n=3)
        rng = np.random.default_rng(5)
        onehot = np.eye(3)[rng.integers(0, 3, (3, 2, 2))]  # (N, H, W, M)
        y = cnn.flatten_maps(np.ascontiguousarray(onehot.transpose(0, 3, 1, 2)))
    report = gradient_checker(net, x, y)
    assert report.flag is False and report.loss_func == "cros"
    assert_passes(report)


# ----------------------------------------------------------------- faithful mode: the defects

C2 = [
    ("c", 2, 3, "tanh"),
    ("p", 2),
    ("c", 3, 2, "tanh"),
    ("p", 2),
    ("f", 4, "tanh"),
    ("f", 3, "sigm"),
]


def test_faithful_detects_d1_wrong_flip():
    """D1: every conv layer below the highest gets a wrong gradient (C1 in the reference)."""
    report = check(build(C2, (12, 12), mode="faithful"))
    failed = {(c.layer, c.param) for c in report.failures()}
    assert ("2", "K") not in failed  # sanity of the key type
    assert (2, "K") in failed
    assert all(layer == 2 for layer, _ in failed)
    for layer in (4, 6, 7):
        assert report.layer_passed(layer)
    assert_passes(check(build(C2, (12, 12), mode="corrected")))


def test_faithful_passes_with_symmetric_kernels():
    """Control 1: with 180-degree-symmetric upper kernels the wrong flip is harmless."""
    net = build(C2, (12, 12), mode="faithful")
    K = net.layers[3].K
    net.layers[3].K = np.ascontiguousarray((K + K[:, :, ::-1, ::-1]) / 2)
    assert_passes(check(net))


def test_faithful_detects_d2_none_derivative():
    """D2: a hidden 'none' layer and the layers below it get wrong gradients."""
    spec = [("c", 2, 3, "sigm"), ("p", 2), ("f", 5, "none"), ("f", 3, "sigm")]
    report = check(build(spec, (8, 8), mode="faithful"))
    assert report.layer_passed(5)
    assert not report.layer_passed(4) and not report.layer_passed(2)
    assert_passes(check(build(spec, (8, 8), mode="corrected")))


def test_faithful_detects_d3_conv_last():
    report = check(build([("c", 2, (3, 2), "sigm")], (6, 5), mode="faithful"), n=3)
    (k,) = [c for c in report.checks if c.param == "K"]
    (b,) = [c for c in report.checks if c.param == "b"]
    assert not k.passed and b.passed  # db is correct in the original


def test_d3_closed_form_with_identical_examples():
    """With N identical examples the original's dK is exactly N times the true one."""
    net = build([("c", 2, 3, "sigm")], (6, 6), mode="faithful")
    x, y = data(net, n=1)
    x3, y3 = np.repeat(x, 3, axis=0), np.repeat(y, 3, axis=0)
    cnn.bpcnn(cnn.ffcnn(net, x3), y3)
    dK_faithful = net.layers[1].dK.copy()
    net.mode = "corrected"
    cnn.bpcnn(cnn.ffcnn(net, x3), y3)
    np.testing.assert_allclose(dK_faithful, 3 * net.layers[1].dK, rtol=1e-12)


def test_faithful_detects_d4_pool_last():
    net = build([("c", 2, 3, "sigm"), ("p", 2)], (6, 6), mode="faithful")
    x, y = data(net, n=3, one_hot=False)
    report = gradient_checker(net, x, y)
    assert not report.passed
    net.mode = "corrected"
    cnn.bpcnn(cnn.ffcnn(net, x), y)
    dK = net.layers[1].dK.copy()
    net.mode = "faithful"
    cnn.bpcnn(cnn.ffcnn(net, x), y)
    np.testing.assert_allclose(net.layers[1].dK, 4 * dK, rtol=1e-12)  # r^2 = 4 times


@pytest.mark.parametrize("act", ["sigm", "tanh", "rect", "plus", "soft"])
def test_faithful_passes_where_the_original_passes(act):
    """One conv layer, FC last, no hidden 'none': the original's gradients are right (C3)."""
    spec = [("c", 2, 3, act), ("p", 2), ("f", 4, act), ("f", 3, "sigm")]
    assert_passes(check(build(spec, (8, 8), mode="faithful")))


def test_raise_on_fail_names_the_parameter_like_the_original():
    net = build(C2, (12, 12), mode="faithful")
    x, y = data(net)
    with pytest.raises(cnn.GradientCheckError, match=r"Conv layer K\(.*\) at layer 2"):
        gradient_checker(net, x, y, raise_on_fail=True)


def test_report_has_every_array_from_last_to_first():
    net = build(C2, (12, 12))
    report = check(net)
    assert [(c.layer, c.param) for c in report.checks] == [
        (7, "W"),
        (7, "b"),
        (6, "W"),
        (6, "b"),
        (4, "K"),
        (4, "b"),
        (2, "K"),
        (2, "b"),
    ]
    assert "| 2 | c | K |" in report.to_markdown()


def test_checker_does_not_modify_the_network():
    net = build(C2, (12, 12))
    before = [a.copy() for _, _, a in net.parameters()]
    check(net)
    for a, b in zip(before, (a for _, _, a in net.parameters())):
        np.testing.assert_array_equal(a, b)
    assert net.layers[1].featuremaps is None

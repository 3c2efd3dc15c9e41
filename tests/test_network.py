"""Construction: shapes, the original's draw order, seeding, and bad input."""

import numpy as np
import pytest
from _nets import build, data

import cnn
from cnn.matlab import CNNFileError, load_cnn, save_cnn


def test_draws_follow_the_original_order():
    """Conv kernels: outer loop over output maps, inner over input maps, each kh x kw
    filled column-major from 0.5*rand - 0.25; then FC W (n x n_in, column-major), then b."""
    net = cnn.initcnn((6, 7), seed=42)
    cnn.add_conv_layer(net, 2, (3, 2), "tanh")
    cnn.add_pool_layer(net, 2)
    cnn.add_conv_layer(net, 3, 1, "sigm")
    cnn.add_fc_layer(net, 4, "sigm")
    rng = np.random.default_rng(42)
    u = lambda *shape: (0.5 * rng.random(int(np.prod(shape))) - 0.25).reshape(shape, order="F")  # noqa: E731
    K2 = [[u(3, 2)] for j in range(2)]
    K4 = [[u(1, 1) for k in range(2)] for j in range(3)]
    W5, b5 = u(4, 3 * 2 * 3), u(4, 1)
    np.testing.assert_array_equal(net.layers[1].K, np.array(K2))
    np.testing.assert_array_equal(net.layers[3].K, np.array(K4))
    np.testing.assert_array_equal(net.layers[4].W, W5)
    np.testing.assert_array_equal(net.layers[4].b, b5[:, 0])
    assert np.all(net.layers[1].b == 0) and np.all(net.layers[3].b == 0)


def test_shapes_and_ranges_of_example3():
    net = cnn.example_network(3, seed=0)
    L = net.layers
    assert [l.type for l in L] == list("icpcpff")
    assert L[1].K.shape == (10, 1, 9, 9) and L[1].map_shape == (20, 20)
    assert L[2].map_shape == (10, 10)
    assert L[3].K.shape == (20, 10, 3, 3) and L[3].map_shape == (8, 8)
    assert L[4].map_shape == (4, 4)
    assert L[5].W.shape == (150, 320) and L[6].W.shape == (10, 150)
    for _, _, a in net.parameters():
        assert a.dtype == np.float64
        assert np.all(a >= -0.25) and np.all(a < 0.25)
    assert net.learning_rate == 0.01 and net.loss_func == "auto" and net.mode == "faithful"


def test_seed_and_rng():
    a = cnn.example_network(3, seed=7)
    b = cnn.example_network(3, rng=np.random.default_rng(7))
    c = cnn.example_network(3, seed=8)
    for (_, _, p), (_, _, q), (_, _, r) in zip(a.parameters(), b.parameters(), c.parameters()):
        np.testing.assert_array_equal(p, q)
        assert not np.any(p) or not np.array_equal(p, r)  # conv biases start at 0
    net = cnn.initcnn((5, 5), seed=1)
    cnn.add_fc_layer(net, 2, "sigm", seed=3)
    ref = cnn.initcnn((5, 5), seed=99)
    cnn.add_fc_layer(ref, 2, "sigm", rng=np.random.default_rng(3))
    np.testing.assert_array_equal(net.layers[1].W, ref.layers[1].W)
    with pytest.raises(ValueError, match="either rng= or seed="):
        cnn.initcnn((5, 5), seed=1, rng=np.random.default_rng(1))
    with pytest.raises(TypeError, match="rng"):
        cnn.initcnn((5, 5), rng=3)


def test_example_networks_build_and_run():
    for ex, n_in in ((1, 15 * 3 * 3), (2, 50 * 3 * 3), (3, 320)):
        net = cnn.example_network(ex, seed=0)
        assert net.layers[-2].n_inputs == n_in
        x = np.random.default_rng(0).random((2, 28, 28))
        a, labels = cnn.predictcnn(net, x)
        assert a.shape == (2,) and labels.shape == (2,) and labels.max() < 10


def test_predict_and_test_leave_the_network_unchanged():
    net = build([("c", 2, 3, "tanh"), ("p", 2), ("f", 3, "sigm")], (8, 8))
    x, y = data(net, n=6)
    cnn.testcnn(net, x, y)
    cnn.predictcnn(net, x)
    assert all(l.featuremaps is None and l.outputs is None for l in net.layers)


def test_testcnn_and_predictcnn_match_the_forward_pass_and_ties():
    net = build([("c", 2, 3, "tanh"), ("p", 2), ("f", 3, "sigm")], (8, 8))
    x, y = data(net, n=7)
    o = cnn.ffcnn(net.copy(), x).layers[-1].outputs
    a, labels = cnn.predictcnn(net, x, chunk=3, step="layers")  # ffcnn's own forward
    np.testing.assert_array_equal(labels, o.argmax(axis=1))
    np.testing.assert_array_equal(a, o.max(axis=1))
    a, labels = cnn.predictcnn(net, x, chunk=3)  # the fused forward: the same to round-off
    np.testing.assert_array_equal(labels, o.argmax(axis=1))
    np.testing.assert_allclose(a, o.max(axis=1), rtol=1e-13)
    err = cnn.testcnn(net, x, y, chunk=2)
    assert err == np.mean(o.argmax(axis=1) != y.argmax(axis=1))
    # ties in the target: the first maximum wins, as MATLAB's max
    y2 = np.zeros_like(y)
    y2[:, :] = 1.0
    assert cnn.testcnn(net, x, y2) == np.mean(o.argmax(axis=1) != 0)


# ----------------------------------------------------------------- bad input: clear errors


def _net():
    return build([("c", 2, 3, "tanh"), ("p", 2), ("f", 3, "sigm")], (8, 8))


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda n: cnn.add_conv_layer(n, 2, 3, "relu"), ValueError, "act='relu'.*sigm, tanh, rect"),
        (lambda n: cnn.add_fc_layer(n, 2, "sigmoid"), ValueError, "act='sigmoid'.*valid"),
        (lambda n: cnn.add_pool_layer(n, 2, "max"), ValueError, "method='max'.*valid: mean"),
        (lambda n: cnn.add_conv_layer(n, 2, 9, "tanh"), ValueError, "kernel_size 9x9 is larger"),
        (lambda n: cnn.add_conv_layer(n, 2, (3, 9), "tanh"), ValueError, "larger than its input"),
        (lambda n: cnn.add_conv_layer(n, 0, 3, "tanh"), ValueError, "n_maps"),
        (lambda n: cnn.add_conv_layer(n, 2.5, 3, "tanh"), TypeError, "n_maps"),
        (lambda n: cnn.add_pool_layer(n, 9), ValueError, "rate 9 is larger"),
        (lambda n: cnn.add_fc_layer(n, -1, "tanh"), ValueError, "n_nodes"),
        (lambda n: cnn.add_conv_layer("net", 2, 3, "tanh"), TypeError, "net must be a CNN"),
    ],
)
def test_constructor_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call(cnn.initcnn((8, 8), seed=0))


def test_no_conv_or_pool_after_fc():
    net = cnn.initcnn((8, 8), seed=0)
    cnn.add_fc_layer(net, 4, "tanh")
    with pytest.raises(ValueError, match="cannot follow a fully connected"):
        cnn.add_conv_layer(net, 2, 3, "tanh")
    with pytest.raises(ValueError, match="cannot follow a fully connected"):
        cnn.add_pool_layer(net, 2)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(image_size=(8,)), ValueError, "image_size"),
        (dict(image_size=5), TypeError, "image_size"),
        (dict(image_size=(8, 0)), ValueError, "width"),
        (dict(image_size=(8, 8), mode="exact"), ValueError, "mode='exact'.*faithful, corrected"),
        (dict(image_size=(8, 8), learning_rate=-1), ValueError, "learning_rate"),
        (dict(image_size=(8, 8), dtype=np.int32), ValueError, "dtype"),
    ],
)
def test_initcnn_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        cnn.initcnn(**kwargs)


def test_data_errors():
    net = _net()
    x, y = data(net, n=4)
    with pytest.raises(ValueError, match=r"x must have shape \(N, 8, 8\).*\(4, 8, 9\)"):
        cnn.ffcnn(net, np.zeros((4, 8, 9)))
    with pytest.raises(ValueError, match=r"x must have shape"):
        cnn.ffcnn(net, np.zeros((8, 8)))
    with pytest.raises(TypeError, match="x must be a real numeric array"):
        cnn.ffcnn(net, np.array([["a"]]))
    with pytest.raises(ValueError, match="x contains NaN or Inf"):
        cnn.ffcnn(net, np.where(x == x.max(), np.nan, x))
    with pytest.raises(ValueError, match="x holds no examples"):
        cnn.ffcnn(net, x[:0])
    with pytest.raises(ValueError, match=r"y must have shape \(N, 3\)"):
        cnn.traincnn(net, x, y[:, :2], 1, 2, verbose=False)
    with pytest.raises(ValueError, match="y has 3 examples but x has 4"):
        cnn.traincnn(net, x, y[:3], 1, 2, verbose=False)
    with pytest.raises(ValueError, match="y contains NaN or Inf"):
        cnn.traincnn(net, x, np.where(y == 1, np.inf, y), 1, 2, verbose=False)
    with pytest.raises(ValueError, match="batch_size=3 does not divide.*m=4"):
        cnn.traincnn(net, x, y, 1, 3, verbose=False)
    with pytest.raises(TypeError, match="no_of_epochs must be an integer"):
        cnn.traincnn(net, x, y, 1.5, 2, verbose=False)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        cnn.traincnn(net, x, y, 1, 0, verbose=False)
    with pytest.raises(ValueError, match="bpcnn needs a forward pass first"):
        cnn.bpcnn(_net(), y)
    with pytest.raises(ValueError, match=r"x must have shape \(N, 3, 8, 8\)"):
        cnn.ffcnn(build([("f", 2, "sigm")], (8, 8, 3)), x)


def test_cross_entropy_needs_a_sigmoid_or_softmax_output():
    net = build([("f", 4, "tanh"), ("f", 3, "tanh")], (3, 3), loss="cros")
    x, y = data(net, n=2)
    with pytest.raises(ValueError, match="loss_func='cros' needs a 'sigm' or 'soft' last layer"):
        cnn.traincnn(net, x, y, 1, 2, verbose=False)
    net.loss_func = "cross"
    with pytest.raises(ValueError, match="loss_func='cross' is not valid; valid: auto, quad, cros"):
        cnn.traincnn(net, x, y, 1, 2, verbose=False)


def test_nonfinite_training_stops_with_the_layer_named():
    net = build([("c", 2, 3, "plus"), ("p", 2), ("f", 3, "sigm")], (8, 8))
    net.layers[1].K[:] = 1e308  # the conv sums overflow to Inf
    x, y = data(net, n=4)
    with (
        np.errstate(all="ignore"),
        pytest.raises(cnn.NonFiniteError, match=r"epoch 1, minibatch 1: layer 2 \(c, act 'plus'\)"),
    ):
        cnn.traincnn(net, x, y, 3, 2, verbose=False)


def test_mat_file_errors(tmp_path):
    net = _net()
    save_cnn(tmp_path / "a.mat", net, var="cnn1")
    with pytest.raises(CNNFileError, match="has no variable 'cnn'.*cnn1.*var='cnn1'"):
        load_cnn(tmp_path / "a.mat")
    assert load_cnn(tmp_path / "a.mat", var="cnn1").n_outputs == 3
    with pytest.raises(FileNotFoundError):
        load_cnn(tmp_path / "missing.mat")
    (tmp_path / "junk.mat").write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(CNNFileError, match="is a text file, not a MAT-file"):
        load_cnn(tmp_path / "junk.mat")


def test_safe_numerics():
    """D9: softmax, cross-entropy and softplus stay finite where the original fails."""
    from cnn import activations as A

    z = np.array([[800.0, 0.0], [-800.0, 0.0]])
    np.testing.assert_allclose(A.forward(z, "soft"), [[1.0, 0.0], [0.0, 1.0]])
    assert np.isfinite(A.forward(np.array([[1000.0]]), "plus")).all()
    net = build([("f", 2, "sigm")], (1, 1), loss="cros")
    net.layers[1].W[:] = 1e4
    net.layers[1].b[:] = 0
    x = np.ones((2, 1, 1))
    y = np.array([[0.0, 1.0], [1.0, 0.0]])
    cnn.bpcnn(cnn.ffcnn(net, x), y)  # outputs are exactly 1.0: log(1 - o) = log(0) in MATLAB
    assert np.isfinite(net.loss) and net.loss == pytest.approx(1e4)

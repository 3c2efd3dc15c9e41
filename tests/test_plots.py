"""cnn.plots: every function writes a non-blank PNG; confusion counts are right."""

import matplotlib.image as mpimg
import numpy as np
import pytest

import cnn
from cnn import plots


def _check_png(path, ret):
    assert ret == path and path.is_file() and path.stat().st_size > 1000
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50
    assert img[..., :3].var() > 1e-4  # not blank
    assert not list(path.parent.glob(".*.tmp"))


@pytest.fixture(scope="module")
def small_net():
    net = cnn.initcnn((12, 12), seed=0)
    cnn.add_conv_layer(net, 3, 3, "rect")
    cnn.add_pool_layer(net, 2)
    cnn.add_conv_layer(net, 4, 3, "tanh")
    cnn.add_fc_layer(net, 5, "sigm")
    return net


def test_loss_curves_single_and_seeds(tmp_path):
    rng = np.random.default_rng(0)
    curves = {
        "one run": 2 * np.exp(-np.arange(300) / 80) + 0.1 * rng.random(300),
        "three seeds": [np.exp(-np.arange(n) / 60) + 0.1 * rng.random(n) for n in (300, 290, 300)],
        "2-D": rng.random((2, 300)),
    }
    p = tmp_path / "sub" / "loss.png"
    _check_png(p, plots.loss_curves(curves, p, title="t", smooth=20))
    p2 = tmp_path / "raw.png"
    _check_png(p2, plots.loss_curves({"a": [3, 2, 1.5, 1.2]}, p2, smooth=1, logy=True))
    with pytest.raises(ValueError):
        plots.loss_curves({}, tmp_path / "x.png")


def test_moving_average():
    np.testing.assert_allclose(plots.moving_average([1, 2, 3, 4], 2), [1, 1.5, 2.5, 3.5])
    np.testing.assert_allclose(plots.moving_average([1, 2, 3], 1), [1, 2, 3])


def test_first_layer_kernels(tmp_path, small_net):
    p = tmp_path / "k.png"
    _check_png(p, plots.first_layer_kernels(small_net, p))
    multi = cnn.initcnn((8, 8, 2), seed=1)
    cnn.add_conv_layer(multi, 3, 3, "tanh")
    cnn.add_fc_layer(multi, 2, "sigm")
    p2 = tmp_path / "k2.png"
    _check_png(p2, plots.first_layer_kernels(multi, p2))
    fc_only = cnn.initcnn((4, 4), seed=0)
    cnn.add_fc_layer(fc_only, 2, "sigm")
    with pytest.raises(ValueError, match="no conv layer"):
        plots.first_layer_kernels(fc_only, tmp_path / "none.png")


def test_feature_maps_leaves_the_network_alone(tmp_path, small_net):
    img = np.random.default_rng(0).random((12, 12))
    before = [a.copy() for _, _, a in small_net.parameters()]
    small_net.layers[-1].outputs = None
    p = tmp_path / "fm.png"
    _check_png(p, plots.feature_maps(small_net, img, p))
    _check_png(p, plots.feature_maps(small_net, img[None], p))
    assert small_net.layers[-1].outputs is None
    for a, (_, _, b) in zip(before, small_net.parameters()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError):
        plots.feature_maps(small_net, np.zeros(5), tmp_path / "bad.png")


def test_confusion_counts_by_hand():
    true = [0, 0, 1, 1, 1, 2, 2, 2, 2]
    pred = [0, 1, 1, 1, 2, 2, 0, 2, 2]
    expected = np.array([[1, 1, 0], [0, 2, 1], [1, 0, 3]])
    c = plots.confusion(true, pred, n_classes=3)
    np.testing.assert_array_equal(c, expected)
    assert c.dtype == np.int64 and c.sum() == 9
    # one-hot rows work too
    np.testing.assert_array_equal(plots.confusion(np.eye(3)[true], pred, 3), expected)
    assert plots.confusion([], [], 4).shape == (4, 4)
    with pytest.raises(ValueError, match="length"):
        plots.confusion([0, 1], [0], 3)
    with pytest.raises(ValueError, match="0..2"):
        plots.confusion([0, 3], [0, 1], 3)


def test_confusion_matrix(tmp_path):
    rng = np.random.default_rng(0)
    t = rng.integers(0, 10, 500)
    p = np.where(rng.random(500) < 0.8, t, rng.integers(0, 10, 500))
    out = tmp_path / "cm.png"
    _check_png(out, plots.confusion_matrix(t, p, out, title="test"))
    out2 = tmp_path / "cm2.png"
    _check_png(out2, plots.confusion_counts(plots.confusion(t, p), out2))


def test_error_by_setting_and_grad_norm_ratio(tmp_path):
    errs = {
        "flag off (derived)": [0.08, 0.09, 0.085],
        "flag on (forced)": [0.28, 0.3, 0.26],
        "one seed": [0.1],
        "diverged": [float("nan"), 0.5],
    }
    p = tmp_path / "err.png"
    _check_png(p, plots.error_by_setting(errs, p, reference={"flag off (derived)": 0.0832}))
    steps = np.arange(0, 100, 10)
    rng = np.random.default_rng(0)
    ratios = {
        "along flag off": [0.2 * rng.random(10) for _ in range(3)],
        "along flag on": 0.1 * rng.random(10),
    }
    p2 = tmp_path / "ratio.png"
    _check_png(p2, plots.grad_norm_ratio(ratios, p2, steps=steps, title="r"))


# --------------------------------------------------------------------------- figures that teach


def _check_image_panels(fig):
    """Every image panel has a title and a colour bar for its colour scale; signed scales are
    symmetric. Returns the number of image panels."""
    images = [im for ax in fig.axes for im in ax.images]
    with_bar = [im for im in images if im.colorbar is not None]
    assert with_bar
    for im in images:
        ax = im.axes
        assert ax.get_title() or ax.get_ylabel(), "an image panel without a label"
        bar = [b for b in with_bar if b.norm is im.norm]
        assert bar, f"image panel {ax.get_title()!r} has no colour bar for its scale"
        if im.get_cmap().name == "RdBu_r":
            assert im.norm.vmax > 0 and im.norm.vmin == -im.norm.vmax
    return len(images)


def test_feature_maps_figure_has_every_map_a_colour_bar_and_the_classes(small_net):
    import matplotlib.pyplot as plt

    img = np.random.default_rng(0).random((12, 12))
    fig = plots.feature_maps_figure(small_net, img, true_label=3)
    try:
        n = _check_image_panels(fig)
        # input 1 + conv 3 + pool 3 + conv 4 maps + the output strip
        assert n == 1 + 3 + 3 + 4 + 1
        for ax in fig.axes:
            if ax.images:
                assert ax.get_title()
        out = cnn.predictcnn(small_net, img[None])[1][0]
        assert fig._suptitle.get_text().endswith(
            f"true 3, predicted {out} (output {cnn.predictcnn(small_net, img[None])[0][0]:.3g})"
        )
    finally:
        plt.close(fig)


def test_kernel_figure_panels(small_net):
    import matplotlib.pyplot as plt

    fig = plots.first_layer_kernels_figure(small_net)
    try:
        assert _check_image_panels(fig) == 3
    finally:
        plt.close(fig)


def test_error_maps_figure_shows_all_maps_with_symmetric_bars():
    import matplotlib.pyplot as plt

    from cnn import step

    net = cnn.initcnn((16, 16), seed=0)
    cnn.add_conv_layer(net, 12, 3, "tanh")  # 12 maps: more than one row of 10
    cnn.add_pool_layer(net, 2)
    cnn.add_fc_layer(net, 4, "sigm")
    rng = np.random.default_rng(1)
    cnn.ffcnn(net, rng.random((3, 16, 16)))
    cnn.bpcnn(net, np.eye(4)[[0, 1, 2]])
    fig = step.error_maps_figure(net, example=1)
    try:
        assert _check_image_panels(fig) == 1 + 12 + 12  # fc strip, pool 12, conv 12
        titles = {ax.get_title() for ax in fig.axes if ax.images}
        assert {f"er{{{j}}}" for j in range(1, 13)} <= titles
        assert all(im.get_cmap().name == "RdBu_r" for ax in fig.axes for im in ax.images)
    finally:
        plt.close(fig)


@pytest.mark.parametrize("window", [1, 2, 5, 7, 30])
def test_moving_average_equals_a_direct_computation(window):
    a = np.random.default_rng(window).random(23)
    trailing = [a[max(0, i - window + 1) : i + 1].mean() for i in range(a.size)]
    np.testing.assert_allclose(plots.moving_average(a, window), trailing, rtol=1e-12)
    valid = [a[i : i + window].mean() for i in range(a.size - window + 1)]
    np.testing.assert_allclose(plots.moving_average(a, window, valid=True), valid, rtol=1e-12)


def test_loss_curve_legend_is_truthful(tmp_path, monkeypatch):
    """The raw line and the moving average are named as what they are; the smoothed line
    starts at the centre of the first full window (no start-up values)."""
    seen = {}
    monkeypatch.setattr(plots, "save", lambda fig, path, dpi=110: seen.setdefault("fig", fig))
    y = np.linspace(3, 1, 200)
    plots.loss_curves({"minibatch loss": y}, tmp_path / "l.png", smooth=50)
    ax = seen["fig"].axes[0]
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == ["minibatch loss: each minibatch", "minibatch loss: moving average of 50"]
    raw, smooth = ax.get_lines()
    np.testing.assert_allclose(smooth.get_xdata()[0], 25.5)
    np.testing.assert_allclose(smooth.get_ydata(), plots.moving_average(y, 50, valid=True))
    assert smooth.get_ydata()[0] <= raw.get_ydata()[0]  # no start-up value above the data

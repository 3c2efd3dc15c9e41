# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · Build your own CNN
#
# The original ships a short guide, `HowToBuildYourOwnCNN`: start a network for your image size,
# add layers, train, test, save. This notebook does all of it for data other than MNIST: the
# synthetic seven-segment digits of `cnn.synthetic` at $16\times16$ pixels (generated in code, no
# download). Then it looks inside: the learned kernels, the feature maps of one digit, the
# confusion matrix, and it saves the network for MATLAB/Octave.
#
# The same calls as the MATLAB guide, in the same order:
#
# | MATLAB | Python |
# | --- | --- |
# | `cnn = initcnn([H W], lr)` | `net = cnn.initcnn((H, W), lr)` |
# | `cnn = cnnAddConvLayer(cnn, M, [kh kw], act)` | `cnn.add_conv_layer(net, M, (kh, kw), act)` |
# | `cnn = cnnAddPoolLayer(cnn, r, 'mean')` | `cnn.add_pool_layer(net, r, "mean")` |
# | `cnn = cnnAddFCLayer(cnn, n, act)` | `cnn.add_fc_layer(net, n, act)` |
# | `cnn = traincnn(cnn, x, y, epochs, batch)` | `cnn.traincnn(net, x, y, epochs, batch)` |
# | `err = testcnn(cnn, x, y)` | `err = cnn.testcnn(net, x, y)` |
# | `savecnn(cnn, file)` | `cnn.matlab.save_cnn(file, net, "cnn1")` |
#
# Shapes: images `(N, H, W)` (or `(N, C, H, W)`), targets one-hot `(N, classes)`; MATLAB's
# `H x W x N` and `classes x N` are the same data transposed.

# %%
import io
import sys
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Image, display

ROOT = Path.cwd().resolve()
while not (ROOT / "cnn").is_dir() and ROOT != ROOT.parent:  # the checkout's package
    ROOT = ROOT.parent
sys.path.insert(0, str(ROOT))

import cnn  # noqa: E402
from cnn import plots  # noqa: E402
from cnn.matlab import load_cnn, save_cnn  # noqa: E402
from cnn.synthetic import SYNTHETIC_TEST_SEED, SYNTHETIC_TRAIN_SEED, synthetic_digits  # noqa: E402


def show(fig):
    """Show a matplotlib figure as a PNG (works with any backend) and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    display(Image(buf.getvalue()))


# %% [markdown]
# ## 1. The data
#
# 3,000 training and 500 test images of $16\times16$ pixels in $[0, 1]$, ten balanced classes
# (the digits 0-9), one-hot targets. The test images are drawn with another seed.

# %%
x_train, y_train = synthetic_digits(3000, seed=SYNTHETIC_TRAIN_SEED, size=(16, 16))
x_test, y_test = synthetic_digits(500, seed=SYNTHETIC_TEST_SEED, size=(16, 16))
print("train:", x_train.shape, y_train.shape, " test:", x_test.shape, y_test.shape)
fig, axes = plt.subplots(2, 10, figsize=(10, 2.3))
for ax, img, label in zip(axes.ravel(), x_train, y_train.argmax(axis=1), strict=False):
    ax.imshow(img, cmap="gray", vmin=0, vmax=1)
    ax.set_title(f"label {label}", fontsize=8)
    ax.axis("off")
show(fig)

# %% [markdown]
# ## 2. The network
#
# Each conv layer maps $H\times W$ to $(H - k_h + 1)\times(W - k_w + 1)$, each pool layer of rate
# $r$ to $\lfloor H/r\rfloor\times\lfloor W/r\rfloor$; the FC layers flatten the maps below them.
# Here: $16 \to 12$ (conv $5\times5$) $\to 6$ (pool 2) $\to 4$ (conv $3\times3$) $\to 2$ (pool 2)
# $\to$ FC 10 with a sigmoid output (loss `auto` = cross-entropy, flag 0 as derived).
# `mode="corrected"` uses the true gradients (the default `"faithful"` keeps the original's
# defects, D1 among them, see [02](02_stepping_through_bpcnn.ipynb)).

# %%
net = cnn.initcnn((16, 16), learning_rate=0.2, mode="corrected", seed=0)
cnn.add_conv_layer(net, 6, 5, "tanh")
cnn.add_pool_layer(net, 2, "mean")
cnn.add_conv_layer(net, 12, 3, "tanh")
cnn.add_pool_layer(net, 2, "mean")
cnn.add_fc_layer(net, 10, "sigm")
for l, layer in enumerate(net.layers, start=1):
    shape = layer.map_shape if layer.type in "icp" else (layer.n_nodes,)
    act = layer.act_func if layer.type in "cf" else ""
    print(f"layer {l}: {layer.type} {act:4s} -> {shape}")
print("parameters:", sum(a.size for _, _, a in net.parameters()))

# %% [markdown]
# ## 3. Train and test
#
# Six epochs of minibatches of 50, in order (as the original; shuffle the data yourself if you
# want). `net.loss_array` holds the loss of every minibatch before its update.

# %%
cnn.traincnn(net, x_train, y_train, 6, 50, verbose=False)
err = cnn.testcnn(net, x_test, y_test)
print(
    f"loss {net.loss_func}, flag {int(net.calc_last_layer_act_derivative)}; "
    f"test error {err:.4f} ({round(err * len(x_test))} of {len(x_test)}; chance 0.9)"
)
assert err < 0.25

loss = np.asarray(net.loss_array)
steps = np.arange(1, loss.size + 1)
fig, ax = plt.subplots(figsize=(7, 3))
ax.plot(steps, loss, color="C0", alpha=0.3, lw=0.7, label="each minibatch")
ax.plot(
    plots.moving_average(steps, 30, valid=True),
    plots.moving_average(loss, 30, valid=True),
    color="C0",
    label="moving average of 30",
)
for epoch in range(1, 6):
    ax.axvline(epoch * len(x_train) // 50 + 0.5, color="k", lw=0.5, ls=":")
ax.set_xlabel("minibatch (dotted: epochs)")
ax.set_ylabel("cross-entropy")
ax.legend()
show(fig)

# %% [markdown]
# ## 4. What the network learned
#
# The first conv layer's kernels (one symmetric colour scale, red positive), and one test digit
# through the whole network: every map of every layer with its colour bar, and the ten outputs.

# %%
show(plots.first_layer_kernels_figure(net))
show(plots.feature_maps_figure(net, x_test[0], true_label=int(y_test[0].argmax())))

# %% [markdown]
# ## 5. The confusion matrix
#
# Rows: the true class; columns: the predicted class (`predictcnn`'s labels are 0-based, MATLAB's
# 1-based). The colour is the fraction of each true class.

# %%
scores, pred = cnn.predictcnn(net, x_test)
true = y_test.argmax(axis=1)
counts = plots.confusion(true, pred, 10)
assert counts.trace() == len(true) - round(err * len(true))
print(counts)
with tempfile.TemporaryDirectory() as tmp:  # confusion_counts writes a PNG
    path = plots.confusion_counts(counts, Path(tmp) / "confusion.png", title="synthetic 16x16")
    display(Image(path.read_bytes()))

# %% [markdown]
# ## 6. Save for MATLAB and load back
#
# `save_cnn` writes a MAT-file (v5) with the original's struct: field names, `K{l}` and `W{l}`
# layouts, everything `ffcnn`/`testcnn` of the MATLAB code need. `load_cnn` reads it back (also the
# files MATLAB's `savecnn` writes). The loaded network predicts the same labels.

# %%
with tempfile.TemporaryDirectory() as tmp:
    path = Path(tmp) / "my_cnn.mat"
    save_cnn(path, net, "cnn1", runtime=False)  # MATLAB: load('my_cnn.mat'); cnn1
    print(f"{path.name}: {path.stat().st_size} bytes")
    again = load_cnn(path, "cnn1", mode="corrected")
_, pred_again = cnn.predictcnn(again, x_test)
assert np.array_equal(pred_again, pred)
print("the loaded network predicts the same", len(pred), "labels")

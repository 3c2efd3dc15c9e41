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
# # 01 · The flag `CalcLastLayerActDerivative`
#
# With a sigmoid output and the cross-entropy loss, the original's `bpcnn` starts the output error
# at $o - y$ and, only when the flag is on, multiplies it by the sigmoid's derivative. This notebook
# derives why the flag must be **off** there, works one output by hand against the code, shows with
# the gradient check which loss each setting of the flag differentiates, trains a small network
# both ways, and loads the full-MNIST measurements (five seeds, not retrained here).
#
# Notation as in [docs/backprop.md](../docs/backprop.md): $z^l$ pre-activations, $a^l = f(z^l)$
# activations, $o = a^L$ the outputs, $y$ the targets, $J$ the minibatch loss and
# $\delta^l = \partial (N J) / \partial z^l$ the error of layer $l$ (not divided by $N$).
# [docs/flag.md](../docs/flag.md) tells the same story in prose.

# %%
import io
import json
import sys
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
from cnn.synthetic import synthetic_split  # noqa: E402


def show(fig):
    """Show a matplotlib figure as a PNG (works with any backend) and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    display(Image(buf.getvalue()))


np.set_printoptions(precision=4, suppress=True)

# %% [markdown]
# ## 1. The derivation
#
# One output $o = \sigma(z) = 1/(1 + e^{-z})$ and its target $y \in \{0, 1\}$ (the losses sum over
# outputs and average over the minibatch). The sigmoid's derivative, written from its output as
# the original does, is
#
# $$\frac{\partial o}{\partial z} = o\,(1 - o) \le \tfrac14 .$$
#
# **Cross-entropy** $J = -\bigl(y \log o + (1 - y)\log(1 - o)\bigr)$:
#
# $$\frac{\partial J}{\partial o} = \frac{o - y}{o(1-o)}, \qquad
# \delta = \frac{\partial J}{\partial z} = \frac{o - y}{o(1-o)}\cdot o(1-o) = o - y .$$
#
# The derivative of the sigmoid cancels: the output error is $o - y$, **flag off**.
#
# **Quadratic loss** $J = \tfrac12 (o - y)^2$:
#
# $$\frac{\partial J}{\partial o} = o - y, \qquad \delta = (o - y)\, o\,(1 - o) .$$
#
# `bpcnn` computes $e = o - y$ (`bpcnn.m:13`) and, when the flag is on, $e \leftarrow f'(o) \odot e$
# (`bpcnn.m:35-36`). For a sigmoid output:
#
# | flag | $\delta^L$ | the gradient of |
# | --- | --- | --- |
# | 0 (what `traincnn` derives for `sigm` + `cros`) | $o - y$ | the cross-entropy |
# | 1 (forced) | $(o - y)\odot o(1-o)$ | the **quadratic** loss, whatever `loss_func` reports |
#
# The factor $o(1-o)$ is at most $1/4$ and vanishes when an output saturates, also when it is
# confidently wrong: the flag-on gradient is smallest exactly where the error is largest.

# %% [markdown]
# ## 2. One sigmoid output, by hand and by the code
#
# A network with a single FC layer of three sigmoid outputs on $4\times4$ images, one example.
# By hand: $z = W x + b$ (the image flattened column-major, as MATLAB does), $o = \sigma(z)$,
# then the output error with the flag off and on. By the code: `ffcnn`, then `bpcnn`, which
# stores $\delta^L$ in `net.layers[-1].er`.

# %%
net = cnn.initcnn((4, 4), learning_rate=0.1, seed=1)
cnn.add_fc_layer(net, 3, "sigm")
# weights set by hand (larger than the initial ones) so that the outputs are not all near 1/2
net.layers[-1].W = np.random.default_rng(3).normal(0.0, 0.7, (3, 16))
x = np.random.default_rng(2).random((1, 4, 4))
y = np.array([[0.0, 1.0, 0.0]])  # the true class is output 2 (1-based)

W, b = net.layers[-1].W, net.layers[-1].b
x_flat = x[0].T.ravel()  # column-major, as x(:) in MATLAB
z = W @ x_flat + b
o = 1 / (1 + np.exp(-z))
e_off = o - y[0]
e_on = e_off * o * (1 - o)
i = 1  # output 2, the true class
print(f"z = {z[i]:.6f}, o = sigma(z) = {o[i]:.6f}, y = {y[0, i]:.0f}")
print(f"flag off: delta = o - y           = {e_off[i]: .6f}")
print(
    f"flag on:  delta = (o - y) o (1-o) = {e_off[i]: .6f} x {o[i] * (1 - o[i]):.6f} "
    f"= {e_on[i]: .6f}"
)

for flag, by_hand in ((False, e_off), (True, e_on)):
    work = net.copy()
    work.loss_func = "cros"
    cnn.backward.prepare_loss_and_flag(work, flag)
    cnn.ffcnn(work, x)
    cnn.bpcnn(work, y)
    print(f"flag {int(flag)}: code er = {work.layers[-1].er[0]}, by hand = {by_hand}")
    assert np.allclose(work.layers[-1].er[0], by_hand, rtol=1e-13, atol=0)
    # dW = delta x^T / N (bpcnn.m:43), one example here
    assert np.allclose(work.layers[-1].dW, np.outer(by_hand, x_flat), rtol=1e-13, atol=0)

# %% [markdown]
# ## 3. The gradient check: which loss does each flag differentiate?
#
# The original's `gradient_checker` compares every gradient of `bpcnn` with the central difference
# $\bigl(J(p+\varepsilon) - J(p-\varepsilon)\bigr)/2\varepsilon$ of the reported loss,
# $\varepsilon = 10^{-4}$, absolute tolerance $10^{-7}$. A small c(tanh)-p2-f(tanh)-f(sigm)
# network, four random images, faithful mode.


# %%
def small_net(loss):
    n = cnn.initcnn((8, 8), seed=0)
    cnn.add_conv_layer(n, 2, 3, "tanh")
    cnn.add_pool_layer(n, 2)
    cnn.add_fc_layer(n, 6, "tanh")
    cnn.add_fc_layer(n, 3, "sigm")
    n.loss_func = loss
    return n


rng = np.random.default_rng(0)
xs, ys = rng.random((4, 8, 8)), np.eye(3)[rng.integers(0, 3, 4)]
rows = []
for loss, flag in (("cros", None), ("cros", True), ("quad", None)):
    n = small_net(loss)
    cnn.backward.prepare_loss_and_flag(n, flag)
    report = cnn.gradient_checker(n, xs, ys)
    worst = max(c.norm_rel for c in report.checks)
    rows.append((loss, n.calc_last_layer_act_derivative, report.passed, worst))
    print(
        f"loss {loss}, flag {int(n.calc_last_layer_act_derivative)}: "
        f"{'PASS' if report.passed else 'FAIL'} (largest norm-relative difference {worst:.2e})"
    )

assert rows[0][2], "flag off must pass against the cross-entropy"
assert not rows[1][2], "flag on must fail against the cross-entropy"
assert rows[2][2], "flag on must pass against the quadratic loss"

# %% [markdown]
# Flag on with the cross-entropy fails, flag on with the quadratic loss passes. More than that:
# the flag-on gradients **are** the quadratic-loss gradients, number for number. `loss_func` only
# decides which number `net.loss` reports.

# %%
grads = {}
for loss, flag in (("cros", True), ("quad", None)):
    n = small_net(loss)
    cnn.backward.prepare_loss_and_flag(n, flag)
    cnn.ffcnn(n, xs)
    cnn.bpcnn(n, ys)
    grads[loss] = [
        np.copy(getattr(layer, g))
        for layer in n.layers
        for g in ("dK", "dW", "db")
        if getattr(layer, g, None) is not None
    ]
    print(
        f"loss_func {loss!r}, flag {int(n.calc_last_layer_act_derivative)}: "
        f"reported loss {n.loss:.6f}"
    )
diff = max(float(np.abs(a - b).max()) for a, b in zip(grads["cros"], grads["quad"], strict=True))
print(f"largest difference between the two sets of gradients: {diff}")
assert diff == 0.0

# %% [markdown]
# ## 4. A small training, flag off and on
#
# The Example 3 network of `Example_MNIST_CNN.m` on 2,000 synthetic digits (generated in code,
# no download), three epochs of minibatches of 50, learning rate 0.1, the same initial weights for
# both runs. Chance level is an error of 0.9.

# %%
tx, ty = synthetic_split("train", 2000)
vx, vy = synthetic_split("test", 400)
start = cnn.example_network(3, seed=0, learning_rate=0.1)
results = {}
for label, flag in (("flag off (derived)", None), ("flag on (forced)", True)):
    n = start.copy()
    cnn.traincnn(n, tx, ty, 3, 50, calc_last_layer_act_derivative=flag, verbose=False)
    results[label] = (n.loss_array, cnn.testcnn(n, vx, vy))
    print(f"{label}: test error {results[label][1]:.4f}")
assert results["flag off (derived)"][1] < 0.3  # clearly better than chance (0.9)

fig, ax = plt.subplots(figsize=(7, 3.5))
for (label, (loss, err)), color in zip(results.items(), ("C0", "C3"), strict=True):
    steps = np.arange(1, len(loss) + 1)
    ax.plot(steps, loss, color=color, alpha=0.25, lw=0.7)
    ax.plot(
        plots.moving_average(steps, 20, valid=True),
        plots.moving_average(loss, 20, valid=True),
        color=color,
        label=f"{label}: moving average of 20 (test error {err:.3f})",
    )
ax.set_xlabel("minibatch")
ax.set_ylabel("cross-entropy (reported)")
ax.set_title("the faint lines: each minibatch")
ax.legend(fontsize=8)
show(fig)

# %% [markdown]
# ## 5. Full MNIST: the measured results
#
# `python -m cnn compare` trains Example 3 on the 60,000 MNIST images for one epoch (lr 0.01,
# batch 50 in order, seeds 0-4; each seed's settings start from the same weights) and tests on the
# 10,000 test images. Its results are committed in compact form in
# [docs/results/flag_mnist.json](../docs/results/flag_mnist.json) (made by
# `scripts/flag_results_json.py`); this notebook loads them instead of training for minutes.

# %%
res = json.loads((ROOT / "docs" / "results" / "flag_mnist.json").read_text())
print(res["meta"]["command"], "|", res["meta"]["date"], "|", res["meta"]["machine"])
print(f"{'setting':24s} {'test error % (mean ± std over seeds)':>38s}   each seed")
summary = {}
for key, run in res["runs"].items():
    err = 100 * np.asarray(run["test_error"])
    summary[key] = err.mean()
    print(
        f"{res['settings'][key]['label']:24s} {err.mean():30.2f} ± {err.std(ddof=1):.2f}   "
        + " ".join(f"{v:.2f}" for v in err)
    )
assert summary["off"] < summary["on"]
assert np.allclose(res["runs"]["on"]["test_error"], res["runs"]["quad"]["test_error"])

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4))
block = res["block"]
for c, (key, run) in enumerate(res["runs"].items()):
    label = res["settings"][key]["label"]
    curves = np.asarray(run["loss_cros"])
    steps = block * (np.arange(curves.shape[1]) + 0.5)
    ax1.plot(steps, curves.mean(axis=0), color=f"C{c}", label=label)
    ax1.fill_between(steps, curves.min(axis=0), curves.max(axis=0), color=f"C{c}", alpha=0.15)
    err = 100 * np.asarray(run["test_error"])
    ax2.scatter(np.full(err.size, c), err, color=f"C{c}", s=18)
    ax2.errorbar(c + 0.2, err.mean(), err.std(ddof=1), fmt="ok", capsize=3)
ax1.set_xlabel("minibatch")
ax1.set_ylabel(f"cross-entropy, mean of blocks of {block} minibatches")
ax1.set_title("mean over 5 seeds, band: min-max")
ax1.legend(fontsize=8)
ax2.set_xticks(
    range(len(res["runs"])),
    [res["settings"][k]["label"] for k in res["runs"]],
    rotation=20,
    ha="right",
)
ax2.set_ylabel("test error (%)")
ax2.set_title("each seed, and mean ± std")
ax2.set_ylim(bottom=0)
show(fig)

# %% [markdown]
# Flag on and `loss_func='quad'` give the same numbers (the same computation); multiplying the
# learning rate by 4 recovers most of the gap, so most of the harm is the smaller steps
# ($o(1-o) \le 1/4$). [docs/flag.md](../docs/flag.md) has the whole study.

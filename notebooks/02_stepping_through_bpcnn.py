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
# # 02 · Stepping through `bpcnn`
#
# One minibatch of the Example 3 network of `Example_MNIST_CNN.m` goes forward, then back through
# every step of `bpcnn`, one cell per step: the output error, the flag line, the two FC layers,
# the pool and conv layers, and the rotated kernel of defect D1. Each cell
#
# * states the formula (notation of [docs/backprop.md](../docs/backprop.md): $a^l$ activations,
#   $z^l$ pre-activations, $\delta^l = \partial(NJ)/\partial z^l$ the error of layer $l$, $\star$
#   the valid cross-correlation, $*$ the full convolution, MATLAB layer numbers $l = 1..7$),
# * names the lines of the original `bpcnn.m` it ports and finds the port's line in
#   [cnn/backward.py](../cnn/backward.py),
# * recomputes the step with the readable kernels of [cnn/reference.py](../cnn/reference.py) and
#   checks it against what `bpcnn` (Numba kernels) stored, and shows the shapes and the maps.
#
# At the end the same pass runs entirely on the readable kernels (`cnn.use_kernels("reference")`)
# and the gradients are checked against the numerical gradient.

# %%
import inspect
import io
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
from cnn import backward, plots  # noqa: E402
from cnn import reference as ref  # noqa: E402
from cnn.forward import flatten_maps, unflatten_maps  # noqa: E402
from cnn.synthetic import synthetic_split  # noqa: E402


def show(fig):
    """Show a matplotlib figure as a PNG (works with any backend) and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    display(Image(buf.getvalue()))


def port(needle, func=backward.bpcnn):
    """Print the line of the port (cnn/backward.py) that holds ``needle``."""
    lines, start = inspect.getsourcelines(func)
    for i, text in enumerate(lines):
        if needle in text:
            print(f"port: backward.py:{start + i}  {text.strip()}")
            return
    print(f"port: ({needle!r} not found in {func.__name__})")


def same(name, ours, theirs, tol=1e-12):
    """Check a step against bpcnn's stored array and print its shape."""
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    assert ours.shape == theirs.shape, (name, ours.shape, theirs.shape)
    rel = float(np.abs(ours - theirs).max() / max(np.abs(theirs).max(), 1e-300))
    print(f"{name:10s} shape {str(theirs.shape):18s} max relative difference to bpcnn {rel:.1e}")
    assert rel <= tol, name


def maps(title, arrays, signed=True):
    """The maps of example 1 of one or more layers, one colour bar per layer."""
    blocks = [{"label": label, "maps": a, "signed": signed, "cbar": "value"} for label, a in arrays]
    show(plots.map_grid(blocks, ncols=10, cell=0.8, title=title))


# %% [markdown]
# ## The network and the forward pass
#
# Example 3: conv 10 maps $9\times9$ (`rect`) - mean pool 2 - conv 20 maps $3\times3$ (`tanh`) -
# mean pool 2 - FC 150 (`tanh`) - FC 10 (`sigm`), faithful mode, loss `auto` (the cross-entropy
# for a sigmoid output), seed 0. The minibatch: $N = 10$ synthetic digits.

# %%
net = cnn.example_network(3, seed=0)
x, y = synthetic_split("train", 10)
N = x.shape[0]
loss_func, flag = backward.prepare_loss_and_flag(net)  # what traincnn does first
cnn.ffcnn(net, x)
cnn.bpcnn(net, y)  # the arrays each step is checked against
L = net.layers  # L[l - 1] is MATLAB layer l
for l, layer in enumerate(L, start=1):
    a = layer.featuremaps if layer.type in "icp" else layer.outputs
    act = layer.act_func if layer.type in "cf" else ""
    print(f"layer {l} {layer.type} {act:4s} a^{l}: {a.shape}")
print(f"loss {loss_func} = {net.loss:.6f}, flag {int(flag)} (derived)")
show(plots.feature_maps_figure(net, x[0], true_label=int(y[0].argmax())))

# %% [markdown]
# ## Step 1 · the output error $e = o - y$
#
# `bpcnn.m:13`. $o = a^7$, the sigmoid outputs, shape $(N, 10)$. Whatever the loss, the code
# starts from this difference.

# %%
port("# er = outputs - yy")
o = L[6].outputs
e = o - y
print("o[0] =", np.round(o[0], 3))
print("y[0] =", y[0])
print("e[0] =", np.round(e[0], 3))

# %% [markdown]
# ## Step 2 · the flag line
#
# `bpcnn.m:35-36`: if `CalcLastLayerActDerivative` is 1, $e \leftarrow f'(o)\odot e$, for a sigmoid
# $o(1-o)\odot e$. `traincnn` derives 0 for sigmoid + cross-entropy, the correct gradient of the
# cross-entropy (see [01 the flag](01_the_flag.ipynb)), so here $\delta^7 = e$.

# %%
port("if net.calc_last_layer_act_derivative:")
d7 = ref.act_backward(o, "sigm", e) if flag else e
same("delta^7", d7, L[6].er)

# %% [markdown]
# ## Step 3 · the last FC layer
#
# `bpcnn.m:41-44`:
# $\;dW^7 = \frac1N \sum_n \delta^7_n (a^6_n)^{\mathsf T}$, $\;db^7 = \frac1N \sum_n \delta^7_n$.

# %%
port("last.dW = np.matmul(e.T")
dW7 = d7.T @ L[5].outputs / N
db7 = d7.mean(axis=0)
same("dW^7", dW7, L[6].dW)
same("db^7", db7, L[6].db)

# %% [markdown]
# ## Step 4 · the hidden FC layer
#
# `bpcnn.m:104-108`: $\;\delta^6 = f'(a^6)\odot (W^7)^{\mathsf T}\delta^7$ with
# $f'(a) = 1 - a^2$ for `tanh` (the derivative written from the output, as the original does),
# $\;dW^6 = \frac1N\sum_n \delta^6_n (a^5_n)^{\mathsf T}$ where $a^5_n$ are the pool layer's maps
# flattened column-major (MATLAB's `reshape`), $\;db^6 = \frac1N\sum_n\delta^6_n$.

# %%
port("g = layers[l + 1].er @ layers[l + 1].W")
d6 = ref.act_backward(L[5].outputs, "tanh", d7 @ L[6].W)
a5_flat = flatten_maps(L[4].featuremaps)
same("delta^6", d6, L[5].er)
same("dW^6", d6.T @ a5_flat / N, L[5].dW)
same("db^6", d6.mean(axis=0), L[5].db)

# %% [markdown]
# ## Step 5 · the pool layer under the FC layer
#
# `bpcnn.m:112-120` cut $(W^6)^{\mathsf T}\delta^6$ back into 20 maps of $4\times4$ (the inverse of
# the column-major flattening); `bpcnn.m:138-148` spread each value over its $2\times2$ window,
# divided by $r^2 = 4$ (`./(zz*zz)` at `bpcnn.m:147`):
#
# $$\delta^5(u, v) = g^5(\lfloor u/2\rfloor, \lfloor v/2\rfloor)/4 .$$
#
# A pool layer's error is stored at the size of the layer below ($8\times8$), as the original does.

# %%
port("return unflatten_maps(g, maps[1:]", backward._error_at_outputs)
g5 = unflatten_maps(d6 @ L[5].W, (20, 4, 4))
d5 = ref.upsample(g5, 2, (8, 8))
same("delta^5", d5, L[4].er)
maps(
    "example 1: g^5 (at the pool outputs) and delta^5 (upsampled)",
    [("g^5, 4x4", g5[0]), ("delta^5, 8x8", d5[0])],
)

# %% [markdown]
# ## Step 6 · the upper conv layer
#
# `bpcnn.m:181-185`: $\;\delta^4_j = f'(a^4_j)\odot\delta^5_j$ (the pool layer's error is already
# the gradient at this layer's outputs, `bpcnn.m:169-171`). `bpcnn.m:189-205`: the kernel gradient
# is the valid cross-correlation of each input map with each error map,
#
# $$dK^4_{j,k} = \frac1N\sum_n a^3_{n,k}\star\delta^4_{n,j},\qquad
# db^4_j = \frac1N\sum_{n,p,q}\delta^4_{n,j}(p,q) .$$

# %%
port("layer.dK = ops().kernel_grad(")
d4 = ref.act_backward(L[3].featuremaps, "tanh", d5)
dK4 = ref.kernel_grad(L[2].featuremaps, d4, (3, 3)) / N
same("delta^4", d4, L[3].er)
same("dK^4", dK4, L[3].dK)
same("db^4", ref.map_sums(d4) / N, L[3].db)
print("K^4:", L[3].K.shape, "(maps j, input maps k, kh, kw)")

# %% [markdown]
# ## Step 7 · through the upper conv layer: the D1 flip
#
# The error at the outputs of layer 3 is the gradient of the valid cross-correlation with respect
# to its input, the **full convolution with $K$**:
#
# $$g^3_k = \sum_j \delta^4_j * K^4_{j,k} .$$
#
# The original (`bpcnn.m:130`, `convn(er{j}, rot90(K, 2), 'full')`) convolves with the kernel
# rotated by 180 degrees, $\sum_j \delta^4_j * \operatorname{rot180}(K^4_{j,k})$, a full
# *correlation*: defect D1. Faithful mode keeps it (`flip=True`), corrected mode does not. Then
# the pool layer spreads it as in step 5.

# %%
port("ops().conv_full(above.er, above.K", backward._error_at_outputs)
g3_faithful = ref.conv_full(d4, L[3].K, flip=True)  # what the original computes
g3_correct = ref.conv_full(d4, L[3].K, flip=False)  # the true gradient
d3 = ref.upsample(g3_faithful, 2, (20, 20))
same("delta^3", d3, L[2].er)
rel = np.linalg.norm(g3_faithful - g3_correct) / np.linalg.norm(g3_correct)
print(f"||g3 (rot180) - g3 (correct)|| / ||g3 (correct)|| = {rel:.2f}")
maps(
    "example 1: the error at the outputs of layer 3, faithful (D1) and correct",
    [("rot180(K)\n(faithful)", g3_faithful[0]), ("K\n(corrected)", g3_correct[0])],
)

# %% [markdown]
# ## Step 8 · the lower conv layer
#
# As in step 6, with the leaky ReLU: $f'(a) = 1$ for $a > 0$, else $0.01$:
# $\;\delta^2_j = f'(a^2_j)\odot\delta^3_j$, $\;dK^2_{j,1} = \frac1N\sum_n x_n\star\delta^2_{n,j}$.
# Because $\delta^3$ came through the rotated kernel, **this** layer's gradient is wrong in
# faithful mode (checked numerically below). Layer 1, the input, gets nothing (the MATLAB loop
# has no branch for it).

# %%
d2 = ref.act_backward(L[1].featuremaps, "rect", d3)
dK2 = ref.kernel_grad(L[0].featuremaps, d2, (9, 9)) / N
same("delta^2", d2, L[1].er)
same("dK^2", dK2, L[1].dK)
same("db^2", ref.map_sums(d2) / N, L[1].db)
maps("example 1: delta^2 and the kernel gradient dK^2", [("delta^2", d2[0]), ("dK^2", dK2[:, 0])])

# %% [markdown]
# ## The whole pass on the readable kernels
#
# `cnn.use_kernels("reference")` makes `ffcnn` and `bpcnn` call `cnn/reference.py` (plain
# NumPy/SciPy, easy to step into with a debugger) instead of the compiled Numba kernels. The
# numbers agree to round-off.

# %%
slow = cnn.example_network(3, seed=0)
backward.prepare_loss_and_flag(slow)
with cnn.use_kernels("reference"):
    cnn.ffcnn(slow, x)
    cnn.bpcnn(slow, y)
worst = 0.0
for fast_layer, slow_layer in zip(L, slow.layers, strict=True):
    for name in ("featuremaps", "outputs", "er", "dK", "dW", "db"):
        a, b = getattr(fast_layer, name, None), getattr(slow_layer, name, None)
        if a is not None:
            worst = max(worst, float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-300)))
print(f"largest relative difference, reference vs Numba kernels: {worst:.1e}")
assert worst < 1e-12

# %% [markdown]
# ## The numerical gradient
#
# The original's `gradient_checker`: central differences of the loss,
# $\bigl(J(p+\varepsilon) - J(p-\varepsilon)\bigr)/2\varepsilon$, pass if every
# $|\text{analytic} - \text{numeric}| \le 10^{-7}$; 15 random entries per array here. The
# original's $\varepsilon = 10^{-4}$ is too large for this network: the leaky ReLU of layer 2 has a
# kink at $z = 0$, and with 4,000 pre-activations per image some lie close enough to it that
# $z \pm \varepsilon\,\partial z/\partial p$ falls on both sides, where a central difference is not
# the derivative (layer 2's $db$ then differs by about $10^{-3}$ even in corrected mode). With
# $\varepsilon = 10^{-6}$ faithful mode fails in layer 2 only (D1: its error came through the
# rotated kernel) and corrected mode passes everywhere.

# %%
for mode in ("faithful", "corrected"):
    n = cnn.example_network(3, seed=0, mode=mode)
    report = cnn.gradient_checker(n, x, y, max_per_array=15, epsilon=1e-6)
    print(f"{mode}: {'PASS' if report.passed else 'FAIL'}")
    print(report.to_markdown())
    if mode == "faithful":
        assert not report.layer_passed(2)
        assert all(report.layer_passed(l) for l in (4, 6, 7))
    else:
        assert report.passed

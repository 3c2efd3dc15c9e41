"""The network object and its constructors.

MATLAB: ``initcnn.m``, ``cnnAddConvLayer.m``, ``cnnAddPoolLayer.m``,
``cnnAddFCLayer.m``.

``net.layers[0]`` is the input layer: MATLAB's ``cnn.layers{l}`` is
``net.layers[l - 1]`` here.

Arrays are batch-first inside (see ``kernels.py``):

* conv ``K (M, P, kh, kw)``, ``b (M,)``; FC ``W (n, n_in)`` exactly as MATLAB, ``b (n,)``;
* after :func:`~cnn.forward.ffcnn`: ``featuremaps (N, M, H, W)`` for input, conv and
  pool layers, ``outputs (N, n)`` for FC layers (and, like the original, the
  flattened maps of a map layer that feeds an FC layer);
* after :func:`~cnn.backward.bpcnn`: ``er`` (same shape as the layer's maps or
  outputs; a pool layer's ``er`` is already upsampled to the size of the layer
  below, as in the original), ``dK``/``dW``, ``db``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .activations import check_activation

MODES = ("faithful", "corrected")
POOL_METHODS = ("mean",)
LOSSES = ("auto", "quad", "cros")


@dataclass(eq=False)
class Layer:
    """Base class of the four layer types. ``type`` is MATLAB's one-letter code."""

    type = "?"
    act_func: str = "none"
    # runtime fields, filled by ffcnn / bpcnn (None until then)
    featuremaps: np.ndarray | None = field(default=None, repr=False)
    outputs: np.ndarray | None = field(default=None, repr=False)
    er: np.ndarray | None = field(default=None, repr=False)

    def clear_runtime(self):
        """Drop the arrays that ffcnn/bpcnn store (maps, outputs, errors, gradients)."""
        for name in ("featuremaps", "outputs", "er", "z", "dK", "dW", "db"):
            if hasattr(self, name):
                setattr(self, name, None)


@dataclass(eq=False)
class InputLayer(Layer):
    """Layer 1: the input images, ``n_maps`` channels of ``height x width``."""

    type = "i"
    n_maps: int = 1
    height: int = 0
    width: int = 0

    @property
    def map_shape(self):
        return (self.height, self.width)


@dataclass(eq=False)
class ConvLayer(Layer):
    """Convolution layer: ``n_maps`` output maps from ``n_prev_maps`` input maps."""

    type = "c"
    n_maps: int = 1
    n_prev_maps: int = 1
    kernel_height: int = 1
    kernel_width: int = 1
    height: int = 0
    width: int = 0
    K: np.ndarray | None = field(default=None, repr=False)
    b: np.ndarray | None = field(default=None, repr=False)
    dK: np.ndarray | None = field(default=None, repr=False)
    db: np.ndarray | None = field(default=None, repr=False)
    z: np.ndarray | None = field(default=None, repr=False)

    @property
    def map_shape(self):
        return (self.height, self.width)


@dataclass(eq=False)
class PoolLayer(Layer):
    """Mean-pooling layer (rate ``rate``); never applies an activation."""

    type = "p"
    rate: int = 2
    method: str = "mean"
    n_maps: int = 1
    height: int = 0
    width: int = 0

    @property
    def map_shape(self):
        return (self.height, self.width)


@dataclass(eq=False)
class FCLayer(Layer):
    """Fully connected layer with ``n_nodes`` outputs and ``n_inputs`` inputs."""

    type = "f"
    n_nodes: int = 1
    n_inputs: int = 1
    W: np.ndarray | None = field(default=None, repr=False)
    b: np.ndarray | None = field(default=None, repr=False)
    dW: np.ndarray | None = field(default=None, repr=False)
    db: np.ndarray | None = field(default=None, repr=False)
    z: np.ndarray | None = field(default=None, repr=False)


@dataclass(eq=False)
class CNN:
    """The network (MATLAB's ``cnn`` struct).

    Attributes
    ----------
    layers : list of Layer
        ``layers[0]`` is the input layer (MATLAB layer 1).
    mode : {"faithful", "corrected"}
        ``faithful`` reproduces the original's numbers, defects D1-D4 included;
        ``corrected`` fixes them.
    learning_rate : float
    loss_func : {"auto", "quad", "cros"}
    calc_last_layer_act_derivative : bool or None
        MATLAB ``CalcLastLayerActDerivative``; ``None`` until traincnn/bpcnn sets it.
    loss : float or None
        Loss of the last bpcnn call.
    loss_array : list of float
        One entry per minibatch of the last traincnn call.
    rng : numpy.random.Generator
        Source of the initial parameters (MATLAB's global ``rand``).
    dtype : numpy dtype
        float64 by default (as MATLAB); float32 is an opt-in speed mode.
    """

    layers: list
    mode: str = "faithful"
    learning_rate: float = 0.01
    loss_func: str = "auto"
    regularization_const: float = 0.0  # the original sets it and never reads it
    calc_last_layer_act_derivative: bool | None = None
    loss: float | None = None
    loss_array: list = field(default_factory=list)
    rng: np.random.Generator | None = field(default=None, repr=False)
    dtype: type = np.float64

    @property
    def no_of_layers(self):
        return len(self.layers)

    @property
    def input_shape(self):
        """``(C, H, W)`` of one input example."""
        inp = self.layers[0]
        return (inp.n_maps, inp.height, inp.width)

    @property
    def n_outputs(self):
        """Number of outputs of the last layer (rows of MATLAB's ``y``)."""
        last = self.layers[-1]
        if last.type == "f":
            return last.n_nodes
        return last.n_maps * last.height * last.width

    def parameters(self):
        """Yield ``(layer_index, name, array)`` for every trainable array."""
        for i, layer in enumerate(self.layers):
            if layer.type == "c":
                yield i, "K", layer.K
                yield i, "b", layer.b
            elif layer.type == "f":
                yield i, "W", layer.W
                yield i, "b", layer.b

    def copy(self):
        """A deep copy (parameters, settings and runtime arrays)."""
        import copy

        return copy.deepcopy(self)

    def clear_runtime(self):
        """Drop every layer's maps, outputs, errors and gradients (frees memory)."""
        for layer in self.layers:
            layer.clear_runtime()

    def describe(self):
        """One line per layer, e.g. ``'2 c rect 10 maps 9x9 -> 20x20'``."""
        lines = []
        for i, L in enumerate(self.layers):
            if L.type == "i":
                s = f"{i + 1} i      {L.n_maps} x {L.height}x{L.width}"
            elif L.type == "c":
                s = (
                    f"{i + 1} c {L.act_func} {L.n_maps} maps {L.kernel_height}x{L.kernel_width}"
                    f" -> {L.height}x{L.width}"
                )
            elif L.type == "p":
                s = f"{i + 1} p {L.method} rate {L.rate} -> {L.height}x{L.width}"
            else:
                s = f"{i + 1} f {L.act_func} {L.n_nodes} nodes ({L.n_inputs} inputs)"
            lines.append(s)
        return "\n".join(lines)

    def __repr__(self):
        kinds = "".join(L.type for L in self.layers)
        return (
            f"CNN(layers={kinds!r}, mode={self.mode!r}, loss_func={self.loss_func!r}, "
            f"learning_rate={self.learning_rate}, flag={self.calc_last_layer_act_derivative})"
        )


def _positive_int(value, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        if isinstance(value, (float, np.floating)) and float(value).is_integer() and value > 0:
            return int(value)
        raise TypeError(f"{name} must be a positive integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _make_rng(rng=None, seed=None):
    if rng is not None and seed is not None:
        raise ValueError("give either rng= or seed=, not both")
    if rng is not None:
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        return rng
    return np.random.default_rng(seed)


def _uniform(shape, rng):
    """``0.5*rand(shape) - 0.25``, filled column-major as MATLAB fills it."""
    u = rng.random(int(np.prod(shape)))
    return (0.5 * u - 0.25).reshape(shape, order="F")


def initcnn(
    image_size, learning_rate=0.01, *, mode="faithful", seed=None, rng=None, dtype=np.float64
):
    """Create a network with only its input layer (MATLAB ``initcnn``).

    Parameters
    ----------
    image_size : (H, W) or (H, W, C)
        Size of one input image; C input channels (default 1).
    learning_rate : float, default 0.01
        The original's default.
    mode : {"faithful", "corrected"}
        See :class:`CNN`.
    seed : int, optional
        Seed for the generator that draws the initial parameters in the
        constructors (the original uses MATLAB's global ``rand``).
    rng : numpy.random.Generator, optional
        Use this generator instead (mutually exclusive with ``seed``).
    dtype : {numpy.float64, numpy.float32}
        float64 reproduces the original; float32 is faster, not bit-faithful.

    Returns
    -------
    CNN
    """
    try:
        dims = [int(v) if float(v).is_integer() else v for v in image_size]
    except TypeError:
        raise TypeError(f"image_size must be (H, W) or (H, W, C), got {image_size!r}") from None
    if len(dims) not in (2, 3):
        raise ValueError(f"image_size must be (H, W) or (H, W, C), got {image_size!r}")
    H = _positive_int(dims[0], "image_size[0] (height)")
    W = _positive_int(dims[1], "image_size[1] (width)")
    C = _positive_int(dims[2], "image_size[2] (channels)") if len(dims) == 3 else 1
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not valid; valid: {', '.join(MODES)}")
    dtype = np.dtype(dtype).type
    if dtype not in (np.float64, np.float32):
        raise ValueError(f"dtype must be float64 or float32, got {np.dtype(dtype).name}")
    lr = float(learning_rate)
    if not np.isfinite(lr) or lr <= 0:
        raise ValueError(f"learning_rate must be a positive finite number, got {learning_rate!r}")
    layer = InputLayer(n_maps=C, height=H, width=W)
    return CNN(layers=[layer], mode=mode, learning_rate=lr, rng=_make_rng(rng, seed), dtype=dtype)


def _check_net(net):
    if not isinstance(net, CNN):
        raise TypeError(f"net must be a CNN made by initcnn, got {type(net).__name__}")


def _map_layer_below(net, what):
    prev = net.layers[-1]
    if prev.type == "f":
        raise ValueError(
            f"a {what} layer cannot follow a fully connected layer "
            "(the original supports FC layers only at the end)"
        )
    return prev


def add_conv_layer(net, n_maps, kernel_size, act, *, seed=None, rng=None):
    """Append a convolution layer (MATLAB ``cnnAddConvLayer``).

    Kernels are drawn one at a time, outer loop over the ``n_maps`` output maps,
    inner loop over the P input maps, each ``kh x kw`` from U[-0.25, 0.25)
    filled column-major; biases start at 0.

    Parameters
    ----------
    net : CNN
    n_maps : int
        Number of output maps M.
    kernel_size : int or (kh, kw)
        Kernel height and width (a single value gives a square kernel).
    act : str
        Activation, one of ``sigm tanh rect soft none plus``.
    seed, rng : optional
        Draw from this generator instead of ``net.rng``.

    Returns
    -------
    CNN
        ``net`` itself, with the layer appended. New kernels ``K`` have shape
        ``(M, P, kh, kw)`` and biases ``b`` shape ``(M,)``.
    """
    _check_net(net)
    M = _positive_int(n_maps, "n_maps")
    ks = np.atleast_1d(np.asarray(kernel_size)).ravel()
    if ks.size not in (1, 2):
        raise ValueError(f"kernel_size must be k or (kh, kw), got {kernel_size!r}")
    kh = _positive_int(ks[0].item(), "kernel_size[0]")
    kw = _positive_int(ks[-1].item(), "kernel_size[1]")
    check_activation(act)
    prev = _map_layer_below(net, "convolution")
    H, W = prev.map_shape
    if kh > H or kw > W:
        raise ValueError(
            f"kernel_size {kh}x{kw} is larger than its input maps {H}x{W} "
            f"(layer {net.no_of_layers})"
        )
    P = prev.n_maps
    gen = net.rng if (seed is None and rng is None) else _make_rng(rng, seed)
    K = np.empty((M, P, kh, kw), dtype=np.float64)
    for j in range(M):
        for k in range(P):
            K[j, k] = _uniform((kh, kw), gen)
    layer = ConvLayer(
        act_func=act,
        n_maps=M,
        n_prev_maps=P,
        kernel_height=kh,
        kernel_width=kw,
        height=H - kh + 1,
        width=W - kw + 1,
        K=K.astype(net.dtype),
        b=np.zeros(M, dtype=net.dtype),
    )
    net.layers.append(layer)
    return net


def add_pool_layer(net, rate, method="mean"):
    """Append a mean-pooling layer (MATLAB ``cnnAddPoolLayer``).

    The output maps are ``floor(H/rate) x floor(W/rate)``. (The original records
    the fraction ``H/rate``, which breaks an FC layer built after it: defect D7.)

    Parameters
    ----------
    net : CNN
    rate : int
        Subsampling rate r (window r x r, stride r).
    method : {"mean"}
        Only mean pooling exists, as in the original.

    Returns
    -------
    CNN
        ``net`` with the layer appended.
    """
    _check_net(net)
    r = _positive_int(rate, "rate")
    if method not in POOL_METHODS:
        raise ValueError(
            f"method={method!r} is not a known pool method; valid: {', '.join(POOL_METHODS)}"
        )
    prev = _map_layer_below(net, "pooling")
    H, W = prev.map_shape
    if r > H or r > W:
        raise ValueError(
            f"rate {r} is larger than its input maps {H}x{W} (layer {net.no_of_layers})"
        )
    net.layers.append(
        PoolLayer(
            act_func="none", rate=r, method=method, n_maps=prev.n_maps, height=H // r, width=W // r
        )
    )
    return net


def add_fc_layer(net, n_nodes, act, *, seed=None, rng=None):
    """Append a fully connected layer (MATLAB ``cnnAddFCLayer``).

    ``W`` is drawn first (n x n_in, column-major), then ``b`` (n), both from
    U[-0.25, 0.25).

    Parameters
    ----------
    net : CNN
    n_nodes : int
        Number of outputs n.
    act : str
        Activation, one of ``sigm tanh rect soft none plus``.
    seed, rng : optional
        Draw from this generator instead of ``net.rng``.

    Returns
    -------
    CNN
        ``net`` with the layer appended: ``W (n, n_in)``, ``b (n,)``, where
        ``n_in`` is the previous FC layer's n or M*H*W of the maps below.
    """
    _check_net(net)
    n = _positive_int(n_nodes, "n_nodes")
    check_activation(act)
    prev = net.layers[-1]
    if prev.type == "f":
        n_in = prev.n_nodes
    else:
        n_in = prev.n_maps * prev.height * prev.width
    gen = net.rng if (seed is None and rng is None) else _make_rng(rng, seed)
    W = _uniform((n, n_in), gen)
    b = _uniform((n, 1), gen)[:, 0]
    net.layers.append(
        FCLayer(
            act_func=act,
            n_nodes=n,
            n_inputs=n_in,
            W=np.ascontiguousarray(W, dtype=net.dtype),
            b=b.astype(net.dtype),
        )
    )
    return net


def example_network(
    example=3, *, seed=None, rng=None, mode="faithful", learning_rate=0.01, dtype=np.float64
):
    """The networks of ``Example_MNIST_CNN.m`` for 28 x 28 images.

    Parameters
    ----------
    example : {1, 2, 3}
        3 is the active one in the original: c(rect 10, 9x9) - p2 - c(tanh 20, 3x3) - p2
        - f(tanh 150) - f(sigm 10). 1 and 2 are the commented alternatives.

    Returns
    -------
    CNN
    """
    net = initcnn((28, 28), learning_rate, mode=mode, seed=seed, rng=rng, dtype=dtype)
    if example == 1:
        add_conv_layer(net, 10, 7, "tanh")
        add_pool_layer(net, 2)
        add_conv_layer(net, 15, 3, "tanh")
        add_pool_layer(net, 3)
        add_fc_layer(net, 150, "tanh")
        add_fc_layer(net, 10, "sigm")
    elif example == 2:
        add_conv_layer(net, 40, 5, "sigm")
        add_pool_layer(net, 3)
        add_conv_layer(net, 50, 3, "sigm")
        add_pool_layer(net, 2)
        add_fc_layer(net, 90, "sigm")
        add_fc_layer(net, 10, "sigm")
    elif example == 3:
        add_conv_layer(net, 10, 9, "rect")
        add_pool_layer(net, 2)
        add_conv_layer(net, 20, 3, "tanh")
        add_pool_layer(net, 2)
        add_fc_layer(net, 150, "tanh")
        add_fc_layer(net, 10, "sigm")
    else:
        raise ValueError(f"example must be 1, 2 or 3, got {example!r}")
    return net

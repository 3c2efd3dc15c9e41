"""A faithful Python port of the MATLAB sample CNN (File Exchange 59223).

The functions keep the original's names (``ffcnn``, ``bpcnn``, ``traincnn``, ...)
so that a reader can follow the MATLAB files side by side. See ``README.md``
and ``docs/backprop.md``.
"""

from . import threads  # noqa: F401  (first: the OpenMP wait settings, see cnn/threads.py)
from .activations import ACTIVATIONS
from .backend import use_kernels
from .backward import bpcnn, compute_loss, derive_flag, resolve_loss
from .forward import ffcnn, flatten_maps, unflatten_maps
from .gradcheck import GradCheckReport, GradientCheckError, gradient_checker
from .guard import DivergenceError
from .network import (
    CNN,
    MODES,
    POOL_METHODS,
    add_conv_layer,
    add_fc_layer,
    add_pool_layer,
    example_network,
    initcnn,
)
from .training import NonFiniteError, gradientdescentcnn, predictcnn, testcnn, traincnn

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
    "CNN",
    "DivergenceError",
    "MODES",
    "POOL_METHODS",
    "GradCheckReport",
    "GradientCheckError",
    "NonFiniteError",
    "add_conv_layer",
    "add_fc_layer",
    "add_pool_layer",
    "bpcnn",
    "compute_loss",
    "derive_flag",
    "example_network",
    "ffcnn",
    "flatten_maps",
    "gradient_checker",
    "gradientdescentcnn",
    "initcnn",
    "predictcnn",
    "resolve_loss",
    "testcnn",
    "traincnn",
    "unflatten_maps",
    "use_kernels",
]

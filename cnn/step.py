"""Step through ``bpcnn`` next to the MATLAB code: ``python -m cnn step``.

One minibatch goes through :func:`cnn.ffcnn` and :func:`cnn.bpcnn`; then a
report lists, from the last layer to the first, what ``bpcnn`` computed:

* the output error ``e = o - y`` before the CalcLastLayerActDerivative flag and
  after it (norms and the first values), and the loss;
* each layer's error ``er`` (shape and norm) and its ``dK``/``dW`` and ``db``
  norms;
* for every step, the lines of the original ``bpcnn.m`` that compute it, and
  the defect (D1-D4) where the faithful mode keeps one.

The report is built from the layer attributes after ``bpcnn`` (``backward.py``
is not modified for it); the error before the flag is recomputed as
``outputs - y``. ``--pdb`` runs ``bpcnn`` under :class:`pdb.Pdb` with a
breakpoint on the line of ``cnn/backward.py`` that tests the flag, found by
reading the source with :mod:`inspect`.

The MATLAB line numbers refer to the original ``bpcnn.m`` (File Exchange
59223, 211 lines).

From Python::

    report = cnn.step.step_report(net, x, y)   # runs ffcnn + bpcnn
    print(report.format())
"""

from __future__ import annotations

import inspect
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# Lines of the original bpcnn.m (File Exchange 59223) for each step of the backward pass.
MATLAB_LINES = {
    "flatten": "5-12",  # a last conv/pool layer's maps flattened into its outputs
    "error": "13",  # er = ( cnn.layers{cnn.no_of_layers}.outputs - yy)
    "loss_cros": "15-17, 27",  # cross-entropy (sigmoid only), cnn.loss = sum(er1)/N
    "loss_cros_other": "18-20",  # any other output: error('cross entropy is implemented ...')
    "loss_quad": "30-31",  # er1 = er.^2; cnn.loss = sum(er1(:))/(2*N)
    "flag": "35",  # if cnn.CalcLastLayerActDerivative ==1
    "flag_apply": "36",  # er = applyactfunccnn(outputs, act_func, 1, er)
    "last_f": "41-44",  # er{1} = er (42), dW (43), db (44)
    "last_p": "45-76",  # cut into maps (47-52), upsample without ./(r*r) (68-76)
    "last_p_upsample": "68-76",
    "last_c": "81-97",  # cut into maps (83-88), dK (90-95), db (96)
    "last_c_cut": "83-88",
    "last_c_dK": "90-95",
    "last_c_db": "96",
    "loop": "102",  # for i=cnn.no_of_layers-1:-1:1
    "f_er": "105-106",  # W{i+1}' * er{i+1}, then f'(outputs) .*
    "f_dW": "107",
    "f_db": "108",
    "p_from_f": "112-120",  # W' * er, cut into maps
    "p_from_c": "121-132",  # sum of convn(er{j}, rot90(K,2), 'full') (130)
    "p_from_c_line": "130",
    "p_from_p": "133-136",  # the pool layer above's er, as is
    "p_upsample": "138-148",  # repeat rows/columns, ./(zz*zz) (147)
    "c_from_f": "157-166",
    "c_from_c": "167-168",  # error('not implemented yet- convolution layer with ...')
    "c_from_p": "169-171",
    "c_act_soft": "172-180",
    "c_act": "181-185",  # er{j} = applyactfunccnn(featuremaps{j}, act, 1, er{j})
    "c_dK": "189-205",  # convn(X{j}, flip(er{ii}) in 3-D, 'valid') ./ N (201, 204)
    "c_db": "206",
}
"""Line numbers of the original ``bpcnn.m`` for each step (see :func:`step_report`)."""


class DebuggerQuit(Exception):
    """The user left ``bpcnn`` with ``q`` in the debugger: there is nothing to report."""


# --------------------------------------------------------------------------- report


@dataclass
class Line:
    """One step of bpcnn: the MATLAB lines, what they compute, and the numbers here."""

    matlab: str
    what: str
    detail: str = ""


@dataclass
class LayerStep:
    """What bpcnn computed for one layer (MATLAB 1-based ``layer``).

    ``er_norm``, ``grad_norms`` etc. are the Frobenius norms of the layer's
    attributes after bpcnn (``None`` where the layer has none).
    """

    layer: int
    type: str
    act_func: str
    title: str
    branch: str
    er_shape: tuple | None = None
    er_norm: float | None = None
    grad_norms: dict = field(default_factory=dict)
    grad_shapes: dict = field(default_factory=dict)
    matlab_shape: str = ""
    lines: list = field(default_factory=list)
    defects: list = field(default_factory=list)


@dataclass
class StepReport:
    """The result of :func:`step_report`.

    Attributes
    ----------
    e_before : ndarray, shape (N, n_outputs)
        ``outputs - y`` (bpcnn.m line 13), before the flag.
    e_after : ndarray, shape (N, n_outputs)
        The output error after the flag (line 35-36): what the last layer's
        ``er`` holds (flattened).
    layers : list of LayerStep
        From the last layer to the first.
    """

    description: str
    mode: str
    loss_func: str
    flag: bool
    loss: float
    n_examples: int
    e_before: np.ndarray
    e_after: np.ndarray
    layers: list
    flag_source_line: int | None = None
    data: str = ""

    def layer(self, number):
        """The :class:`LayerStep` of MATLAB layer ``number``."""
        for s in self.layers:
            if s.layer == number:
                return s
        raise KeyError(number)

    def format(self, n_values=5):
        """The report as text (what ``python -m cnn step`` prints)."""
        out = [
            f"bpcnn, step by step: {self.description}",
            f"{self.mode} mode; {self.n_examples} examples"
            + (f" ({self.data})" if self.data else "")
            + f"; loss {self.loss_func}; CalcLastLayerActDerivative = {int(self.flag)}",
            "Lines 'bpcnn.m:N' are the original MATLAB file's; Python: cnn/backward.py "
            "bpcnn (see docs/backprop.md). Norms are Frobenius norms over the whole batch.",
            "",
        ]
        for s in self.layers:
            out.append(f"layer {s.layer}  {s.title}  [{s.branch}]")
            for ln in s.lines:
                ref = f"bpcnn.m:{ln.matlab}" if ln.matlab else ""
                out.append(f"  {ref:<22} {ln.what}")
                if ln.detail:
                    for d in ln.detail.splitlines():
                        out.append(f"  {'':<22}   {d}")
            if s.er_shape is not None:
                nums = [f"er {_shape(s.er_shape)} ({s.matlab_shape}) norm {s.er_norm:.6e}"]
                for name in ("dK", "dW", "db"):
                    if name in s.grad_norms:
                        nums.append(
                            f"{name} {_shape(s.grad_shapes[name])} norm {s.grad_norms[name]:.6e}"
                        )
                out.append(f"  {'=':<22} " + "; ".join(nums))
            for d in s.defects:
                out.append(f"  {'!':<22} {d}")
            out.append("")
        return "\n".join(out).rstrip() + "\n"

    def __str__(self):
        return self.format()


def _shape(shape):
    return "(" + ", ".join(str(v) for v in shape) + ")"


def _norm(a):
    return None if a is None else float(np.linalg.norm(np.asarray(a, dtype=np.float64)))


def _values(a, n):
    a = np.asarray(a, dtype=np.float64).ravel()[:n]
    return "[" + ", ".join(f"{v:+.4f}" for v in a) + (", ...]" if n else "]")


def _matlab_shape(layer, er):
    """MATLAB's shape of ``er``: ``n x N`` for FC, ``{M} of H x W x N`` for maps."""
    if er.ndim == 2:
        return f"MATLAB er{{1}} {er.shape[1]} x {er.shape[0]}"
    N, M, H, W = er.shape
    return f"MATLAB er{{1..{M}}} {H} x {W} x {N}"


def source_line(func, needle):
    """The line number (in its file) of the first line of ``func``'s source holding ``needle``.

    Returns None when the text is not there (the source changed).
    """
    try:
        lines, start = inspect.getsourcelines(func)
    except (OSError, TypeError):
        return None
    for i, text in enumerate(lines):
        if needle in text:
            return start + i
    return None


FLAG_NEEDLE = "if net.calc_last_layer_act_derivative:"
"""The text of the line of :func:`cnn.backward.bpcnn` that tests the flag."""


def flag_line():
    """``(file, line)`` of the flag test in :func:`cnn.backward.bpcnn`."""
    from . import backward

    line = source_line(backward.bpcnn, FLAG_NEEDLE)
    if line is None:
        raise RuntimeError(f"cannot find {FLAG_NEEDLE!r} in cnn.backward.bpcnn")
    return inspect.getsourcefile(backward.bpcnn), line


def step_report(net, x, y, *, description=None, data="", debugger=False):
    """Run ffcnn and bpcnn on one minibatch and describe what bpcnn computed.

    Parameters
    ----------
    net : CNN
        Its ``loss_func`` and flag are resolved as ``traincnn`` does if not set.
        Modified as ffcnn/bpcnn modify it (runtime fields), parameters unchanged.
    x : ndarray, shape (N, H, W) or (N, C, H, W)
    y : ndarray, shape (N, n_outputs)
    description : str, optional
        What the network is (first line of the report).
    data : str
        What the data are.
    debugger : bool
        Run bpcnn under pdb, stopping at the flag line (see :func:`debug_bpcnn`).

    Returns
    -------
    StepReport
    """
    from .backward import bpcnn, prepare_loss_and_flag
    from .forward import check_y, ffcnn

    prepare_loss_and_flag(net, net.calc_last_layer_act_derivative)
    ffcnn(net, x)
    y = check_y(net, y, np.shape(x)[0])
    if debugger:
        if not debug_bpcnn(net, y):
            raise DebuggerQuit("bpcnn was left in the debugger; no report")
    else:
        bpcnn(net, y)
    return report_from_net(net, y, description=description, data=data)


def report_from_net(net, y, *, description=None, data=""):
    """The :class:`StepReport` of a network just after ``bpcnn(net, y)``."""
    from . import activations
    from .backward import bpcnn
    from .forward import flatten_maps, output_matrix

    layers = net.layers
    L = len(layers)
    last = layers[-1]
    if last.er is None:
        raise ValueError("report_from_net needs a network after bpcnn(net, y)")
    faithful = net.mode == "faithful"
    o = np.asarray(output_matrix(net), dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    N = o.shape[0]
    e_before = o - y
    flag = bool(net.calc_last_layer_act_derivative)
    if last.type == "f":
        e_after = np.asarray(last.er, dtype=np.float64)
    elif last.type == "c":
        e_after = np.asarray(flatten_maps(last.er), dtype=np.float64)
    else:  # a pool layer's er is stored upsampled: apply the flag again (act 'none')
        e_after = (
            activations.backward(o, last.act_func, e_before, net.mode) if flag else e_before.copy()
        )
    py_flag = source_line(bpcnn, FLAG_NEEDLE)

    steps = []
    # ---------------------------------------------------------------- last layer
    s = LayerStep(
        layer=L, type=last.type, act_func=last.act_func, title=_title(last), branch="the last layer"
    )
    if last.type != "f":
        s.lines.append(
            Line(
                MATLAB_LINES["flatten"],
                "its maps flattened (column-major, map by map) into outputs",
                f"outputs {_shape(o.shape)} (MATLAB {o.shape[1]} x {N})",
            )
        )
    s.lines.append(
        Line(
            MATLAB_LINES["error"],
            "er = outputs - yy   (before the flag)",
            f"norm {_norm(e_before):.6e}; example 1: {_values(e_before[0], 5)}",
        )
    )
    if net.loss_func == "cros":
        what = (
            "cnn.loss = -sum(y log o + (1-y) log(1-o)) / N (cross-entropy)"
            if last.act_func == "sigm"
            else "cnn.loss = -sum(y log o) / N (categorical; the original stops at lines "
            f"{MATLAB_LINES['loss_cros_other']}, D8)"
        )
        s.lines.append(Line(MATLAB_LINES["loss_cros"], what, f"loss {net.loss:.6g}"))
    else:
        s.lines.append(
            Line(
                MATLAB_LINES["loss_quad"],
                "cnn.loss = sum((o - y).^2) / (2N)",
                f"loss {net.loss:.6g}",
            )
        )
    where = f" (cnn/backward.py:{py_flag})" if py_flag else ""
    if flag:
        act = last.act_func
        deriv = {
            "sigm": "o(1-o)",
            "tanh": "1-o^2",
            "rect": "0.01+0.99[o>0]",
            "none": "o (D2)" if faithful else "1",
            "soft": "softmax Jacobian",
            "plus": "1-exp(-o)",
        }[act]
        s.lines.append(
            Line(
                f"{MATLAB_LINES['flag']}-{MATLAB_LINES['flag_apply']}",
                f"if cnn.CalcLastLayerActDerivative == 1: flag 1, er = "
                f"applyactfunccnn(outputs, '{act}', 1, er) = {deriv} .* er{where}",
                f"after the flag: norm {_norm(e_after):.6e}; example 1: {_values(e_after[0], 5)}",
            )
        )
    else:
        s.lines.append(
            Line(
                MATLAB_LINES["flag"],
                f"if cnn.CalcLastLayerActDerivative == 1: flag 0, er stays outputs - yy{where}",
                f"after the flag: norm {_norm(e_after):.6e} (unchanged)",
            )
        )
    if last.type == "f":
        s.lines.append(
            Line(
                MATLAB_LINES["last_f"],
                "FC last: er{1} = er; dW = er{1} * "
                f"outputs{{{L - 1}}}' / N; db = mean(er{{1}}, 2)",
            )
        )
        _grads(s, last, ("dW", "db"))
    elif last.type == "p":
        s.lines.append(
            Line(
                MATLAB_LINES["last_p"],
                f"pool last: er cut into {last.n_maps} "
                f"maps, each row and column repeated {last.rate} times"
                + ("" if faithful else f", divided by {last.rate}^2"),
            )
        )
        if faithful:
            s.defects.append(
                f"D4 (faithful): not divided by r^2 = {last.rate**2} "
                f"(bpcnn.m:{MATLAB_LINES['last_p_upsample']}); every gradient "
                f"below is {last.rate**2} times too large"
            )
    else:
        s.lines.append(
            Line(MATLAB_LINES["last_c_cut"], f"conv last: er cut into {last.n_maps} maps")
        )
        s.lines.append(
            Line(
                MATLAB_LINES["last_c_dK"],
                "dK(:,:,kk) = mean(convn(X{j}, rot90(er{i},2), 'valid'), 3)"
                if faithful
                else "dK = sum_n X{j}(:,:,n) * er{i}(:,:,n) (valid correlation) / N",
            )
        )
        s.lines.append(Line(MATLAB_LINES["last_c_db"], "db(i) = sum(er{i}(:)) / N"))
        _grads(s, last, ("dK", "db"))
        if faithful:
            s.defects.append(
                f"D3 (faithful): the 3-D convn pairs example n with the error "
                f"of example N+1-n and does not divide by N "
                f"(bpcnn.m:{MATLAB_LINES['last_c_dK']})"
            )
    _er(s, last)
    steps.append(s)

    # ---------------------------------------------------------------- the loop
    conv_above = last.type == "c"
    for l in range(L - 2, 0, -1):
        layer, above = layers[l], layers[l + 1]
        i = l + 1  # MATLAB layer number
        s = LayerStep(
            layer=i,
            type=layer.type,
            act_func=layer.act_func,
            title=_title(layer),
            branch=f"{layer.type} <- {above.type}",
        )
        s.lines.append(Line(MATLAB_LINES["loop"], f"for i = no_of_layers-1 : -1 : 1  (i = {i})"))
        if layer.type == "f":
            s.lines.append(
                Line(
                    MATLAB_LINES["f_er"],
                    f"er{{1}} = f'(outputs) .* (W{{{i + 1}}}' "
                    f"* er{{{i + 1}}}{{1}}), f' of '{layer.act_func}' from the "
                    f"outputs",
                )
            )
            s.lines.append(Line(MATLAB_LINES["f_dW"], f"dW = er{{1}} * outputs{{{i - 1}}}' / N"))
            s.lines.append(Line(MATLAB_LINES["f_db"], "db = mean(er{1}, 2)"))
            _grads(s, layer, ("dW", "db"))
            if layer.act_func == "none" and faithful:
                s.defects.append(
                    "D2 (faithful): the derivative of 'none' multiplies by the "
                    "output instead of 1: this layer's and every lower gradient "
                    "is wrong"
                )
        elif layer.type == "p":
            if above.type == "f":
                s.lines.append(
                    Line(
                        MATLAB_LINES["p_from_f"],
                        f"W{{{i + 1}}}' * er{{{i + 1}}}"
                        f"{{1}} cut into {layer.n_maps} maps "
                        f"{layer.height}x{layer.width}",
                    )
                )
            elif above.type == "c":
                s.lines.append(
                    Line(
                        MATLAB_LINES["p_from_c"],
                        "er{k} = sum over j of convn(er{j}, rot90(K(:,:,kk),2), 'full')"
                        if faithful
                        else "er{k} = sum over j of the full convolution of er{j} "
                        "with K(:,:,kk) (not rotated)",
                    )
                )
                if faithful:
                    s.defects.append(
                        f"D1 (faithful): the kernel is rotated by 180 degrees "
                        f"(bpcnn.m:{MATLAB_LINES['p_from_c_line']}); every conv "
                        f"layer below this point gets a wrong gradient"
                    )
            else:
                s.lines.append(
                    Line(
                        MATLAB_LINES["p_from_p"], f"er = er of layer {i + 1} (already at this size)"
                    )
                )
            below = layers[l - 1]
            s.lines.append(
                Line(
                    MATLAB_LINES["p_upsample"],
                    f"upsample: rows and columns "
                    f"repeated {layer.rate} times, ./(r*r) = /{layer.rate**2} -> "
                    f"{below.height}x{below.width}",
                )
            )
        elif layer.type == "c":
            if above.type == "f":
                s.lines.append(
                    Line(
                        MATLAB_LINES["c_from_f"],
                        f"W{{{i + 1}}}' * er{{{i + 1}}}"
                        f"{{1}} cut into {layer.n_maps} maps "
                        f"{layer.height}x{layer.width}",
                    )
                )
            elif above.type == "c":
                s.lines.append(
                    Line(
                        MATLAB_LINES["c_from_c"],
                        "conv <- conv: the original "
                        "stops here ('not implemented yet'); the port uses the "
                        "full convolution with K"
                        + (
                            " rotated by 180 degrees, as the rate-1 pool workaround does (D1)"
                            if faithful
                            else ""
                        ),
                    )
                )
                if faithful:
                    s.defects.append(
                        "D1 (faithful): error from the conv layer above with the "
                        "kernel rotated by 180 degrees"
                    )
            else:
                s.lines.append(
                    Line(
                        MATLAB_LINES["c_from_p"],
                        f"er = er of pool layer {i + 1} (already upsampled)",
                    )
                )
            if layer.act_func == "soft":
                s.lines.append(
                    Line(
                        MATLAB_LINES["c_act_soft"],
                        "softmax over maps: er{j} = a{j} .* (er{j} - sum_k er{k} .* a{k})",
                    )
                )
            else:
                s.lines.append(
                    Line(
                        MATLAB_LINES["c_act"],
                        f"er{{j}} = f'(featuremaps{{j}}) "
                        f".* er{{j}}, f' of '{layer.act_func}' from the outputs",
                    )
                )
            s.lines.append(
                Line(
                    MATLAB_LINES["c_dK"],
                    f"dK(:,:,kk) = sum_n X{{j}} (valid "
                    f"correlation) er{{ii}} / N, X = maps of layer {i - 1}",
                )
            )
            s.lines.append(Line(MATLAB_LINES["c_db"], "db(ii) = sum(er{ii}(:)) / N"))
            _grads(s, layer, ("dK", "db"))
            if layer.act_func == "none" and faithful:
                s.defects.append(
                    "D2 (faithful): the derivative of 'none' multiplies by the output instead of 1"
                )
            if conv_above and faithful:
                s.defects.append(
                    "wrong gradient in faithful mode: a conv layer above passed "
                    "its error down with the rotated kernel (D1)"
                )
            conv_above = True
        _er(s, layer)
        steps.append(s)

    inp = layers[0]
    s = LayerStep(layer=1, type="i", act_func="none", title=_title(inp), branch="input")
    s.lines.append(
        Line(
            MATLAB_LINES["loop"],
            "for i = ... : 1 (i = 1): no branch for an input layer, nothing is computed",
        )
    )
    steps.append(s)

    return StepReport(
        description=description or _describe(net),
        mode=net.mode,
        loss_func=net.loss_func,
        flag=flag,
        loss=float(net.loss),
        n_examples=N,
        e_before=e_before,
        e_after=e_after,
        layers=steps,
        flag_source_line=py_flag,
        data=data,
    )


def _title(layer):
    if layer.type == "i":
        return f"i  input {layer.n_maps} x {layer.height}x{layer.width}"
    if layer.type == "c":
        return (
            f"c {layer.act_func}  {layer.n_maps} maps {layer.kernel_height}x"
            f"{layer.kernel_width} -> {layer.height}x{layer.width}"
        )
    if layer.type == "p":
        return f"p {layer.method}  rate {layer.rate} -> {layer.height}x{layer.width}"
    return f"f {layer.act_func}  {layer.n_nodes} nodes"


def _describe(net):
    return "-".join(
        {
            "i": lambda L: f"{L.height}x{L.width}",
            "c": lambda L: f"c({L.act_func} {L.n_maps}, {L.kernel_height}x{L.kernel_width})",
            "p": lambda L: f"p{L.rate}",
            "f": lambda L: f"f({L.act_func} {L.n_nodes})",
        }[L.type](L)
        for L in net.layers
    )


def _grads(s, layer, names):
    for name in names:
        a = getattr(layer, name, None)
        if a is not None:
            s.grad_norms[name] = _norm(a)
            s.grad_shapes[name] = tuple(np.shape(a))


def _er(s, layer):
    if layer.er is not None:
        s.er_shape = tuple(np.shape(layer.er))
        s.er_norm = _norm(layer.er)
        s.matlab_shape = _matlab_shape(layer, np.asarray(layer.er))


# --------------------------------------------------------------------------- debugger


def debug_bpcnn(net, y, *, stdin=None, stdout=None):
    """Run ``bpcnn(net, y)`` under :class:`pdb.Pdb`, stopping at the flag line.

    The breakpoint is on the line of ``cnn/backward.py`` holding
    ``if net.calc_last_layer_act_derivative`` (found with :mod:`inspect`), where
    ``e = o - y`` has just been computed. ``c`` continues to the end of bpcnn,
    ``q`` leaves it (the report is then not printed).

    Returns
    -------
    bool
        True if bpcnn ran to the end.
    """
    import bdb
    import pdb

    from . import backward

    path, line = flag_line()
    dbg = pdb.Pdb(stdin=stdin, stdout=stdout)
    dbg.reset()
    err = dbg.set_break(path, line)
    if err:
        raise RuntimeError(f"cannot set a breakpoint at {path}:{line}: {err}")
    # Stop only at breakpoints: the 'bottom' frame is this one, and continuing from it
    # means "run until a breakpoint" (pdb.Pdb.runcall would stop at bpcnn's first line).
    dbg.botframe = sys._getframe()
    dbg.set_continue()
    print(
        f"pdb: stopping in cnn.backward.bpcnn at {Path(path).name}:{line}, the flag test "
        f"(bpcnn.m:{MATLAB_LINES['flag']}). Try: p e[:2], p net.calc_last_layer_act_derivative"
        f", n, s, l, c (continue), q (quit)",
        file=stdout or sys.stdout,
        flush=True,
    )
    sys.settrace(dbg.trace_dispatch)
    try:
        backward.bpcnn(net, y)
    except bdb.BdbQuit:
        return False
    finally:
        sys.settrace(None)
        dbg.clear_all_breaks()
    return True


# --------------------------------------------------------------------------- plot


def plot_error_norms(reports, path, *, title=None):
    """Bar chart of each layer's ``||er||`` (log scale), one bar group per report.

    Parameters
    ----------
    reports : dict of label -> StepReport
    path : str or Path
        PNG file to write.

    Returns
    -------
    Path
    """
    from . import plots

    plt = plots.plt
    labels = list(reports)
    first = reports[labels[0]]
    layers = [s for s in first.layers if s.er_norm is not None]
    names = [f"{s.layer}\n{s.type} {s.act_func if s.type in 'cf' else ''}".strip() for s in layers]
    width = 0.8 / len(labels)
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(layers), 3.6))
    for k, label in enumerate(labels):
        rep = reports[label]
        vals = [rep.layer(s.layer).er_norm for s in layers]
        xs = np.arange(len(layers)) + (k - (len(labels) - 1) / 2) * width
        ax.bar(xs, vals, width=width, label=label)
    ax.set_yscale("log")
    ax.set_xticks(np.arange(len(layers)), names)
    ax.set_xlabel("layer (MATLAB number) and type, in the order bpcnn visits them: output first")
    ax.set_ylabel("||er|| over the minibatch (log scale)")
    ax.set_title(title or f"bpcnn errors per layer: {first.description}", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return plots.save(fig, path)


def error_maps_figure(net, *, example=0, max_maps=None, title=None, ncols=10):
    """The figure of :func:`plot_error_maps` (not saved); see there."""
    from . import plots

    blocks = []
    for l in range(len(net.layers), 1, -1):
        layer = net.layers[l - 1]
        if layer.er is None:
            continue
        er = np.asarray(layer.er, dtype=np.float64)[example]
        kind = f"{layer.type} {layer.act_func}" if layer.type != "p" else f"p rate {layer.rate}"
        label = f"layer {l}\n{kind}\nmax|er| {float(np.abs(er).max()):.2g}"
        if er.ndim == 1:  # an FC layer: er{1}(:, n), outputs numbered from 1 as in MATLAB
            blocks.append(
                {
                    "label": label,
                    "maps": er,
                    "signed": True,
                    "cbar": "er",
                    "names": [str(i + 1) for i in range(er.size)],
                    "strip_title": f"er{{1}}: {er.size} values",
                }
            )
        else:
            m = er.shape[0] if max_maps is None else min(max_maps, er.shape[0])
            blocks.append(
                {
                    "label": label,
                    "maps": er[:m],
                    "signed": True,
                    "cbar": "er",
                    "names": [f"er{{{j + 1}}}" for j in range(m)],
                }
            )
    if not blocks:
        raise ValueError("plot_error_maps needs a network after bpcnn(net, y)")
    return plots.map_grid(
        blocks, ncols=ncols, title=title or f"er of example {example + 1} per layer"
    )


def plot_error_maps(net, path, *, example=0, max_maps=None, title=None):
    """What each layer's error looks like: ``er`` of one example, every map of every layer.

    Blocks from the last layer to layer 2 (the order bpcnn computes them). A
    map layer's ``er`` is shown as images, all its maps in rows of up to 10
    (MATLAB's ``er{j}(:, :, n)``; ``max_maps`` keeps only the first ones), an FC
    layer's as a strip of values (``er{1}(:, n)``). Each block has its own
    colour bar with a symmetric scale (red positive, blue negative) and names
    its largest absolute value. A pool layer's ``er`` is already at the size of
    the layer below, as the original stores it.

    Parameters
    ----------
    net : CNN
        After ``bpcnn``.
    path : str or Path
        PNG file to write.
    example : int
        0-based example of the minibatch.
    max_maps : int, optional
        Show at most this many maps per layer (default: all).

    Returns
    -------
    Path
    """
    from . import plots

    return plots.save(error_maps_figure(net, example=example, max_maps=max_maps, title=title), path)

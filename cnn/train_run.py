"""The training runner behind ``python -m cnn train`` and ``scripts/example_mnist.py``.

It is the port of ``Example_MNIST_CNN.m`` (build Example 1, 2 or 3, train with
:func:`cnn.traincnn`, report the training time and the test error) plus what a
long run needs:

* a progress bar per epoch (minibatch count, loss, ETA);
* checkpoints every K minibatches and at the end, written atomically
  (:func:`cnn.checkpoint.write_checkpoint`: ``checkpoint.npz`` and
  ``checkpoint.mat`` in the output directory), holding the network, its
  ``loss_array`` and, in the ``.npz`` meta, the position and every setting
  needed to resume;
* ``resume=CHECKPOINT.npz`` continues from the stored position. Training has no
  randomness (minibatches in order), so the final weights are bit-identical to
  an uninterrupted run's;
* Ctrl-C (SIGINT) stops at the next minibatch boundary, writes a checkpoint of
  the last completed minibatch and raises :class:`Interrupted` (exit code 130
  on the command line) with the command that resumes; a second Ctrl-C stops at
  once, keeping the last checkpoint;
* NaN/Inf stops with :class:`cnn.NonFiniteError` naming the layer and the
  minibatch; the last good checkpoint is kept;
* without MNIST, a clear message saying where to put the files, or
  ``synthetic=N``: a small deterministic digit-like data set generated here
  (:mod:`cnn.synthetic`), so everything can be tried without downloading.

Use it from Python with :class:`TrainConfig` and :func:`run_training`, or from
the command line (``cnn train``, :mod:`cnn.cli.train`). The output folder is
checked (created, written) before any data is loaded, and locked for the run's
life (:func:`cnn.atomic.folder_lock`): a second run on the same folder is
refused at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .synthetic import SYNTHETIC_TEST_SEED, SYNTHETIC_TRAIN_SEED, synthetic_digits, synthetic_split  # noqa: F401

CHECKPOINT_FORMAT = "cnn-train-checkpoint-1"
DEFAULTS = {
    "epochs": 1,
    "batch_size": 50,
    "learning_rate": 0.01,
    "flag": "auto",
    "mode": "faithful",
    "example": 3,
    "loss": "auto",
    "dtype": "float64",
    "init_var": "cnn",
    "out": "runs/train",
    "checkpoint_every": 200,
}
"""Defaults of the options; the example's own values (Example_MNIST_CNN.m)."""


class UsageError(ValueError):
    """Bad options or input files (exit code 2 on the command line)."""


class TrainingError(RuntimeError):
    """Training failed after it started (exit code 1), e.g. a checkpoint could not be written."""


class Interrupted(Exception):
    """Training was stopped by Ctrl-C (exit code 130).

    Attributes
    ----------
    checkpoint : Path or None
        The checkpoint to resume from (None if none was written).
    batches_done : int
        Global number of completed minibatches stored in it.
    resume_command : str or None
    """

    def __init__(self, message, checkpoint=None, batches_done=0, resume_command=None):
        super().__init__(message)
        self.checkpoint = checkpoint
        self.batches_done = batches_done
        self.resume_command = resume_command


class _StopAtBoundary(Exception):
    """Raised from the traincnn callback to leave training after a minibatch (private)."""


# --------------------------------------------------------------------------- configuration


@dataclass
class TrainConfig:
    """Settings of one training run. ``None`` means "not given": the default applies
    (:data:`DEFAULTS`), or, when resuming, the value stored in the checkpoint.

    Attributes mirror the command-line options (``--batch-size`` -> ``batch_size``).
    """

    epochs: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    seed: int | None = None
    flag: str | None = None  # "auto", "on", "off"
    mode: str | None = None  # "faithful", "corrected"
    example: int | None = None  # 1, 2, 3
    loss: str | None = None  # "auto", "quad", "cros"
    train_subset: int | None = None
    test_subset: int | None = None
    init: str | None = None
    init_var: str | None = None
    out: str | None = None
    data_dir: str | None = None
    download: bool = True
    checkpoint_every: int | None = None
    resume: str | None = None
    plots: str | None = None
    progress: bool = True
    dtype: str | None = None  # "float64", "float32"
    synthetic: int | None = None
    verbose: bool = True
    overwrite: bool = False
    verify: bool = True


# Options that a resumed run takes from the checkpoint unless given again.
_RESUMED_OPTIONS = ("checkpoint_every", "plots", "data_dir")


# Settings that define the computation: fixed by a checkpoint when resuming.
_RUN_SETTINGS = (
    "batch_size",
    "learning_rate",
    "seed",
    "flag",
    "mode",
    "example",
    "loss",
    "train_subset",
    "init",
    "init_var",
    "dtype",
    "synthetic",
)


@dataclass
class TrainResult:
    """What :func:`run_training` returns."""

    net: object
    test_error: float
    misclassified: int
    n_test: int
    train_time: float  # seconds of training in this call
    total_train_time: float  # including earlier sessions of a resumed run
    test_time: float
    batches_done: int
    out: Path
    files: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- helpers


def _say(cfg, *lines):
    if cfg.verbose:
        for line in lines:
            print(line, flush=True)


def _data_digest(x, y):
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(x, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(y, dtype=np.float64).tobytes())
    return h.hexdigest()


def load_network_file(path, var, mode, dtype):
    """A network from a ``.npz`` (:func:`cnn.checkpoint.load_npz`) or MAT-file (``var``)."""
    from .checkpoint import load_npz
    from .matlab import load_cnn

    path = Path(path)
    if not path.exists():  # a folder or FIFO is refused by the loaders, saying what it is
        raise UsageError(f"no such network file: {path}")
    if path.suffix.lower() == ".npz":
        return load_npz(path, mode=mode, dtype=dtype)
    return load_cnn(path, var, mode=mode, dtype=dtype)


def load_data(
    split,
    *,
    synthetic=None,
    subset=None,
    data_dir=None,
    download=True,
    progress=True,
    size=(28, 28),
    verify=True,
):
    """Training or test data for a run: MNIST (first ``subset`` examples) or synthetic.

    Returns ``(x, y, description)``: ``x`` (N, H, W) float64 in [0, 1], ``y`` (N, 10)
    one-hot. Raises :class:`cnn.mnist.MNISTNotFoundError` when the MNIST files are
    missing (and not downloaded), :class:`cnn.mnist.MNISTError` when one fails its
    checksum (``verify``) or is not an MNIST file.
    """
    if synthetic is not None:
        x, y = synthetic_split(split, synthetic, size)
        return x, y, f"synthetic digits ({split} set, {x.shape[0]} images)"
    from . import mnist

    x, y = mnist.load_split(split, data_dir, download=download, progress=progress, verify=verify)
    where = mnist.mnist_dir(data_dir)
    if subset is not None:
        if subset > x.shape[0]:
            raise UsageError(
                f"--{split}-subset {subset} is larger than the {x.shape[0]} MNIST {split} images"
            )
        x, y = x[:subset], y[:subset]
    return x, y, f"MNIST {split} set from {where} ({x.shape[0]} images)"


def _flag_value(setting):
    return {"auto": None, "on": True, "off": False}[setting]


def prepare_output_folder(path, option="--out"):
    """Create ``path`` (and its parents) and check that a file can be written in it.

    Called before any long work, so that an unwritable output fails at once.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    UsageError
        The folder cannot be created or written (the message names ``option``).
    """
    import tempfile

    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{option} {out} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(
            f"cannot create the {option} folder {out}: {exc.strerror or exc}"
        ) from None
    try:
        fd, probe = tempfile.mkstemp(dir=out, prefix=".cnn-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UsageError(
            f"cannot write into the {option} folder {out}: {exc.strerror or exc}"
        ) from None
    return out


@contextlib.contextmanager
def output_folder(path, option="--out"):
    """:func:`prepare_output_folder` for the block: if the block fails (an error,
    Ctrl-C), the folders this call created are removed again when nothing but the
    lock file (``.cnn.lock``) was written into them and no other process holds
    that lock (one that started on the same new folder at the same moment), so a
    refused command leaves nothing behind.

    Yields
    ------
    pathlib.Path
    """
    from .atomic import LOCK_NAME, FolderBusyError, folder_lock

    path = Path(path)
    new = [p for p in (path, *path.parents) if not p.exists()]  # deepest first
    out = prepare_output_folder(path, option)
    try:
        yield out
    except BaseException:
        for folder in new:
            try:
                if [e.name for e in os.scandir(folder)] == [LOCK_NAME]:
                    with folder_lock(folder):  # busy: another process works there
                        os.unlink(folder / LOCK_NAME)
                folder.rmdir()
            except (OSError, FolderBusyError):  # in use, not empty or gone: keep it
                break
        raise


def resume_command(checkpoint, out=None):
    """The command line that resumes from ``checkpoint``."""
    cmd = ["python", "-m", "cnn", "train", "--resume", str(checkpoint)]
    if out is not None and Path(out).resolve() != Path(checkpoint).resolve().parent:
        cmd += ["--out", str(out)]
    return shlex.join(cmd)


@contextlib.contextmanager
def _sigint_to_flag(state):
    """While active, the first Ctrl-C only sets ``state["stop"]``; a second one raises
    ``KeyboardInterrupt`` at once. Does nothing outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if state["stop"]:
            raise KeyboardInterrupt
        state["stop"] = True
        print(
            "\ncnn: Ctrl-C: stopping after the current minibatch and writing a checkpoint "
            "(press Ctrl-C again to stop at once)",
            file=sys.stderr,
            flush=True,
        )

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


# --------------------------------------------------------------------------- the run


def _resolve(cfg):
    """Settings of the run: explicit options, else the checkpoint's, else the defaults."""
    from .checkpoint import load_npz_meta

    settings = {}
    meta = None
    if cfg.resume is not None:
        path = Path(cfg.resume)
        if not path.exists():  # a folder or FIFO: the loader says what it is
            raise UsageError(f"no such checkpoint: {path}")
        meta = load_npz_meta(path)
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise UsageError(
                f"{path} is not a training checkpoint (written by 'cnn train'); "
                f"to start from a network file use --init"
            )
        _check_meta(meta, path)
        stored = meta["settings"]
        for name in _RUN_SETTINGS:
            given = getattr(cfg, name)
            if given is not None and given != stored.get(name):
                opt = "--" + ("lr" if name == "learning_rate" else name.replace("_", "-"))
                raise UsageError(
                    f"{path} was made with {opt} {stored.get(name)}; resuming "
                    f"with {opt} {given} would not continue the same run "
                    f"(leave the option out)"
                )
            settings[name] = stored.get(name)
        settings["epochs"] = cfg.epochs if cfg.epochs is not None else stored["epochs"]
        settings["test_subset"] = (
            cfg.test_subset if cfg.test_subset is not None else stored.get("test_subset")
        )
        settings["out"] = cfg.out if cfg.out is not None else str(path.resolve().parent)
    else:
        for name in _RUN_SETTINGS + ("epochs", "out", "test_subset"):
            v = getattr(cfg, name)
            settings[name] = v if v is not None else DEFAULTS.get(name)
        if cfg.init is not None:
            if cfg.example is not None:
                raise UsageError("give --example or --init, not both")
            if cfg.seed is not None:
                raise UsageError("--seed seeds a new network; it has no effect with --init")
            settings["example"] = None
            settings["learning_rate"] = cfg.learning_rate  # None: the file's
        elif settings["seed"] is None:
            settings["seed"] = int(np.random.SeedSequence().entropy % 2**31)
        if cfg.init_var is not None and cfg.init is None:
            raise UsageError("--init-var needs --init")
    stored_options = (meta or {}).get("options") or {}
    if not isinstance(stored_options, dict):
        stored_options = {}
    kept = []
    for name in _RESUMED_OPTIONS:
        given = getattr(cfg, name)
        if given is None and stored_options.get(name) is not None:
            settings[name] = stored_options[name]
            kept.append(f"--{name.replace('_', '-')} {stored_options[name]}")
        else:
            settings[name] = given
    if settings["checkpoint_every"] is None:
        settings["checkpoint_every"] = DEFAULTS["checkpoint_every"]
    settings["verify"] = cfg.verify
    if cfg.verify and stored_options.get("verify") is False:  # a run on custom MNIST-like data
        settings["verify"] = False
        kept.append("--no-verify")
    settings["kept_options"] = kept
    return settings, meta


def _check_meta(meta, path):
    """The fields of a checkpoint's meta that resuming relies on, with sane values."""

    def count(value, minimum):
        return isinstance(value, int) and not isinstance(value, bool) and minimum <= value <= 2**31

    def number(value):  # a finite float >= 0 (JSON gives int or float)
        return (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and 0 <= value < float("inf")
        )

    settings = meta.get("settings")
    problems = []
    if not isinstance(settings, dict):
        problems.append("settings")
        settings = {}
    for name, value, minimum in (
        ("batches_done", meta.get("batches_done"), 0),
        ("train_examples", meta.get("train_examples"), 1),
        ("settings.epochs", settings.get("epochs"), 0),
        ("settings.batch_size", settings.get("batch_size"), 1),
    ):
        if not count(value, minimum):
            problems.append(name)
    if not isinstance(meta.get("data_sha256"), str):
        problems.append("data_sha256")
    # every stored setting that resuming uses: None where allowed, else its type and range
    valid = {
        "flag": ("auto", "on", "off"),
        "mode": ("faithful", "corrected"),
        "loss": ("auto", "quad", "cros"),
        "dtype": ("float64", "float32"),
    }
    problems += [
        f"settings.{k}"
        for k, ok in valid.items()
        if not isinstance(settings.get(k), str) or settings.get(k) not in ok
    ]
    optional = {
        "synthetic": lambda v: count(v, 1),
        "train_subset": lambda v: count(v, 1),
        "test_subset": lambda v: count(v, 1),
        "seed": lambda v: count(v, 0),
        "example": lambda v: count(v, 1) and v <= 3,
        "init": lambda v: isinstance(v, str),
        "init_var": lambda v: isinstance(v, str),
        "learning_rate": lambda v: number(v) and v > 0,
    }
    problems += [
        f"settings.{k}"
        for k, ok in optional.items()
        if settings.get(k) is not None and not ok(settings.get(k))
    ]
    if not number(meta.get("train_time", 0.0)):
        problems.append("train_time")
    if problems:
        raise UsageError(
            f"{path}: the checkpoint's meta has no valid {', '.join(problems)}; "
            f"it cannot be resumed"
        )


def run_training(cfg, *, callback: Callable | None = None):
    """Run (or resume) a training run as ``python -m cnn train`` does.

    Parameters
    ----------
    cfg : TrainConfig
    callback : callable, optional
        ``callback(net, epoch, batch)`` after each minibatch's update, before the
        checkpoint logic (tests use it to simulate Ctrl-C).

    Returns
    -------
    TrainResult

    Raises
    ------
    UsageError
        Bad options or files (exit 2).
    cnn.mnist.MNISTNotFoundError, cnn.mnist.MNISTError, cnn.matlab.CNNFileError
        Missing or unreadable data or network files (exit 2).
    cnn.NonFiniteError
        NaN/Inf during training (exit 1); the last checkpoint is kept.
    TrainingError
        A checkpoint or result could not be written (exit 1).
    Interrupted
        Ctrl-C: a checkpoint of the last completed minibatch was written (exit 130).
    """
    from .atomic import folder_lock

    s, meta = _resolve(cfg)
    # Fail before the work: the output folders must be writable, and ours alone.
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(output_folder(s["out"], "--out"))
        if s["plots"] is not None:
            stack.enter_context(output_folder(s["plots"], "--plots"))
        with folder_lock(out, "train run"):
            if cfg.resume is None and not cfg.overwrite:
                _refuse_to_overwrite(out, cfg.out)
            return _run_locked(cfg, s, meta, out, callback)


def _run_locked(cfg, s, meta, out, callback):
    from . import backward, training
    from .checkpoint import load_npz, save_npz, write_checkpoint
    from .matlab import save_cnn
    from .network import example_network

    dtype = np.float32 if s["dtype"] == "float32" else np.float64
    resumed_from = Path(cfg.resume) if cfg.resume is not None else None

    # ---- the network
    if resumed_from is not None:
        net = load_npz(resumed_from)
        start = int(meta["batches_done"])
        if len(net.loss_array) != start:
            raise UsageError(
                f"{resumed_from}: loss_array has {len(net.loss_array)} entries "
                f"but the checkpoint says {start} minibatches were done"
            )
        what = f"resumed from {resumed_from} after minibatch {start}"
    else:
        start = 0
        if s["init"] is not None:
            net = load_network_file(s["init"], s["init_var"] or "cnn", s["mode"], dtype)
            if s["learning_rate"] is not None:
                net.learning_rate = float(s["learning_rate"])
            s["learning_rate"] = net.learning_rate
            what = f"from {s['init']}"
        else:
            net = example_network(
                s["example"],
                seed=s["seed"],
                mode=s["mode"],
                learning_rate=s["learning_rate"],
                dtype=dtype,
            )
            what = f"Example {s['example']}, seed {s['seed']}"
        net.loss_func = s["loss"]
    C, H, W = net.input_shape
    if C != 1 or net.n_outputs != 10:
        raise UsageError(
            f"the network takes {C} x {H}x{W} inputs and gives {net.n_outputs} "
            f"outputs; MNIST needs 1 x HxW inputs and 10 outputs"
        )
    if s["synthetic"] is None and (H, W) != (28, 28):
        raise UsageError(
            f"the network takes {H}x{W} images; MNIST images are 28x28 "
            f"(use --synthetic N for other sizes)"
        )

    # ---- the data
    progress = cfg.progress and cfg.verbose
    x, y, train_desc = load_data(
        "train",
        synthetic=s["synthetic"],
        subset=s["train_subset"],
        data_dir=s["data_dir"],
        download=cfg.download,
        progress=progress,
        size=(H, W),
        verify=s["verify"],
    )
    n_test = s["test_subset"]
    if s["synthetic"] is not None and n_test is None:
        n_test = max(10, s["synthetic"] // 5)
    tx, ty, test_desc = load_data(
        "test",
        synthetic=n_test if s["synthetic"] else None,
        subset=n_test,
        data_dir=s["data_dir"],
        download=cfg.download,
        progress=progress,
        size=(H, W),
        verify=s["verify"],
    )
    m = x.shape[0]
    B = s["batch_size"]
    if m % B:
        opt = "--synthetic" if s["synthetic"] is not None else "--train-subset"
        raise UsageError(
            f"--batch-size {B} does not divide the {m} training examples "
            f"(the original needs a whole number of minibatches); try "
            f"{opt} {m - m % B if m >= B else B}"
        )
    n_batches = m // B
    digest = _data_digest(x, y)
    if meta is not None:
        if meta.get("train_examples") != m or meta.get("data_sha256") != digest:
            raise UsageError(
                f"{resumed_from} was made with other training data "
                f"({meta.get('train_examples')} examples, sha256 "
                f"{str(meta.get('data_sha256'))[:12]}...); now {m} examples, "
                f"sha256 {digest[:12]}..."
            )

    # ---- loss and flag, as traincnn will set them
    last_act = net.layers[-1].act_func
    try:
        loss = backward.resolve_loss(net.loss_func, last_act)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if loss == "cros" and last_act not in ("sigm", "soft"):
        raise UsageError(f"--loss cros needs a 'sigm' or 'soft' last layer, not {last_act!r}")
    setting = _flag_value(s["flag"])
    flag = backward.derive_flag(loss, last_act) if setting is None else setting
    epochs = s["epochs"]
    total = epochs * n_batches
    if start > total:
        raise UsageError(
            f"{resumed_from} is at minibatch {start}, past the end of "
            f"{epochs} epoch(s) of {n_batches}; raise --epochs"
        )

    prefix = out / "checkpoint"
    ckpt = prefix.with_name("checkpoint.npz")
    every = s["checkpoint_every"]
    earlier_time = float(meta.get("train_time", 0.0)) if meta else 0.0

    if s["kept_options"]:
        _say(
            cfg,
            "resuming with the options of the run: "
            + ", ".join(s["kept_options"])
            + " (give an option again to change it)",
        )
    _say(
        cfg,
        f"data: {train_desc}; test: {test_desc}",
        f"network ({what}; {net.mode} mode, {np.dtype(net.dtype).name}):",
        *("  " + line for line in net.describe().splitlines()),
        f"loss {loss}{' (auto)' if net.loss_func == 'auto' else ''}, "
        f"CalcLastLayerActDerivative = {int(flag)}"
        f"{' (derived as traincnn does)' if setting is None else ' (forced)'}, "
        f"learning rate {net.learning_rate:g}",
        f"{epochs} epoch(s) of {n_batches} minibatches of {B}"
        + (f"; checkpoints every {every} minibatches" if every else "")
        + f" -> {ckpt}",
    )

    stored_settings = {k: s[k] for k in _RUN_SETTINGS}
    stored_settings["epochs"] = epochs
    stored_settings["test_subset"] = s["test_subset"]
    options = {name: s[name] for name in _RESUMED_OPTIONS}
    options["verify"] = s["verify"]
    state = {
        "stop": False,
        "last_ckpt": resumed_from if start else None,
        "last_done": start,
        "t0": time.perf_counter(),
    }

    def checkpoint(done, finished=False):
        for i, name, arr in net.parameters():  # never store a network that cannot go on
            if not np.isfinite(arr).all():
                raise training.NonFiniteError(
                    f"NaN/Inf in layer {i + 1} ({net.layers[i].type}) {name} after the update "
                    f"of minibatch {done} (epoch {(done - 1) // n_batches + 1}); try a smaller "
                    f"learning rate"
                )
        meta_out = {
            "format": CHECKPOINT_FORMAT,
            "batches_done": done,
            "n_batches_per_epoch": n_batches,
            "epoch": done // n_batches,
            "batch_in_epoch": done % n_batches,
            "epochs": epochs,
            "batch_size": B,
            "finished": finished,
            "train_examples": m,
            "data_sha256": digest,
            "data": train_desc,
            "loss_func": loss,
            "flag": bool(flag),
            "settings": stored_settings,
            "options": options,
            "train_time": earlier_time + time.perf_counter() - state["t0"],
            "written": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        try:
            write_checkpoint(prefix, net, meta_out)
        except OSError as exc:
            raise TrainingError(
                f"cannot write the checkpoint {exc.filename or ckpt}: {exc.strerror or exc}"
            ) from exc
        state["last_ckpt"], state["last_done"] = ckpt, done

    def on_batch(net_, epoch, batch):
        if callback is not None:
            callback(net_, epoch, batch)
        done = epoch * n_batches + batch + 1
        if state["stop"]:
            checkpoint(done)
            raise _StopAtBoundary
        if every and done % every == 0 and done < total:
            checkpoint(done)

    t0 = time.perf_counter()
    state["t0"] = t0
    try:
        # NaN/Inf is reported by traincnn (NonFiniteError), not by numpy's warnings
        with _sigint_to_flag(state), np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            training.traincnn(
                net,
                x,
                y,
                epochs,
                B,
                calc_last_layer_act_derivative=flag,
                verbose=cfg.verbose,
                progress=progress,
                callback=on_batch,
                start_batch=start,
            )
            checkpoint(total, finished=True)
    except _StopAtBoundary:
        done = state["last_done"]
        cmd = resume_command(ckpt, cfg.out)
        raise Interrupted(
            f"interrupted after minibatch {done} of {total}; checkpoint written "
            f"to {ckpt}. Resume with: {cmd}",
            ckpt,
            done,
            cmd,
        ) from None
    except KeyboardInterrupt:
        if state["last_ckpt"] is not None:
            cmd = resume_command(state["last_ckpt"], cfg.out)
            msg = (
                f"interrupted; the last checkpoint ({state['last_ckpt']}, minibatch "
                f"{state['last_done']}) is kept. Resume with: {cmd}"
            )
        else:
            cmd, msg = None, "interrupted before the first checkpoint; nothing was saved"
        raise Interrupted(msg, state["last_ckpt"], state["last_done"], cmd) from None
    except training.NonFiniteError as exc:
        if state["last_ckpt"] is not None:
            note = (
                f" (the last good checkpoint, minibatch {state['last_done']}, is "
                f"{state['last_ckpt']})"
            )
        else:
            note = " (no checkpoint was written)"
        raise type(exc)(str(exc) + note) from None
    train_time = time.perf_counter() - t0
    total_time = earlier_time + train_time

    # ---- test, save, plot
    t1 = time.perf_counter()
    _, pred = training.predictcnn(net, tx)
    test_time = time.perf_counter() - t1
    true = ty.argmax(axis=1)
    wrong = int(np.count_nonzero(pred != true))
    err = wrong / tx.shape[0]
    files = {}
    try:
        files["mat"] = out / "net.mat"
        save_cnn(files["mat"], net)
        files["npz"] = out / "net.npz"
        save_npz(
            files["npz"],
            net,
            {
                "test_error": err,
                "misclassified": wrong,
                "n_test": int(tx.shape[0]),
                "settings": stored_settings,
                "train_time": total_time,
            },
        )
    except OSError as exc:
        raise TrainingError(f"cannot save the network into {out}: {exc}") from exc
    files.update(_write_plots(net, out, s["plots"], tx, true, pred, loss))
    files["summary"] = _write_summary(
        out / "run.json",
        {
            "test_error": err,
            "misclassified": wrong,
            "n_test": int(tx.shape[0]),
            "train_time": total_time,
            "test_time": test_time,
            "batches_done": total,
            "data": train_desc,
            "test_data": test_desc,
            "loss_func": loss,
            "flag": bool(flag),
            "settings": stored_settings,
            "loss_array_last": net.loss_array[-1:],
        },
    )
    if train_time < total_time - 1e-9:
        _say(cfg, f"training time: {train_time:.1f} s ({total_time:.1f} s in all sessions)")
    else:
        _say(cfg, f"training time: {train_time:.1f} s")
    _say(
        cfg,
        f"test error is {err:.4f} ({wrong} of {tx.shape[0]} misclassified); "
        f"test time {test_time:.1f} s",
        "saved: " + ", ".join(str(p) for p in files.values()),
    )
    return TrainResult(
        net=net,
        test_error=err,
        misclassified=wrong,
        n_test=int(tx.shape[0]),
        train_time=train_time,
        total_train_time=total_time,
        test_time=test_time,
        batches_done=total,
        out=out,
        files=files,
    )


def _refuse_to_overwrite(folder, out):
    """A new run must not silently replace a finished run nor the checkpoint of an
    interrupted one (called with the folder locked, so no other run is writing it)."""
    from .checkpoint import load_npz_meta
    from .matlab import CNNFileError

    ckpt = Path(folder) / "checkpoint.npz"
    finished = [n for n in ("run.json", "net.npz", "net.mat") if (Path(folder) / n).is_file()]
    meta = None
    if ckpt.is_file():
        try:
            meta = load_npz_meta(ckpt)
        except (CNNFileError, OSError):
            meta = None  # not a readable checkpoint: nothing to resume from
    if isinstance(meta, dict) and meta.get("format") == CHECKPOINT_FORMAT and meta.get("finished"):
        finished.append("checkpoint.npz")
    if finished:
        raise UsageError(
            f"--out {folder} holds a finished run ({', '.join(finished)}); give "
            f"another --out, or --overwrite to replace it"
        )
    if isinstance(meta, dict) and meta.get("format") == CHECKPOINT_FORMAT:
        raise UsageError(
            f"{ckpt} holds an unfinished run (minibatch {meta.get('batches_done')} "
            f"of {meta.get('epochs')} epoch(s) x {meta.get('n_batches_per_epoch')}"
            f"); resume it with: {resume_command(ckpt, out)}; or give another "
            f"--out, or --overwrite to start again"
        )


def _write_summary(path, summary):
    import json

    from .atomic import write_text

    try:
        write_text(path, json.dumps(summary, indent=2) + "\n")
    except OSError as exc:
        raise TrainingError(f"cannot write {path}: {exc}") from exc
    return path


def _write_plots(net, out, plots_dir, tx, true, pred, loss):
    """loss.png in ``out``; with ``plots_dir`` also the confusion matrix, kernels and maps."""
    files = {}
    try:
        from . import plots
    except ImportError:  # pragma: no cover - plots is part of the package
        return files
    ylabel = "cross-entropy" if loss == "cros" else "quadratic loss"
    if net.loss_array:
        files["loss_png"] = Path(
            plots.loss_curves(
                {"minibatch loss": list(net.loss_array)},
                out / "loss.png",
                smooth=min(50, max(1, len(net.loss_array) // 20)),
                title="training loss (each minibatch, before its update)",
                ylabel=ylabel,
            )
        )
    if plots_dir is not None:
        files.update(write_test_plots(net, plots_dir, tx, true, pred))
    return files


def write_test_plots(net, plots_dir, tx, true, pred):
    """Confusion matrix, first-layer kernels and the feature maps of the first test digit."""
    from . import plots

    d = Path(plots_dir)
    d.mkdir(parents=True, exist_ok=True)
    files = {
        "confusion_png": Path(
            plots.confusion_matrix(
                true,
                pred,
                d / "confusion.png",
                title=f"test error {np.count_nonzero(true != pred) / len(true):.4f}",
            )
        )
    }
    if any(layer.type == "c" for layer in net.layers):
        files["kernels_png"] = Path(plots.first_layer_kernels(net, d / "kernels.png"))
    files["feature_maps_png"] = Path(
        plots.feature_maps(net, tx[0], d / "feature_maps.png", true_label=int(true[0]))
    )
    return files

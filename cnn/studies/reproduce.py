"""The reproduction of the original's two Octave runs (one epoch of Example 3 on full MNIST).

The runs (flag as derived, flag forced on; ``rand('seed', 59223)``) are stored
in ``cnn/data/example3_reference.npz``, shipped with the package (no pickle):
:func:`write_reference_fixture` builds it from the Octave MAT-files,
:func:`load_reference` reads either, :func:`reproduce_reference` retrains from
the same initial weights and compares, :func:`format_reproduction` makes the table.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ..atomic import atomic_write
from ..network import example_network
from ..training import predictcnn, traincnn
from .flag import BATCH_SIZE, params_sha256

# --------------------------------------------------------------------------- reproduction

REFERENCE_FORMAT = "cnn-example3-reference-1"
REFERENCE_FLAGS = {"derived": False, "forced_on": True}


def default_reference_path():
    """``cnn/data/example3_reference.npz``: the reference runs, shipped as package data."""
    return Path(__file__).resolve().parents[1] / "data" / "example3_reference.npz"


def _flag_key(flag):
    if flag in (None, False, 0, "derived", "off"):
        return "derived"
    if flag in (True, 1, "on", "forced_on", "forced on"):
        return "forced_on"
    raise ValueError(
        f"flag must be None/'derived' (flag off, as traincnn derives it) or "
        f"True/'on' (forced on), got {flag!r}"
    )


def _params_dict(net):
    return {
        f"layer{i + 1}.{name}": np.array(a, dtype=np.float64) for i, name, a in net.parameters()
    }


def _set_params(net, params, where):
    for i, name, a in net.parameters():
        key = f"layer{i + 1}.{name}"
        if key not in params:
            raise ValueError(f"{where}: missing {key}")
        v = np.asarray(params[key], dtype=np.float64)
        if v.shape != a.shape:
            raise ValueError(f"{where}: {key} has shape {v.shape}, expected {a.shape}")
        a[...] = v
    return net


def write_reference_fixture(mat_paths, path):
    """Write the Octave reference runs into one pickle-free ``.npz``.

    Parameters
    ----------
    mat_paths : sequence of str or Path
        The reference MAT-files (``example3_seed59223_init.mat``,
        ``example3_seed59223_flag_forced_on.mat``): each holds ``cnn_init``,
        the trained ``cnn``, ``err``, ``pred``, ``la``, ``flag``, ``t_train``.
    path : str or Path
        The ``.npz`` to write (compressed). It holds ``init.layer{l}.{K,W,b}``
        (the initial parameters, Python layouts, MATLAB layer numbers ``l``)
        and, for ``derived`` (flag 0) and ``forced_on`` (flag 1): ``err``,
        ``pred`` (0-based labels), ``loss_array`` and ``layer{l}.{K,W,b}``
        (the trained parameters), plus a JSON ``meta`` string.

    Returns
    -------
    Path
    """
    arrays = {}
    init_hash = None
    meta = {"format": REFERENCE_FORMAT, "network": "Example 3", "runs": {}}
    for p in mat_paths:
        ref = _load_reference_mat(p)
        key = _flag_key(bool(ref["flag"]))
        h = params_sha256(ref["init"])
        if init_hash is not None and h != init_hash:
            raise ValueError(f"{p}: its cnn_init differs from the other file's")
        init_hash = h
        for k, v in _params_dict(ref["init"]).items():
            arrays[f"init.{k}"] = v
        arrays[f"{key}.err"] = np.array(ref["err"])
        arrays[f"{key}.pred"] = ref["pred"].astype(np.uint8)
        arrays[f"{key}.loss_array"] = ref["loss_array"]
        for k, v in ref["params"].items():
            arrays[f"{key}.{k}"] = v
        meta["runs"][key] = {
            "source": Path(p).name,
            "flag": int(ref["flag"]),
            "err": ref["err"],
            "t_train_octave": ref.get("t_train"),
            "seed": ref.get("seed"),
            "ntrain": ref.get("ntrain"),
        }
    meta["init_sha256"] = init_hash
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as fh:
        np.savez_compressed(fh, meta=np.array(json.dumps(meta)), **arrays)
    return path


def _load_reference_mat(path):
    from ..matlab import load_cnn, loadmat_checked

    d = loadmat_checked(
        path, variable_names=["err", "pred", "la", "flag", "t_train", "seed", "ntrain"]
    )
    trained = load_cnn(path, var="cnn")
    out = {
        "init": load_cnn(path, var="cnn_init"),
        "err": float(np.ravel(d["err"])[0]),
        "pred": np.ravel(d["pred"]).astype(np.int64) - 1,
        "loss_array": np.ravel(d["la"]).astype(np.float64),
        "params": _params_dict(trained),
        "source": str(path),
    }
    out["flag"] = (
        bool(np.ravel(d["flag"])[0])
        if "flag" in d
        else bool(trained.calc_last_layer_act_derivative)
    )
    for k in ("t_train", "seed", "ntrain"):
        if k in d:
            out[k] = float(np.ravel(d[k])[0])
    return out


def load_reference(ref, flag):
    """The reference run for ``flag`` from a MAT-file or the fixture ``.npz``.

    Returns
    -------
    dict
        ``init`` (the initial CNN), ``err``, ``pred`` (0-based), ``loss_array``,
        ``params`` (trained, ``{"layer{l}.{K|W|b}": array}``), ``flag``,
        ``source``.
    """
    key = _flag_key(flag)
    ref = Path(ref)
    if not ref.is_file():
        raise FileNotFoundError(f"no such reference file: {ref}")
    if ref.suffix.lower() == ".mat":
        out = _load_reference_mat(ref)
        if _flag_key(out["flag"]) != key:
            raise ValueError(
                f"{ref} holds the run with the flag "
                f"{'forced on' if out['flag'] else 'off (derived)'}, not {key}"
            )
        return out
    with np.load(ref, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        if meta.get("format") != REFERENCE_FORMAT:
            raise ValueError(f"{ref}: not a reference fixture (format {meta.get('format')!r})")
        if f"{key}.err" not in z.files:
            raise ValueError(f"{ref} has no {key} run")
        init = {k[5:]: z[k] for k in z.files if k.startswith("init.")}
        params = {k[len(key) + 1 :]: z[k] for k in z.files if k.startswith(key + ".layer")}
        out = {
            "err": float(z[f"{key}.err"]),
            "pred": z[f"{key}.pred"].astype(np.int64),
            "loss_array": z[f"{key}.loss_array"],
            "params": params,
            "flag": REFERENCE_FLAGS[key],
            "source": str(ref),
            "t_train": meta["runs"][key].get("t_train_octave"),
        }
    out["init"] = _set_params(example_network(3, seed=0), init, str(ref))
    return out


def _max_rel(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    scale = float(np.abs(b).max())
    return float(np.abs(a - b).max()) / scale if scale > 0 else float(np.abs(a - b).max())


def reproduce_reference(
    ref_path_or_npz, flag, data_dir=None, *, data=None, download=True, progress=False
):
    """Retrain the Octave reference run from its initial weights and compare.

    Parameters
    ----------
    ref_path_or_npz : str or Path
        A reference MAT-file or the fixture written by
        :func:`write_reference_fixture`.
    flag : None, False, True, "derived" or "on"
        Which run: the flag as traincnn derives it (off), or forced on.
    data_dir : str, optional
        MNIST folder (see :func:`cnn.mnist.mnist_dir`).
    data : tuple, optional
        ``(train_x, train_y, test_x, test_y)`` instead of loading MNIST.
    download : bool
        Download MNIST if it is missing.

    Returns
    -------
    dict
        ``flag``, ``err``/``ref_err``, ``misclassified``/``ref_misclassified``,
        ``pred_identical``, ``pred_differ`` (count), ``loss_array_max_rel``
        (elementwise), ``params_max_rel`` (largest over arrays of
        ``max|a - b| / max|b|``), ``train_seconds``, ``ref_train_seconds``,
        ``match`` (errors and predictions equal, losses and parameters within
        1e-9 relative), ``pred`` (0-based) and the trained ``net``.
    """
    ref = load_reference(ref_path_or_npz, flag)
    if data is None:
        from ..mnist import load_mnist

        data = load_mnist(data_dir, download=download, progress=progress)
    train_x, train_y, test_x, test_y = data
    net = ref["init"].copy()
    t0 = time.perf_counter()
    traincnn(
        net,
        train_x,
        train_y,
        1,
        BATCH_SIZE,
        calc_last_layer_act_derivative=True if ref["flag"] else None,
        verbose=False,
    )
    seconds = time.perf_counter() - t0
    _, pred = predictcnn(net, test_x)
    true = np.asarray(test_y).argmax(axis=1)
    wrong = int(np.count_nonzero(pred != true))
    la = np.asarray(net.loss_array, dtype=float)
    la_ref = np.asarray(ref["loss_array"], dtype=float)
    la_rel = (
        float(np.max(np.abs(la - la_ref) / np.abs(la_ref)))
        if la.shape == la_ref.shape
        else float("inf")
    )
    mine = _params_dict(net)
    p_rel = max(_max_rel(mine[k], v) for k, v in ref["params"].items())
    ref_wrong = int(round(ref["err"] * len(true)))
    same_pred = ref["pred"].shape == pred.shape and bool(np.array_equal(ref["pred"], pred))
    res = {
        "flag": "forced on" if ref["flag"] else "off (derived)",
        "err": wrong / len(true),
        "ref_err": ref["err"],
        "misclassified": wrong,
        "ref_misclassified": ref_wrong,
        "pred_identical": same_pred,
        "pred_differ": int(np.count_nonzero(ref["pred"] != pred))
        if ref["pred"].shape == pred.shape
        else len(pred),
        "loss_array_max_rel": la_rel,
        "params_max_rel": p_rel,
        "train_seconds": seconds,
        "ref_train_seconds": ref.get("t_train"),
        "source": ref["source"],
    }
    res["match"] = bool(wrong == ref_wrong and same_pred and la_rel <= 1e-9 and p_rel <= 1e-9)
    res["pred"] = pred
    res["net"] = net
    return res


def format_reproduction(results):
    """Markdown table of :func:`reproduce_reference` results."""
    lines = [
        "| run | test error (Python) | Octave | misclassified | predictions "
        "| loss_array max rel diff | trained parameters max rel diff | training s "
        "(Python / Octave) | match |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        pred = "identical" if r["pred_identical"] else f"{r['pred_differ']} differ"
        oct_s = "n/a" if r.get("ref_train_seconds") is None else f"{r['ref_train_seconds']:.0f}"
        lines.append(
            f"| flag {r['flag']} | {r['err']:.4f} | {r['ref_err']:.4f} "
            f"| {r['misclassified']} / {r['ref_misclassified']} | {pred} "
            f"| {r['loss_array_max_rel']:.1e} | {r['params_max_rel']:.1e} "
            f"| {r['train_seconds']:.0f} / {oct_s} "
            f"| {'yes' if r['match'] else '**NO**'} |"
        )
    return "\n".join(lines) + "\n"

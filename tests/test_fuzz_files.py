"""Network files that are random, truncated or corrupted never crash the loaders.

``cnn.matlab.load_cnn`` (MAT-files) and ``cnn.checkpoint.load_npz`` (``.npz``)
must either return a consistent network or raise ``cnn.matlab.CNNFileError``
(a ``ValueError``) with a message; no other exception, no crash, no hang.
Hand-made structs with inconsistent fields give a ``CNNFileError`` naming the
field.
"""

import atexit
import io
import json
import os
import shutil
import signal
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cnn
from cnn.checkpoint import load_npz, load_npz_meta, save_npz
from cnn.matlab import CNNFileError, load_cnn, save_cnn, to_matlab_struct

FUZZ = settings(
    max_examples=150,
    deadline=2000,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

_DIR = Path(tempfile.mkdtemp(prefix="cnn-fuzz-"))
atexit.register(shutil.rmtree, _DIR, ignore_errors=True)  # however the session ends


@pytest.fixture(scope="module", autouse=True)
def _remove_dir():
    yield
    shutil.rmtree(_DIR, ignore_errors=True)


def _network():
    """A small net with every layer type: i - c(tanh 2, 3x3) - p2 - f(tanh 4) - f(sigm 3)."""
    net = cnn.initcnn((8, 8), 0.05, seed=3)
    cnn.add_conv_layer(net, 2, 3, "tanh")
    cnn.add_pool_layer(net, 2)
    cnn.add_fc_layer(net, 4, "tanh")
    cnn.add_fc_layer(net, 3, "sigm")
    net.loss_array = [0.5, 0.25]
    return net


NET = _network()


def _bytes_of(save, suffix):
    path = _DIR / f"valid{suffix}"
    save(path)
    return path.read_bytes()


MAT = _bytes_of(lambda p: save_cnn(p, NET), ".mat")
NPZ = _bytes_of(lambda p: save_npz(p, NET, {"batches_done": 2}), ".npz")


@contextmanager
def _time_limit(seconds):
    """Fail (instead of hanging) if the block runs longer than ``seconds``."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGALRM"):
        yield
        return

    def handler(signum, frame):
        raise TimeoutError(f"loader still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, handler)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _check_consistent(net):
    """A loaded network must be usable: shapes agree and a forward pass runs."""
    assert isinstance(net, cnn.CNN)
    assert net.layers[0].type == "i"
    for _, _, a in net.parameters():
        assert np.isfinite(a).all()
    C, H, W = net.input_shape
    x = np.random.default_rng(0).random((2, C, H, W))
    cnn.ffcnn(net, x)
    out = net.layers[-1].outputs if net.layers[-1].type == "f" else net.layers[-1].featuremaps
    assert out.shape[0] == 2
    assert np.prod(out.shape[1:]) == net.n_outputs


def _load(data, suffix, loader):
    """Write ``data`` to a file and load it: the network, or the CNNFileError."""
    fd, name = tempfile.mkstemp(suffix=suffix, dir=_DIR)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        with _time_limit(20):
            try:
                net = loader(name)
            except CNNFileError as exc:
                assert isinstance(exc, ValueError)
                assert str(exc)
                return exc
        _check_consistent(net)
        return net
    finally:
        os.unlink(name)


def _load_mat(path):
    return load_cnn(path, "cnn")


def _load_npz(path):
    net = load_npz(path)
    load_npz_meta(path)
    return net


LOADERS = {".mat": (MAT, _load_mat), ".npz": (NPZ, _load_npz)}


def test_valid_files_load():
    for suffix, (data, loader) in LOADERS.items():
        net = _load(data, suffix, loader)
        assert isinstance(net, cnn.CNN)
        for (_, _, a), (_, _, b) in zip(net.parameters(), NET.parameters()):
            np.testing.assert_array_equal(a, b)
        assert net.loss_array == NET.loss_array


@pytest.mark.parametrize("suffix", [".mat", ".npz"])
@FUZZ
@given(data=st.binary(max_size=4096))
def test_random_bytes(suffix, data):
    _load(data, suffix, LOADERS[suffix][1])


@pytest.mark.parametrize("suffix", [".mat", ".npz"])
@FUZZ
@given(frac=st.floats(0.0, 1.0, exclude_max=True))
def test_truncated(suffix, frac):
    valid, loader = LOADERS[suffix]
    result = _load(valid[: int(frac * len(valid))], suffix, loader)
    assert isinstance(result, CNNFileError)


@pytest.mark.parametrize("suffix", [".mat", ".npz"])
@FUZZ
@given(pos=st.floats(0.0, 1.0, exclude_max=True), value=st.integers(0, 255))
def test_one_byte_changed(suffix, pos, value):
    valid, loader = LOADERS[suffix]
    i = int(pos * len(valid))
    data = bytearray(valid)
    data[i] = value if value != data[i] else (value + 1) % 256
    _load(bytes(data), suffix, loader)


@pytest.mark.parametrize("suffix", [".mat", ".npz"])
@FUZZ
@given(start=st.floats(0.0, 1.0, exclude_max=True), junk=st.binary(min_size=1, max_size=64))
def test_span_overwritten(suffix, start, junk):
    valid, loader = LOADERS[suffix]
    i = int(start * len(valid))
    data = (valid[:i] + junk + valid[i + len(junk) :])[: len(valid)]
    _load(data, suffix, loader)


def _central_directory(data, member):
    """Offset of the zip central-directory record of ``member`` in ``data``."""
    name = member.encode()
    i = data.find(b"PK\x01\x02")
    while i >= 0:
        n = int.from_bytes(data[i + 28 : i + 30], "little")
        if data[i + 46 : i + 46 + n] == name:
            return i
        i = data.find(b"PK\x01\x02", i + 4)
    raise AssertionError(f"no central-directory record for {member}")


@pytest.mark.parametrize("member", ["header.npy", "struct.npy", "meta.npy"])
@pytest.mark.parametrize(
    "field, offset, value",
    [
        ("compression method", 10, 0xFF),  # NotImplementedError: compression not supported
        ("flags: encrypted", 8, 0x01),  # RuntimeError: encrypted, password required
        ("flags: patched data", 8, 0x20),  # NotImplementedError: compressed patched data
    ],
)
def test_corrupt_zip_directory_of_json_members(member, field, offset, value):
    """The single-byte corruptions found by the fuzzer, as fixed cases."""
    data = bytearray(NPZ)
    data[_central_directory(NPZ, member) + offset] = value
    result = _load(bytes(data), ".npz", _load_npz)
    assert isinstance(result, CNNFileError)


# --------------------------------------------------------------------------- hand-made structs


def _struct():
    return to_matlab_struct(NET, runtime=False)


def _layer(s, l):
    """Layer ``l`` (MATLAB 1-based) of a struct from to_matlab_struct."""
    return s["layers"][0, l - 1]


def _save_struct(s, name):
    path = _DIR / name
    scipy.io.savemat(path, {"cnn": s})
    return path


def _k_wrong_size(s):
    _layer(s, 2)["K"] = _layer(s, 2)["K"][:, :, :1]


def _w_wrong_size(s):
    _layer(s, 4)["W"] = _layer(s, 4)["W"][:, :-1]


def _b_wrong_size(s):
    _layer(s, 5)["b"] = np.zeros((2, 1))


def _inputs_mismatch(s):
    _layer(s, 4)["no_of_inputs"] = 7.0


def _unknown_act(s):
    _layer(s, 4)["act_func"] = "relu"


def _after_fc(s):
    layers = list(s["layers"][0]) + [dict(_layer(s, 2))]
    c = np.empty((1, len(layers)), dtype=object)
    for i, L in enumerate(layers):
        c[0, i] = L
    s["layers"] = c
    s["no_of_layers"] = float(len(layers))


def _n_layers_mismatch(s):
    s["no_of_layers"] = 9.0


def _prev_maps_mismatch(s):
    _layer(s, 2)["prev_layer_no_featuremaps"] = 3.0


def _kernel_too_large(s):
    _layer(s, 2)["kernel_height"] = 12.0


def _pool_rate_zero(s):
    _layer(s, 3)["subsample_rate"] = 0.0


def _pool_method(s):
    _layer(s, 3)["subsample_method"] = "max "


def _unknown_type(s):
    _layer(s, 3)["type"] = "x"


def _missing_w(s):
    del _layer(s, 5)["W"]


def _nan_in_k(s):
    _layer(s, 2)["K"][0, 0, 0] = np.nan


def _bad_lr(s):
    s["learning_rate"] = -1.0


def _bad_flag(s):
    s["CalcLastLayerActDerivative"] = 2.0


def _bad_loss(s):
    s["loss_func"] = "xent"


def _fractional_maps(s):
    _layer(s, 2)["no_featuremaps"] = 2.5


def _text_for_number(s):
    _layer(s, 4)["no_of_nodes"] = "four"


BAD_STRUCTS = [
    (_k_wrong_size, r"layers\{2\}\.K"),
    (_w_wrong_size, r"layers\{4\}\.W"),
    (_b_wrong_size, r"layers\{5\}\.b"),
    (_inputs_mismatch, r"layers\{4\}\.no_of_inputs"),
    (_unknown_act, r"layers\{4\}\.act_func"),
    (_after_fc, r"layers\{6\}.*FC layer"),
    (_n_layers_mismatch, r"no_of_layers"),
    (_prev_maps_mismatch, r"layers\{2\}\.prev_layer_no_featuremaps"),
    (_kernel_too_large, r"layers\{2\}.*kernel"),
    (_pool_rate_zero, r"layers\{3\}\.subsample_rate"),
    (_pool_method, r"layers\{3\}\.subsample_method"),
    (_unknown_type, r"layers\{3\}\.type"),
    (_missing_w, r"layers\{5\}.*'W'"),
    (_nan_in_k, r"layers\{2\}\.K.*NaN"),
    (_bad_lr, r"learning_rate"),
    (_bad_flag, r"CalcLastLayerActDerivative"),
    (_bad_loss, r"loss_func"),
    (_fractional_maps, r"layers\{2\}\.no_featuremaps"),
    (_text_for_number, r"layers\{4\}\.no_of_nodes"),
]


@pytest.mark.parametrize("mutate, field", BAD_STRUCTS, ids=[f.__name__[1:] for f, _ in BAD_STRUCTS])
def test_inconsistent_mat_struct_names_the_field(mutate, field):
    s = _struct()
    mutate(s)
    path = _save_struct(s, f"bad{mutate.__name__}.mat")
    with pytest.raises(CNNFileError, match=field):
        load_cnn(path, "cnn")


def _npz_with(struct_json=None, header=None, drop=(), extra=None):
    """The valid .npz with its JSON entries replaced / members dropped."""
    with np.load(io.BytesIO(NPZ), allow_pickle=False) as z:
        members = {k: z[k] for k in z.files if k not in drop}
    if struct_json is not None:
        members["struct"] = np.array(json.dumps(struct_json))
    if header is not None:
        members["header"] = np.array(json.dumps(header))
    members.update(extra or {})
    buf = io.BytesIO()
    np.savez(buf, **members)
    return buf.getvalue()


def _npz_struct():
    with np.load(io.BytesIO(NPZ), allow_pickle=False) as z:
        return json.loads(str(z["struct"]))


def _npz_cases():
    cases = []
    s = _npz_struct()
    s["layers"][3]["act_func"] = "relu"
    cases.append(("act_func", _npz_with(s), r"layers\{4\}\.act_func"))
    s = _npz_struct()
    s["layers"][3]["no_of_inputs"] = 7
    cases.append(("no_of_inputs", _npz_with(s), r"layers\{4\}\.no_of_inputs"))
    s = _npz_struct()
    s["layers"].append(dict(s["layers"][1]))
    s["no_of_layers"] = 6
    cases.append(("after_fc", _npz_with(s), r"layers\{6\}.*FC layer"))
    cases.append(("K_missing", _npz_with(drop=("layers{2}.K",)), r"layers\{2\}.*'K'"))
    cases.append(
        ("K_size", _npz_with(extra={"layers{2}.K": np.zeros((3, 3, 1))}), r"layers\{2\}\.K")
    )
    cases.append(("format", _npz_with(header={"format": "other"}), r"format"))
    cases.append(("struct_not_json", _npz_with(extra={"struct": np.array("{nope")}), r"struct"))
    cases.append(("struct_array", _npz_with(extra={"struct": np.arange(3)}), r"struct"))
    cases.append(("layers_not_list", _npz_with({"layers": 5}), r"layers"))
    cases.append(("no_header", _npz_with(drop=("header",)), r"header"))
    return cases


@pytest.mark.parametrize("name, data, field", _npz_cases(), ids=[c[0] for c in _npz_cases()])
def test_inconsistent_npz_names_the_field(name, data, field):
    path = _DIR / f"bad_{name}.npz"
    path.write_bytes(data)
    with pytest.raises(CNNFileError, match=field):
        load_npz(path)

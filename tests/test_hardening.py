"""Hostile files never crash, exhaust or mislead; checkpoints never disagree; divergence stops.

* the bomb and crash table: MAT variables nested 20,000 and 100,000 deep (which
  crash SciPy's reader), MAT and .npz members declaring gigabytes (a zero-filled
  2 GiB member compresses to 2 MB): each refused with our error, in a
  subprocess under a memory limit (``resource.setrlimit``), within seconds;
* parameters stored transposed or reshaped are refused (the element count
  alone would pass);
* the bad-file table: a file that is not a network gets one line saying what
  it is, never NumPy's ``allow_pickle`` advice, through the API and the CLI;
* the ``.npz`` and ``.mat`` of a checkpoint never disagree, even when a write
  fails between the two;
* the divergence guard stops ``--lr 1e6`` and never trips on normal runs.
"""

import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cnn
import cnn.guard
from cnn import cli, train_run
from cnn.checkpoint import (
    load_npz,
    load_npz_meta,
    save_npz,
    verify_checkpoint,
    write_checkpoint,
    write_mat_of,
)
from cnn.matlab import CNNFileError, load_cnn, to_matlab_struct

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bombs  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def _network():
    """i(8x9) - c(tanh 2, 3x2) - p2 - f(tanh 4) - f(sigm 3): non-square kernels and W."""
    net = cnn.initcnn((8, 9), 0.05, seed=3)
    cnn.add_conv_layer(net, 2, (3, 2), "tanh")
    cnn.add_pool_layer(net, 2)
    cnn.add_fc_layer(net, 4, "tanh")
    cnn.add_fc_layer(net, 3, "sigm")
    net.loss_array = [0.5, 0.25]
    return net


NET = _network()


def _struct():
    return to_matlab_struct(NET, runtime=False)


def _layer(s, l):
    return s["layers"][0, l - 1]


def _npz_bytes(tmp_path, **replace):
    """The network's .npz with members replaced (name -> array or raw .npy bytes)."""
    path = tmp_path / "net.npz"
    save_npz(path, NET)
    with np.load(path, allow_pickle=False) as z:
        members = {k: z[k] for k in z.files}
    out = tmp_path / "changed.npz"
    with zipfile.ZipFile(out, "w") as zf:
        for k, v in {**members, **replace}.items():
            if isinstance(v, bytes):
                zf.writestr(f"{k}.npy", v)
            else:
                with zf.open(f"{k}.npy", "w") as f:
                    np.lib.format.write_array(f, np.asarray(v), allow_pickle=False)
    return out


def _one_line(msg):
    assert "\n" not in msg.strip(), msg
    assert "allow_pickle" not in msg, msg
    assert len(msg) < 400, msg


# --------------------------------------------------------------------------- exact shapes


@pytest.mark.parametrize(
    "layer, key, change, accepted",
    [
        (4, "W", lambda a: a.T, False),  # 24x4 instead of 4x24
        (2, "K", lambda a: a.transpose(1, 0, 2), False),  # kw x kh x M
        (2, "K", lambda a: a.reshape(6, 2, order="F"), False),  # (kh*kw) x M
        (2, "K", lambda a: a.reshape(3, 4, order="F"), False),  # kh x (kw*M)
        (2, "b", lambda a: a.reshape(2, 1), True),  # a column: same values
        (2, "K", lambda a: a[..., None], True),  # a trailing singleton
        (5, "b", lambda a: a.reshape(1, 3), True),
    ],
    ids=["W-transposed", "K-kw-kh", "K-flat", "K-wide", "b-column", "K-4d", "fc-b-row"],
)
def test_parameter_shapes_are_checked_exactly(tmp_path, layer, key, change, accepted):
    s = _struct()
    original = _layer(s, layer)[key]
    _layer(s, layer)[key] = change(original)
    scipy.io.savemat(tmp_path / "n.mat", {"cnn": s})
    npz = _npz_bytes(tmp_path, **{f"layers{{{layer}}}.{key}": change(original)})
    for path, load in ((tmp_path / "n.mat", load_cnn), (npz, load_npz)):
        if accepted:
            net = load(path)
            for (_, _, a), (_, _, b) in zip(net.parameters(), NET.parameters(), strict=True):
                np.testing.assert_array_equal(a, b)
        else:
            with pytest.raises(CNNFileError, match=rf"layers\{{{layer}\}}\.{key} has shape"):
                load(path)


def test_transposed_w_message_says_so(tmp_path):
    s = _struct()
    _layer(s, 4)["W"] = _layer(s, 4)["W"].T
    scipy.io.savemat(tmp_path / "n.mat", {"cnn": s})
    with pytest.raises(CNNFileError, match=r"shape 24x4, expected 4x24 \(stored transposed\?\)"):
        load_cnn(tmp_path / "n.mat")


@pytest.mark.parametrize(
    "value", ["text", np.array([1 + 2j, 3]), np.ones((2, 3))], ids=["string", "complex", "matrix"]
)
def test_bad_loss_array(tmp_path, value):
    s = _struct()
    s["loss_array"] = value
    scipy.io.savemat(tmp_path / "n.mat", {"cnn": s})
    with pytest.raises(CNNFileError, match="loss_array"):
        load_cnn(tmp_path / "n.mat")
    with pytest.raises(CNNFileError, match="loss_array"):
        load_npz(_npz_bytes(tmp_path, loss_array=np.asarray(value)))


@pytest.mark.parametrize(
    "where, value",
    [
        ("top", None),
        ("top", "x"),
        ("top", [1, 2]),
        ("top", {"a": 1}),
        ("layer", None),
        ("layer", "x"),
        ("layer", [[1], [2, 3]]),
        ("layer", 1e400),
        ("layer", 10**40),
    ],
)
def test_null_or_wrong_type_in_the_npz_struct(tmp_path, where, value):
    path = tmp_path / "net.npz"
    save_npz(path, NET)
    with np.load(path, allow_pickle=False) as z:
        top = json.loads(str(z["struct"]))
    for key in list(top if where == "top" else top["layers"][1]):
        t = json.loads(json.dumps(top))
        (t if where == "top" else t["layers"][1])[key] = value
        changed = _npz_bytes(tmp_path, struct=np.array(json.dumps(t)))
        try:
            load_npz(changed)
        except CNNFileError as exc:
            _one_line(str(exc))


# --------------------------------------------------------------------------- bomb table

_BOMB_SCRIPT = r"""
import json, os, resource, sys, time
sys.setrecursionlimit(10000)
from cnn.checkpoint import load_npz
from cnn.matlab import CNNFileError, load_cnn
vm = int(next(l for l in open('/proc/self/status') if l.startswith('VmSize')).split()[1]) * 1024
limit = vm + (768 << 20)
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
for path in sys.argv[1:]:
    t = time.perf_counter()
    try:
        (load_npz if path.endswith('.npz') else load_cnn)(path)
        kind, msg = 'loaded', ''
    except BaseException as exc:
        kind, msg = type(exc).__name__, str(exc)
    print(json.dumps({'path': os.path.basename(path), 'kind': kind, 'msg': msg,
                      'seconds': time.perf_counter() - t}), flush=True)
"""


def _env():
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO),
        OPENBLAS_NUM_THREADS="1",
        OMP_NUM_THREADS="1",
        NUMBA_NUM_THREADS="1",
    )
    env.pop("PYTHONSTARTUP", None)
    return env


@pytest.fixture(scope="module")
def bombs(tmp_path_factory):
    d = tmp_path_factory.mktemp("bombs")
    files = {}
    for depth in (20_000, 100_000):
        for kind in ("cell", "struct"):
            files[f"{kind}{depth}.mat"] = (_bombs.nested_mat(depth, kind), "nested more than")
    s = _struct()
    s["junk"] = _bombs.MARKER  # an ignored field
    files["zero2g_ignored_field.mat"] = (_bombs.mat_with_zero_member(s), "2.0 GiB")
    s = _struct()
    _layer(s, 2)["featuremaps"] = _bombs.MARKER  # an ignored runtime field of a layer
    files["zero2g_featuremaps.mat"] = (_bombs.mat_with_zero_member(s), "2.0 GiB")
    s = _struct()
    _layer(s, 2)["K"] = _bombs.MARKER
    files["zero2g_K.mat"] = (_bombs.mat_with_zero_member(s), "2.0 GiB")
    for name, member, shape, expect in (
        ("loss_array_2p28.npz", "loss_array", (2**28,), "2048.0 MiB, more than"),
        ("K_huge.npz", "layers{2}.K", (3, 2, 2**28), "has shape 3x2x268435456"),
        ("W_huge.npz", "layers{4}.W", (4, 2**29), "has shape 4x536870912"),
    ):
        path = _npz_bytes(d, **{member: _bombs.npy_header_only(shape)})
        files[name] = (path.read_bytes(), expect)
    # an ignored member declaring 2 GiB is never read: the network loads
    files["junk_member.npz"] = (
        _npz_bytes(d, junk=_bombs.npy_header_only((2**28,))).read_bytes(),
        None,
    )
    for name, (data, _) in files.items():
        (d / name).write_bytes(data)
        assert len(data) < 3 * 2**20, name  # small files, all of them
    return d, {name: expect for name, (_, expect) in files.items()}


def test_bomb_table_is_refused_within_seconds_under_a_memory_limit(bombs):
    d, expect = bombs
    paths = [str(d / name) for name in expect]
    proc = subprocess.run(
        [sys.executable, "-c", _BOMB_SCRIPT, *paths],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {r["path"]: r for r in map(json.loads, proc.stdout.splitlines())}
    assert set(rows) == set(expect)
    for name, want in expect.items():
        r = rows[name]
        if want is None:
            assert r["kind"] == "loaded", r
        else:
            assert r["kind"] == "CNNFileError", r
            assert want in r["msg"], r
            _one_line(r["msg"])
        assert r["seconds"] < 10, r


def test_cli_test_on_nested_cells_exits_2(bombs):
    d, _ = bombs
    proc = subprocess.run(
        [sys.executable, "-m", "cnn", "test", str(d / "cell20000.mat"), "--synthetic", "10"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "nested more than 32 levels" in lines[0]


# --------------------------------------------------------------------------- bad-file table


def _bad_files(d):
    """``{name: (path, words the message must contain)}``."""
    files = {}

    def put(name, data, *words):
        (d / name).write_bytes(data)
        files[name] = (d / name, words)

    put("text.npz", b"hello, this is not a network\n", "text file")
    put("text.mat", b"hello, this is not a network\n", "text file")
    put("empty.npz", b"", "empty file")
    put("empty.mat", b"", "empty file")
    rng = np.random.default_rng(0)
    put("random.npz", bytes([0x00, 0xFF]) + rng.bytes(998), "binary data")
    put("random.mat", bytes([0x00, 0xFF]) + rng.bytes(998), "binary data")
    import gzip

    put("data.npz", gzip.compress(b"x" * 100), "gzip file")
    with zipfile.ZipFile(d / "foreign.zip", "w") as zf:
        zf.writestr("readme.txt", "hi")
    files["foreign.zip.npz"] = (d / "foreign.zip", ("zip archive", "no 'header' member"))
    np.savez(d / "foreign.npz", x=np.arange(3))
    files["foreign.npz"] = (d / "foreign.npz", ("zip archive", "no 'header' member"))
    np.savez(
        d / "object.npz",
        header=np.array([{"format": "cnn-npz-1"}], dtype=object),
        struct=np.array(["{}"]),
    )
    files["object.npz"] = (d / "object.npz", ("array of Python objects",))
    np.save(d / "single.npy", np.arange(3))
    (d / "single.npz").write_bytes((d / "single.npy").read_bytes())
    files["single.npz"] = (d / "single.npz", ("single NumPy array",))
    scipy.io.savemat(d / "novar.mat", {"x": 1.0})
    files["novar.mat"] = (d / "novar.mat", ("MAT-file", "no variable 'cnn'", "holds: x"))
    scipy.io.savemat(d / "v4.mat", {"x": np.ones((2, 2))}, format="4")
    files["v4.mat"] = (d / "v4.mat", ("not a MAT-file",))
    (d / "folder.npz").mkdir()
    files["folder.npz"] = (d / "folder.npz", ("is a folder",))
    (d / "folder.mat").mkdir()
    files["folder.mat"] = (d / "folder.mat", ("is a folder",))
    if hasattr(os, "mkfifo"):
        os.mkfifo(d / "fifo.npz")
        files["fifo.npz"] = (d / "fifo.npz", ("FIFO",))
        os.mkfifo(d / "fifo.mat")
        files["fifo.mat"] = (d / "fifo.mat", ("FIFO",))
    return files


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    return _bad_files(tmp_path_factory.mktemp("bad"))


def test_bad_file_table_through_the_api(bad_files):
    for name, (path, words) in bad_files.items():
        loaders = (
            [load_npz, load_npz_meta] if path.suffix == ".npz" and name != "v4.mat" else [load_cnn]
        )
        if path.suffix == ".zip":
            loaders = [load_npz, load_npz_meta]
        for load in loaders:
            with pytest.raises(CNNFileError) as info:
                load(path)
            msg = str(info.value)
            _one_line(msg)
            for w in words:
                assert w in msg, (name, msg)


def test_bad_file_table_through_cnn_test(bad_files, capsys):
    for name, (path, words) in bad_files.items():
        code = cli.main(["test", str(path), "--synthetic", "10"])
        err = capsys.readouterr().err
        assert code == 2, (name, err)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("cnn test: error: "), (name, err)
        _one_line(lines[0])
        assert "no such network file" not in lines[0]
        assert words[0] in lines[0], (name, lines[0])


@pytest.mark.parametrize("name", ["text.npz", "folder.mat", "fifo.npz", "object.npz"])
def test_bad_files_through_python_m_cnn_test(bad_files, name):
    if name not in bad_files:
        pytest.skip("no FIFOs here")
    path, words = bad_files[name]
    proc = subprocess.run(
        [sys.executable, "-m", "cnn", "test", str(path), "--synthetic", "10"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and words[0] in lines[0] and "allow_pickle" not in lines[0]


# --------------------------------------------------------------------------- checkpoints


def test_checkpoint_pair_is_stamped_and_verified(tmp_path):
    npz, mat = write_checkpoint(tmp_path / "checkpoint", NET, {"batches_done": 1})
    assert verify_checkpoint(tmp_path / "checkpoint") == (npz, mat)
    old_mat = mat.read_bytes()
    net2 = NET.copy()
    net2.layers[1].K += 1.0
    write_checkpoint(tmp_path / "checkpoint", net2, {"batches_done": 2})
    assert verify_checkpoint(tmp_path / "checkpoint") == (npz, mat)
    mat.write_bytes(old_mat)  # a .mat of another checkpoint beside the .npz
    with pytest.raises(CNNFileError, match="checkpoint_id differs"):
        verify_checkpoint(tmp_path / "checkpoint")


@pytest.mark.parametrize(
    "failure",
    [OSError(28, "No space left on device"), KeyboardInterrupt()],
    ids=["disk-full", "killed"],
)
def test_failure_between_the_two_writes_leaves_no_mismatched_pair(tmp_path, monkeypatch, failure):
    import cnn.checkpoint as ck

    write_checkpoint(tmp_path / "checkpoint", NET, {"batches_done": 1})
    net2 = NET.copy()
    net2.layers[4].W *= 2.0

    monkeypatch.setattr(
        ck,
        "_write_mat",
        lambda mat, net, ident: (_ for _ in ()).throw(
            OSError(failure.errno, failure.strerror, str(mat))
            if isinstance(failure, OSError)
            else failure
        ),
    )
    with pytest.raises(type(failure)) as info:
        write_checkpoint(tmp_path / "checkpoint", net2, {"batches_done": 2})
    if isinstance(failure, OSError):
        assert info.value.filename.endswith("checkpoint.mat")
    monkeypatch.undo()
    npz, mat = verify_checkpoint(tmp_path / "checkpoint")
    assert mat is None  # never the old .mat beside the new .npz
    assert load_npz_meta(npz)["batches_done"] == 2
    write_mat_of(npz)
    assert verify_checkpoint(tmp_path / "checkpoint")[1] is not None
    for (_, _, a), (_, _, b) in zip(
        load_cnn(tmp_path / "checkpoint.mat").parameters(), load_npz(npz).parameters(), strict=True
    ):
        np.testing.assert_array_equal(a, b)


def test_train_reports_a_failed_mat_write_as_the_mat(tmp_path, monkeypatch, capsys):
    import cnn.checkpoint as ck

    real = ck._write_mat

    def fail_second(mat, net, ident, calls=[0]):  # noqa: B006
        calls[0] += 1
        if calls[0] == 2:
            raise OSError(13, "Permission denied", str(mat))
        return real(mat, net, ident)

    monkeypatch.setattr(ck, "_write_mat", fail_second)
    save_npz(tmp_path / "tiny.npz", _tiny())
    code = cli.main(
        [
            "train",
            "--init",
            str(tmp_path / "tiny.npz"),
            "--synthetic",
            "60",
            "--batch-size",
            "10",
            "--checkpoint-every",
            "2",
            "--out",
            str(tmp_path / "out"),
            "--no-progress",
        ]
    )
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "checkpoint.mat: Permission denied" in err, err
    assert verify_checkpoint(tmp_path / "out" / "checkpoint")[1] is None


def _tiny():
    net = cnn.initcnn((12, 12), 0.1, seed=0)
    cnn.add_conv_layer(net, 2, 5, "tanh")
    cnn.add_pool_layer(net, 2)
    cnn.add_fc_layer(net, 10, "sigm")
    return net


# --------------------------------------------------------------------------- non-regular files


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs")
def test_fifo_never_hangs_a_reader(tmp_path):
    fifo = tmp_path / "f.npz"
    os.mkfifo(fifo)
    t = time.perf_counter()
    for load in (load_npz, load_npz_meta, load_cnn, lambda p: load_cnn(p, "cnn1")):
        with pytest.raises(CNNFileError, match="FIFO"):
            load(fifo)
    assert time.perf_counter() - t < 5
    with pytest.raises(CNNFileError, match="is a folder"):
        train_run.load_network_file(tmp_path, "cnn", None, np.float64)


# --------------------------------------------------------------------------- divergence


def test_divergence_error_is_a_nonfinite_error():
    assert issubclass(cnn.DivergenceError, cnn.NonFiniteError)
    assert cnn.guard.LOSS_GROWTH == 100 and cnn.guard.WEIGHT_LIMIT == 1e4


def test_lr_1e6_is_stopped_exit_1_one_line(tmp_path, capsys):
    code = cli.main(
        [
            "train",
            "--synthetic",
            "200",
            "--lr",
            "1e6",
            "--epochs",
            "1",
            "--out",
            str(tmp_path),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(
        "cnn train: error: training stopped: diverging at epoch 1, minibatch"
    )
    assert "layer" in lines[0] and "learning rate" in lines[0]


def test_guard_off_lets_a_study_record_the_divergence():
    from cnn.synthetic import synthetic_digits

    x, y = synthetic_digits(100, seed=1)
    net = cnn.example_network(3, seed=0)
    net.learning_rate = 1e6
    with np.errstate(all="ignore"):
        with pytest.raises(cnn.DivergenceError):
            cnn.traincnn(net.copy(), x, y, 1, 50, verbose=False)
        net = cnn.traincnn(net, x, y, 1, 50, verbose=False, divergence_guard=False)
    assert max(net.loss_array) > 100 * net.loss_array[0]  # diverged, and recorded


@pytest.mark.parametrize("lr", [0.01, 0.04, 0.16])
def test_guard_never_trips_on_normal_runs(lr):
    """Example 3 on 200 synthetic digits, 5 epochs at the studies' learning rates."""
    from cnn.synthetic import synthetic_digits

    x, y = synthetic_digits(200, seed=2)
    net = cnn.example_network(3, seed=lr_seed(lr))
    net.learning_rate = lr
    cnn.traincnn(net, x, y, 5, 50, verbose=False)
    worst = max(net.loss_array) / net.loss_array[0]
    assert worst < cnn.guard.LOSS_GROWTH / 10  # ten times below the bound, at least
    biggest = max(float(np.abs(a).max()) for _, _, a in net.parameters())
    assert biggest < cnn.guard.WEIGHT_LIMIT / 100


def lr_seed(lr):
    return int(lr * 1000)


def test_fuzz_tests_leave_no_temp_folder(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(REPO / "tests" / "test_fuzz_files.py"),
            "-k",
            "valid_files_load",
        ],
        capture_output=True,
        text=True,
        env=dict(_env(), TMPDIR=str(tmp)),
        cwd=REPO,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert not list(tmp.glob("cnn-fuzz-*"))


def test_loadmat_checked_for_other_readers(bombs):
    from cnn.matlab import loadmat_checked

    d, _ = bombs
    with pytest.raises(CNNFileError, match="nested more than 32"):
        loadmat_checked(d / "struct100000.mat")
    with pytest.raises(CNNFileError, match="2.0 GiB"):
        loadmat_checked(d / "zero2g_ignored_field.mat", ["cnn"])
    fixture = REPO / "tests" / "fixtures" / "g01_c2p_ex3like_auto_cros.mat"
    got = loadmat_checked(fixture, ["x", "loss_func"])
    np.testing.assert_array_equal(got["x"], scipy.io.loadmat(fixture)["x"])


@pytest.mark.slow
@pytest.mark.parametrize(
    "flag, loss, mode",
    [
        (None, "auto", "faithful"),
        (True, "auto", "faithful"),
        (None, "quad", "faithful"),
        (None, "auto", "corrected"),
    ],
)
def test_guard_never_trips_on_example_3_mnist_at_lr_016(flag, loss, mode):
    """The studies' largest learning rate, one full MNIST epoch, guard on (about 15 s each)."""
    from cnn.mnist import MNISTNotFoundError, load_mnist

    try:
        x, y, _, _ = load_mnist(download=False, progress=False)
    except MNISTNotFoundError as exc:
        pytest.skip(f"MNIST not found: {exc}")
    net = cnn.example_network(3, seed=1, mode=mode)
    net.learning_rate, net.loss_func = 0.16, loss
    cnn.traincnn(net, x, y, 1, 50, calc_last_layer_act_derivative=flag, verbose=False)
    assert max(net.loss_array) < cnn.guard.LOSS_GROWTH / 10 * net.loss_array[0]


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(where=st.integers(0, 5), key=st.integers(0, 30), value=_JSON)
def test_any_json_in_the_struct_is_a_network_or_our_error(tmp_path, where, key, value):
    """Any JSON value in any field of the struct (top level or a layer): CNNFileError at most."""
    path = tmp_path / "net.npz"
    if not path.exists():
        save_npz(path, NET)
    with np.load(path, allow_pickle=False) as z:
        top = json.loads(str(z["struct"]))
    d = top if where == 0 else top["layers"][where - 1]
    keys = sorted(d)
    d[keys[key % len(keys)]] = value
    changed = _npz_bytes(tmp_path, struct=np.array(json.dumps(top)))
    try:
        net = load_npz(changed)
    except CNNFileError as exc:
        _one_line(str(exc))
    else:
        assert isinstance(net, cnn.CNN)


def test_resume_from_a_folder_says_it_is_a_folder(tmp_path, capsys):
    code = cli.main(["train", "--resume", str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "is a folder" in err and "no such" not in err


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("run")
    save_npz(d / "tiny.npz", _tiny())
    train_run.run_training(
        train_run.TrainConfig(
            init=str(d / "tiny.npz"),
            synthetic=60,
            batch_size=10,
            epochs=1,
            out=str(d / "a"),
            progress=False,
            verbose=False,
        )
    )
    return d / "a" / "checkpoint.npz"


@pytest.mark.parametrize(
    "path, value",
    [
        ("settings.flag", "sometimes"),
        ("settings.flag", None),
        ("settings.dtype", 5),
        ("settings.mode", ["faithful"]),
        ("settings.loss", True),
        ("settings.example", 7),
        ("settings.seed", -1),
        ("settings.seed", 1.5),
        ("settings.init", 5),
        ("settings.learning_rate", "fast"),
        ("settings.learning_rate", -0.1),
        ("settings.train_subset", 0),
        ("settings.epochs", None),
        ("train_time", "long"),
        ("train_time", None),
        ("batches_done", 10**40),
    ],
)
def test_tampered_meta_is_refused_in_one_line(finished_run, tmp_path, capsys, path, value):
    meta = load_npz_meta(finished_run)
    t = meta
    *parents, last = path.split(".")
    for p in parents:
        t = t[p]
    t[last] = value
    ck = tmp_path / "checkpoint.npz"
    save_npz(ck, load_npz(finished_run), meta)
    code = cli.main(
        [
            "train",
            "--resume",
            str(ck),
            "--epochs",
            "2",
            "--out",
            str(tmp_path / "r"),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "\n" not in err and f"no valid {path}" in err and "unexpected" not in err, err


def test_unreadable_network_file_is_bad_input(tmp_path, capsys, monkeypatch):
    """A file without read permission is reported as bad input (exit 2), in one line."""
    import os

    path = tmp_path / "net.npz"
    path.write_bytes(b"PK")
    path.chmod(0)
    if os.access(path, os.R_OK):  # root reads anything: refuse this one path as the OS would
        real_open = os.open

        def refuse(p, *a, **k):
            if str(p) == str(path):
                raise PermissionError(13, "Permission denied", str(p))
            return real_open(p, *a, **k)

        monkeypatch.setattr(os, "open", refuse)
    code = cli.main(["test", str(path), "--synthetic", "10"])
    monkeypatch.undo()
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "cannot be read (permission denied)" in err[0]

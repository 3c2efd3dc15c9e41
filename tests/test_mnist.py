"""Tests for cnn.mnist on small IDX files written here; never the network."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cnn.mnist as m
from cnn.mnist import MNISTError, MNISTNotFoundError

# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def idx_bytes(arr, *, code=0x08, dims=None, magic01=b"\x00\x00"):
    """IDX bytes of ``arr`` (uint8); ``dims``/``code``/``magic01`` can be forged."""
    arr = np.asarray(arr, dtype=np.uint8)
    dims = arr.shape if dims is None else tuple(dims)
    header = magic01 + bytes([code, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims)
    return header + arr.tobytes()


def gz(data):
    return gzip.compress(data, mtime=0)


def write_idx(path, arr, *, gzipped=False, **kw):
    data = idx_bytes(arr, **kw)
    Path(path).write_bytes(gz(data) if gzipped else data)
    return Path(path)


def make_mnist_dir(
    directory, *, n_train=6, n_test=4, rows=28, cols=28, gzipped=True, dotted=False, seed=0
):
    """Write four small MNIST-like files; return (train_imgs, train_lab, test_imgs, test_lab)."""
    rng = np.random.default_rng(seed)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for kind, n in (("train", n_train), ("t10k", n_test)):
        imgs = rng.integers(0, 256, size=(n, rows, cols), dtype=np.uint8)
        labs = rng.integers(0, 10, size=n, dtype=np.uint8)
        sep = "." if dotted else "-"
        suffix = ".gz" if gzipped else ""
        write_idx(directory / f"{kind}-images{sep}idx3-ubyte{suffix}", imgs, gzipped=gzipped)
        write_idx(directory / f"{kind}-labels{sep}idx1-ubyte{suffix}", labs, gzipped=gzipped)
        out += [imgs, labs]
    return tuple(out)


def expect_error(exc_type, fragments, func, *args, **kw):
    with pytest.raises(exc_type) as info:
        func(*args, **kw)
    msg = str(info.value)
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in error message {msg!r}"
    return msg


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Any http(s) request in a test is a bug: fail loudly instead."""
    real = m._open_url

    def guarded(url, timeout):
        if not url.startswith("file:"):
            raise AssertionError(f"test tried to reach the network: {url}")
        return real(url, timeout)

    monkeypatch.setattr(m, "_open_url", guarded)
    monkeypatch.delenv(m.ENV_VAR, raising=False)


# --------------------------------------------------------------------------
# round trips
# --------------------------------------------------------------------------


@pytest.mark.parametrize("gzipped", [False, True])
@pytest.mark.parametrize("shape", [(3, 28, 28), (4, 5, 7), (1, 1, 1), (0, 28, 28)])
def test_images_round_trip(tmp_path, gzipped, shape):
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, size=shape, dtype=np.uint8)
    p = write_idx(tmp_path / "imgs", arr, gzipped=gzipped)
    raw = m.read_idx(p)
    assert raw.dtype == np.uint8 and raw.shape == shape
    np.testing.assert_array_equal(raw, arr)
    if shape[0] == 0:  # a file without images is not a data set
        expect_error(MNISTError, ["holds no images", str(p)], m.load_images, p)
        return
    x = m.load_images(p)
    assert x.dtype == np.float64 and x.shape == shape
    assert np.array_equal(x, arr.astype(np.float64) / 255.0)  # exact, not approximate


def test_images_all_pixel_values_exact(tmp_path):
    arr = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
    x = m.load_images(write_idx(tmp_path / "a", arr))
    for v in range(256):
        assert x.flat[v] == v / 255.0
    assert x.min() == 0.0 and x.max() == 1.0


@pytest.mark.parametrize("gzipped", [False, True])
def test_images_orientation(tmp_path, gzipped):
    # One bright pixel per image at a known (row, col) in a non-square image.
    n, rows, cols = 3, 5, 7
    arr = np.zeros((n, rows, cols), dtype=np.uint8)
    spots = [(0, 0, 6), (1, 4, 0), (2, 2, 3)]
    for k, r, c in spots:
        arr[k, r, c] = 255
    x = m.load_images(write_idx(tmp_path / "o", arr, gzipped=gzipped))
    assert x.shape == (n, rows, cols)
    for k, r, c in spots:
        assert x[k, r, c] == 1.0
        assert x[k].sum() == 1.0
    # The byte right after the header is pixel (0, 0, 0), then along a row.
    data = bytearray(idx_bytes(np.zeros((1, 2, 3), np.uint8)))
    data[16 + 1] = 255  # row 0, col 1
    data[16 + 3] = 51  # row 1, col 0
    (tmp_path / "b").write_bytes(bytes(data))
    y = m.load_images(tmp_path / "b")
    assert y[0, 0, 1] == 1.0 and y[0, 1, 0] == 51 / 255.0 and y.sum() == 1.2


@pytest.mark.parametrize("gzipped", [False, True])
def test_labels_and_one_hot(tmp_path, gzipped):
    labs = np.array([5, 0, 4, 1, 9, 2, 1, 3], dtype=np.uint8)
    y = m.load_labels(write_idx(tmp_path / "l", labs, gzipped=gzipped))
    assert y.dtype == np.int64 and y.shape == (8,)
    np.testing.assert_array_equal(y, labs)
    oh = m.one_hot(y)
    assert oh.dtype == np.float64 and oh.shape == (8, 10)
    np.testing.assert_array_equal(oh.sum(axis=1), 1.0)
    np.testing.assert_array_equal(oh.argmax(axis=1), labs)
    assert m.one_hot(np.array([], dtype=np.int64)).shape == (0, 10)
    assert m.one_hot([0, 2], n_classes=3).tolist() == [[1, 0, 0], [0, 0, 1]]


@pytest.mark.parametrize("bad", [[10], [-1], [[1, 2]], [0.5], np.array([1, 2]).reshape(1, 2)])
def test_one_hot_rejects(bad):
    with pytest.raises(ValueError):
        m.one_hot(bad)


def test_gzip_detected_by_content_not_name(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    raw_named_gz = write_idx(tmp_path / "raw.gz", arr, gzipped=False)
    gz_named_raw = write_idx(tmp_path / "gzipped-idx3-ubyte", arr, gzipped=True)
    np.testing.assert_array_equal(m.read_idx(raw_named_gz), arr)
    np.testing.assert_array_equal(m.read_idx(gz_named_raw), arr)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        m.read_idx(tmp_path / "nope")


# --------------------------------------------------------------------------
# file names
# --------------------------------------------------------------------------


def test_candidate_names():
    assert m.candidate_names("train-images") == (
        "train-images-idx3-ubyte.gz",
        "train-images-idx3-ubyte",
        "train-images.idx3-ubyte.gz",
        "train-images.idx3-ubyte",
    )
    assert m.candidate_names("t10k-labels")[3] == "t10k-labels.idx1-ubyte"
    with pytest.raises(ValueError, match="train-images"):
        m.candidate_names("train")


def test_find_file_order(tmp_path):
    names = m.candidate_names("t10k-images")
    assert m.find_file(tmp_path, "t10k-images") is None
    for name in reversed(names):  # create in reverse: the result must still follow the order
        (tmp_path / name).write_bytes(b"x")
        assert m.find_file(tmp_path, "t10k-images") == tmp_path / name
    for i, name in enumerate(names[:-1]):
        (tmp_path / name).unlink()
        assert m.find_file(tmp_path, "t10k-images") == tmp_path / names[i + 1]
    (tmp_path / "t10k-labels-idx1-ubyte.gz").mkdir()  # found, then refused by the reader
    assert m.find_file(tmp_path, "t10k-labels") == tmp_path / "t10k-labels-idx1-ubyte.gz"
    expect_error(MNISTError, ["is a folder"], m.read_idx, tmp_path / "t10k-labels-idx1-ubyte.gz")


@pytest.mark.parametrize("gzipped", [False, True])
@pytest.mark.parametrize("dotted", [False, True])
def test_load_split_name_variants(tmp_path, gzipped, dotted):
    tr_i, tr_l, te_i, te_l = make_mnist_dir(tmp_path, gzipped=gzipped, dotted=dotted)
    x, y = m.load_split("train", tmp_path, download=False, verify=False)
    assert x.shape == (6, 28, 28) and y.shape == (6, 10)
    assert np.array_equal(x, tr_i / 255.0)
    np.testing.assert_array_equal(y.argmax(1), tr_l)
    x, y = m.load_split("test", tmp_path, download=False, verify=False)
    assert x.shape == (4, 28, 28) and y.shape == (4, 10)
    np.testing.assert_array_equal(y.argmax(1), te_l)


def test_load_mnist(tmp_path):
    tr_i, tr_l, te_i, te_l = make_mnist_dir(tmp_path, n_train=7, n_test=3)
    train_x, train_y, test_x, test_y = m.load_mnist(tmp_path, download=False, verify=False)
    assert train_x.shape == (7, 28, 28) and train_y.shape == (7, 10)
    assert test_x.shape == (3, 28, 28) and test_y.shape == (3, 10)
    assert np.array_equal(test_x, te_i / 255.0)
    np.testing.assert_array_equal(train_y.argmax(1), tr_l)
    for a in (train_x, train_y, test_x, test_y):
        assert a.dtype == np.float64


def test_load_split_bad_split(tmp_path):
    expect_error(
        ValueError,
        ["'validation'", "'train'", "'test'"],
        m.load_split,
        "validation",
        tmp_path,
        download=False,
    )


# --------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------

SMALL = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)


def _write_bytes(tmp_path, data, gzipped, name="f"):
    p = tmp_path / name
    p.write_bytes(gz(data) if gzipped else data)
    return p


@pytest.mark.parametrize("gzipped", [False, True])
def test_bad_magic(tmp_path, gzipped):
    p = _write_bytes(tmp_path, idx_bytes(SMALL, magic01=b"\x00\x01"), gzipped)
    expect_error(MNISTError, ["magic", str(p)], m.read_idx, p)
    p = _write_bytes(tmp_path, b"PK\x03\x04" + bytes(40), gzipped)
    expect_error(MNISTError, ["magic"], m.load_images, p)


@pytest.mark.parametrize("gzipped", [False, True])
def test_wrong_type_code(tmp_path, gzipped):
    p = _write_bytes(tmp_path, idx_bytes(SMALL, code=0x0D), gzipped)
    expect_error(MNISTError, ["type code 0x0D", "0x08", str(p)], m.read_idx, p)
    p = _write_bytes(tmp_path, idx_bytes(SMALL, code=0x42), gzipped)
    expect_error(MNISTError, ["unknown", "0x42"], m.load_images, p)


@pytest.mark.parametrize("gzipped", [False, True])
def test_wrong_ndim(tmp_path, gzipped):
    labels = write_idx(tmp_path / "labels", np.arange(5), gzipped=gzipped)
    images = write_idx(tmp_path / "images", SMALL, gzipped=gzipped)
    four_d = write_idx(tmp_path / "4d", SMALL.reshape(1, 2, 3, 4), gzipped=gzipped)
    expect_error(MNISTError, ["3 dimensions", "found 1", str(labels)], m.load_images, labels)
    expect_error(MNISTError, ["3 dimensions", "found 4"], m.load_images, four_d)
    expect_error(MNISTError, ["1 dimension", "found 3", str(images)], m.load_labels, images)
    zero_d = _write_bytes(tmp_path, b"\x00\x00\x08\x00\x07", gzipped, name="0d")
    expect_error(MNISTError, ["number of dimensions 0"], m.read_idx, zero_d)


@pytest.mark.parametrize("gzipped", [False, True])
def test_truncated_data(tmp_path, gzipped):
    data = idx_bytes(SMALL)[:-4]  # header says 24 data bytes; 20 present
    p = _write_bytes(tmp_path, data, gzipped)
    expect_error(MNISTError, ["truncated", "24", "found 20", str(p)], m.read_idx, p)


@pytest.mark.parametrize("gzipped", [False, True])
def test_truncated_header(tmp_path, gzipped):
    p = _write_bytes(tmp_path, idx_bytes(SMALL)[:9], gzipped)
    expect_error(MNISTError, ["truncated IDX header"], m.read_idx, p)
    p = _write_bytes(tmp_path, b"\x00\x00", gzipped)
    expect_error(MNISTError, ["too short"], m.read_idx, p)
    p = _write_bytes(tmp_path, b"", gzipped)
    expect_error(MNISTError, ["too short"], m.read_idx, p)


@pytest.mark.parametrize("gzipped", [False, True])
def test_trailing_bytes(tmp_path, gzipped):
    p = _write_bytes(tmp_path, idx_bytes(SMALL) + b"\x00\x01\x02", gzipped)
    expect_error(MNISTError, ["3 trailing bytes", "24", str(p)], m.read_idx, p)


@pytest.mark.parametrize("gzipped", [False, True])
def test_absurd_header_is_rejected_before_allocating(tmp_path, gzipped):
    big = 0xFFFFFFFF
    data = idx_bytes(np.zeros(0, np.uint8), dims=(big, big, big)) + bytes(100)
    p = _write_bytes(tmp_path, data, gzipped)
    with pytest.raises(MNISTError, match="need"):
        m.read_idx(p)


def test_truncated_gzip(tmp_path):
    full = gz(idx_bytes(SMALL))
    for cut in (len(full) - 1, len(full) - 8, len(full) // 2, 12):
        p = _write_bytes(tmp_path, full[:cut], False)
        expect_error(MNISTError, ["corrupt gzip", str(p)], m.read_idx, p)


def test_corrupt_gzip_crc(tmp_path):
    full = bytearray(gz(idx_bytes(SMALL)))
    full[-8] ^= 0xFF  # first byte of the CRC32 in the gzip trailer
    p = _write_bytes(tmp_path, bytes(full), False)
    expect_error(MNISTError, ["corrupt gzip", "CRC", str(p)], m.read_idx, p)
    full = bytearray(gz(idx_bytes(SMALL)))
    full[-1] ^= 0x01  # ISIZE (length) in the trailer
    p = _write_bytes(tmp_path, bytes(full), False)
    expect_error(MNISTError, ["corrupt gzip"], m.read_idx, p)


def test_label_out_of_range(tmp_path):
    p = write_idx(tmp_path / "l", np.array([1, 9, 10, 3, 255], np.uint8))
    expect_error(MNISTError, ["0..9", "label[2] = 10", "2 label(s)", str(p)], m.load_labels, p)


def test_count_mismatch(tmp_path):
    make_mnist_dir(tmp_path, n_train=6)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(5), gzipped=True)
    expect_error(
        MNISTError,
        ["mismatch", "6 images", "5 labels"],
        m.load_split,
        "train",
        tmp_path,
        download=False,
        verify=False,
    )
    with pytest.raises(MNISTError, match="mismatch"):
        m.load_mnist(tmp_path, download=False, verify=False)


def test_error_classes():
    assert issubclass(MNISTError, ValueError)
    assert issubclass(MNISTNotFoundError, FileNotFoundError)


# --------------------------------------------------------------------------
# locating the data
# --------------------------------------------------------------------------


def test_mnist_dir_precedence(tmp_path, monkeypatch):
    default = Path(m.__file__).resolve().parents[1] / "data" / "mnist"
    monkeypatch.delenv(m.ENV_VAR, raising=False)
    assert m.mnist_dir() == default == m.default_mnist_dir()
    monkeypatch.setenv(m.ENV_VAR, "")  # empty counts as unset
    assert m.mnist_dir() == default
    monkeypatch.setenv(m.ENV_VAR, str(tmp_path / "env"))
    assert m.mnist_dir() == tmp_path / "env"
    assert m.mnist_dir(tmp_path / "explicit") == tmp_path / "explicit"
    assert m.mnist_dir(str(tmp_path / "explicit")) == tmp_path / "explicit"


def test_load_uses_env_var(tmp_path, monkeypatch):
    make_mnist_dir(tmp_path / "env", n_train=2)
    make_mnist_dir(tmp_path / "explicit", n_train=3)
    monkeypatch.setenv(m.ENV_VAR, str(tmp_path / "env"))
    assert m.load_split("train", download=False, verify=False)[0].shape[0] == 2
    assert (
        m.load_split("train", tmp_path / "explicit", download=False, verify=False)[0].shape[0] == 3
    )


def test_missing_files_no_download(tmp_path):
    msg = expect_error(
        MNISTNotFoundError,
        ["train-images-idx3-ubyte.gz and 3 more", str(tmp_path), m.ENV_VAR],
        m.load_mnist,
        tmp_path,
        download=False,
    )
    assert "missing" in msg
    # Only the test files present: the message lists just the train files.
    make_mnist_dir(tmp_path)
    for name in m.candidate_names("train-labels") + m.candidate_names("train-images"):
        (tmp_path / name).unlink(missing_ok=True)
    with pytest.raises(MNISTNotFoundError) as info:
        m.load_mnist(tmp_path, download=False)
    assert info.value.missing == ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
    assert info.value.directory == tmp_path and "t10k-" not in str(info.value)
    assert m.load_split("test", tmp_path, download=False, verify=False)[0].shape == (4, 28, 28)
    with pytest.raises(FileNotFoundError):
        m.load_split("train", tmp_path, download=False)


# --------------------------------------------------------------------------
# download (fake mirrors via file:// URLs; never the network)
# --------------------------------------------------------------------------

STD_NAMES = [m.candidate_names(k)[0] for k in m.KINDS]


def make_mirror(directory, seed=0):
    """A fake mirror with small valid .gz files; returns (uri, checksums)."""
    src = Path(directory)
    make_mnist_dir(src, n_train=5, n_test=2, seed=seed)
    sums = {}
    for name in STD_NAMES:
        data = (src / name).read_bytes()
        sums[name] = (len(data), hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest())
    return src.as_uri() + "/", sums


def test_download_success(tmp_path):
    uri, sums = make_mirror(tmp_path / "mirror")
    dest = tmp_path / "a" / "b"  # created on demand
    paths = m.download_mnist(dest, mirrors=[uri], progress=False, checksums=sums)
    assert paths == [dest / n for n in STD_NAMES]
    assert sorted(os.listdir(dest)) == sorted(STD_NAMES)
    for name in STD_NAMES:
        assert (dest / name).read_bytes() == (tmp_path / "mirror" / name).read_bytes()
        m.verify_file(dest / name, checksums=sums)
    # Present files are not fetched again (an empty mirror list would fail otherwise).
    m.download_mnist(dest, mirrors=[], progress=False, checksums=sums)


def test_download_first_mirror_missing_second_used(tmp_path):
    uri, sums = make_mirror(tmp_path / "good")
    (tmp_path / "empty").mkdir()
    bad = (tmp_path / "empty").as_uri()  # no trailing slash: must still work
    dest = tmp_path / "dest"
    m.download_mnist(dest, mirrors=[bad, uri], progress=False, checksums=sums, files=[STD_NAMES[1]])
    assert os.listdir(dest) == [STD_NAMES[1]]


def test_load_mnist_downloads_missing(tmp_path, monkeypatch):
    uri, sums = make_mirror(tmp_path / "good")
    (tmp_path / "empty").mkdir()
    monkeypatch.setattr(m, "MIRRORS", ((tmp_path / "empty").as_uri() + "/", uri))
    monkeypatch.setattr(m, "CHECKSUMS", sums)
    dest = tmp_path / "data"
    train_x, train_y, test_x, test_y = m.load_mnist(dest, progress=False, verify=False)
    assert train_x.shape == (5, 28, 28) and test_y.shape == (2, 10)
    assert sorted(os.listdir(dest)) == sorted(STD_NAMES)


@pytest.mark.parametrize("what", ["md5", "size"])
def test_download_checksum_mismatch_leaves_nothing(tmp_path, what):
    uri, sums = make_mirror(tmp_path / "mirror")
    name = STD_NAMES[0]
    size, md5, sha = sums[name]
    sums[name] = (size, "0" * 32, sha) if what == "md5" else (size + 1, md5, sha)
    dest = tmp_path / "dest"
    msg = expect_error(
        MNISTNotFoundError,
        [what, name, str(dest), m.ENV_VAR, uri + name],
        m.download_mnist,
        dest,
        mirrors=[uri, uri],
        progress=False,
        checksums=sums,
        files=[name],
    )
    assert msg.count(uri + name) == 2  # both mirrors were tried and reported
    assert not dest.exists()  # the folder made for the download is removed again


def test_download_oversize_is_cut_off(tmp_path):
    uri, sums = make_mirror(tmp_path / "mirror")
    name = STD_NAMES[0]
    sums[name] = (10, *sums[name][1:])  # the mirror's file is much larger than 10 bytes
    dest = tmp_path / "dest"
    expect_error(
        MNISTNotFoundError,
        ["larger than"],
        m.download_mnist,
        dest,
        mirrors=[uri],
        progress=False,
        checksums=sums,
        files=[name],
    )
    assert not dest.exists()


class _Flaky(io.RawIOBase):
    """A response that yields ``n_ok`` bytes of ``data`` and then raises ``exc``."""

    def __init__(self, data, n_ok, exc):
        self.data, self.n_ok, self.exc, self.pos = data, n_ok, exc, 0

    def readable(self):
        return True

    def read(self, n=-1):
        if self.pos >= self.n_ok:
            raise self.exc
        n = min(n, 7, self.n_ok - self.pos)
        b = self.data[self.pos : self.pos + n]
        self.pos += n
        return b


@pytest.mark.parametrize("exc", [ConnectionResetError("reset by peer"), TimeoutError("timed out")])
def test_download_partial_transfer_leaves_nothing(tmp_path, monkeypatch, exc):
    uri, sums = make_mirror(tmp_path / "mirror")
    name = STD_NAMES[1]
    data = (tmp_path / "mirror" / name).read_bytes()
    calls = []

    def opener(url, timeout):
        calls.append((url, timeout))
        return _Flaky(data, len(data) // 2, exc)

    monkeypatch.setattr(m, "_open_url", opener)
    dest = tmp_path / "dest"
    expect_error(
        MNISTNotFoundError,
        [type(exc).__name__, str(exc), str(dest)],
        m.download_mnist,
        dest,
        mirrors=["https://a.invalid/", "https://b.invalid/"],
        progress=False,
        checksums=sums,
        files=[name],
        timeout=5,
    )
    assert [c[0] for c in calls] == ["https://a.invalid/" + name, "https://b.invalid/" + name]
    assert all(c[1] == 5 for c in calls)
    assert not dest.exists()


def test_download_partial_then_good_mirror(tmp_path, monkeypatch):
    uri, sums = make_mirror(tmp_path / "mirror")
    name = STD_NAMES[1]
    data = (tmp_path / "mirror" / name).read_bytes()
    real = m._open_url

    def opener(url, timeout):
        if url.startswith("https://flaky.invalid/"):
            return _Flaky(data, 10, ConnectionResetError("reset"))
        return real(url, timeout)

    monkeypatch.setattr(m, "_open_url", opener)
    dest = tmp_path / "dest"
    m.download_mnist(
        dest, mirrors=["https://flaky.invalid/", uri], progress=False, checksums=sums, files=[name]
    )
    assert os.listdir(dest) == [name]
    assert (dest / name).read_bytes() == data


def test_download_interrupted_leaves_nothing(tmp_path, monkeypatch):
    uri, sums = make_mirror(tmp_path / "mirror")
    name = STD_NAMES[0]
    data = (tmp_path / "mirror" / name).read_bytes()
    monkeypatch.setattr(m, "_open_url", lambda url, timeout: _Flaky(data, 20, KeyboardInterrupt()))
    dest = tmp_path / "dest"
    with pytest.raises(KeyboardInterrupt):  # not swallowed, but cleaned up
        m.download_mnist(dest, mirrors=[uri], progress=False, checksums=sums, files=[name])
    assert not dest.exists()
    dest.mkdir()  # an existing folder is kept, without any partial file in it
    with pytest.raises(KeyboardInterrupt):
        m.download_mnist(dest, mirrors=[uri], progress=False, checksums=sums, files=[name])
    assert os.listdir(dest) == []


def test_download_all_mirrors_fail(tmp_path):
    (tmp_path / "e1").mkdir()
    (tmp_path / "e2").mkdir()
    mirrors = [(tmp_path / "e1").as_uri() + "/", (tmp_path / "e2").as_uri() + "/"]
    dest = tmp_path / "dest"
    msg = expect_error(
        MNISTNotFoundError,
        [str(dest), m.ENV_VAR, mirrors[0] + STD_NAMES[0], mirrors[1] + STD_NAMES[0]],
        m.download_mnist,
        dest,
        mirrors=mirrors,
        progress=False,
    )
    assert "tried" in msg
    assert not dest.exists()
    with pytest.raises(FileNotFoundError):
        m.download_mnist(dest, mirrors=[], progress=False)


def test_download_unknown_file(tmp_path):
    with pytest.raises(ValueError, match="no checksum"):
        m.download_mnist(tmp_path, mirrors=[], progress=False, files=["other.gz"])


def test_download_progress(tmp_path, capsys):
    uri, sums = make_mirror(tmp_path / "mirror")
    name = STD_NAMES[3]
    m.download_mnist(tmp_path / "dest", mirrors=[uri], progress=True, checksums=sums, files=[name])
    err = capsys.readouterr().err
    assert name in err and "100%" in err
    # A download that never starts shows no progress bar at all.
    (tmp_path / "empty").mkdir()
    with pytest.raises(MNISTNotFoundError):
        m.download_mnist(
            tmp_path / "d2",
            mirrors=[(tmp_path / "empty").as_uri()],
            progress=True,
            checksums=sums,
            files=[name],
        )
    err = capsys.readouterr().err
    assert "%" not in err and name not in err


def test_verify_file_and_verify_mnist(tmp_path):
    uri, sums = make_mirror(tmp_path / "mirror")
    p = tmp_path / "mirror" / STD_NAMES[0]
    m.verify_file(p, checksums=sums)
    m.verify_file(p, "alias", checksums={"alias": sums[STD_NAMES[0]]})
    with pytest.raises(MNISTError, match="no published checksum"):
        m.verify_file(p, "other", checksums=sums)
    sha = hashlib.sha256(p.read_bytes()).hexdigest()
    m.verify_file(p, checksums={p.name: (*sums[p.name][:2], sha)})
    with pytest.raises(MNISTError, match="sha256 mismatch"):
        m.verify_file(p, checksums={p.name: (*sums[p.name][:2], "f" * 64)})
    # Fake files do not match the published MNIST checksums.
    report = m.verify_mnist(tmp_path / "mirror")
    assert set(report) == set(m.KINDS)
    assert all(r["ok"] is False and "mismatch" in r["message"] for r in report.values())
    report = m.verify_mnist(tmp_path / "nothing-here")
    assert all(r["ok"] is None and r["path"] is None for r in report.values())


# --------------------------------------------------------------------------
# property-based: corrupt input gives an array or MNISTError, nothing else
# --------------------------------------------------------------------------

_READERS = (m.read_idx, m.load_images, m.load_labels)


def _check_reads(path):
    for reader in _READERS:
        try:
            out = reader(path)
        except MNISTError:
            continue
        assert isinstance(out, np.ndarray)
        if reader is m.read_idx:
            assert out.dtype == np.uint8
        elif reader is m.load_images:
            assert out.ndim == 3 and out.dtype == np.float64
            assert out.size == 0 or (out.min() >= 0.0 and out.max() <= 1.0)
        else:
            assert out.ndim == 1 and out.dtype == np.int64
            assert out.size == 0 or (out.min() >= 0 and out.max() <= 9)


@pytest.fixture(scope="module")
def fuzz_file(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz") / "f"


_FUZZ = settings(
    deadline=None, max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@_FUZZ
@given(
    data=st.one_of(
        st.binary(max_size=300),
        st.binary(max_size=300).map(lambda b: b"\x1f\x8b" + b),  # looks like gzip
        st.binary(max_size=300).map(lambda b: b"\x00\x00\x08" + b),  # looks like IDX
        st.binary(max_size=300).map(gz),  # valid gzip of random content
    )
)
def test_fuzz_random_bytes(fuzz_file, data):
    fuzz_file.write_bytes(data)
    _check_reads(fuzz_file)


_VALID = {
    "images": idx_bytes(np.arange(2 * 5 * 7, dtype=np.uint8).reshape(2, 5, 7)),
    "labels": idx_bytes(np.array([3, 1, 4, 1, 5, 9, 2, 6], dtype=np.uint8)),
}


@_FUZZ
@given(
    which=st.sampled_from(sorted(_VALID)),
    gzipped=st.booleans(),
    op=st.sampled_from(["truncate", "flip", "set", "append", "delete"]),
    pos=st.integers(min_value=0, max_value=10_000),
    value=st.integers(min_value=0, max_value=255),
)
def test_fuzz_corrupted_valid_file(fuzz_file, which, gzipped, op, pos, value):
    data = bytearray(gz(_VALID[which]) if gzipped else _VALID[which])
    i = pos % len(data)
    if op == "truncate":
        data = data[:i]
    elif op == "flip":
        data[i] ^= 1 << (value % 8)
    elif op == "set":
        data[i] = value
    elif op == "append":
        data.append(value)
    else:
        del data[i]
    fuzz_file.write_bytes(bytes(data))
    _check_reads(fuzz_file)


# --------------------------------------------------------------------------
# the real files (only when CNN_MNIST_DIR points at them)
# --------------------------------------------------------------------------


@pytest.fixture
def real_mnist_dir():
    # The autouse fixture removes CNN_MNIST_DIR from the test's environment,
    # so read the value the session was started with.
    d = _REAL_ENV
    if not d:
        pytest.skip(f"{m.ENV_VAR} is not set")
    d = Path(d)
    if any(m.find_file(d, k) is None for k in m.KINDS):
        pytest.skip(f"the four MNIST files are not all in {d}")
    return d


_REAL_ENV = os.environ.get(m.ENV_VAR, "").strip()


@pytest.mark.mnist
def test_real_mnist(real_mnist_dir):
    d = real_mnist_dir
    train_x, train_y = m.load_split("train", d, download=False, progress=False)
    test_x, test_y = m.load_split("test", d, download=False, progress=False)
    assert train_x.shape == (60000, 28, 28) and train_y.shape == (60000, 10)
    assert test_x.shape == (10000, 28, 28) and test_y.shape == (10000, 10)
    for x in (train_x, test_x):
        assert x.dtype == np.float64 and x.min() == 0.0 and x.max() == 1.0
    for y in (train_y, test_y):
        assert y.dtype == np.float64
        assert set(np.unique(y)) == {0.0, 1.0}
        np.testing.assert_array_equal(y.sum(axis=1), 1.0)
    # Well-known facts: first labels 5 0 4 1 9 / 7 2 1 0 4, pixel mean 0.1307.
    assert train_y[:5].argmax(1).tolist() == [5, 0, 4, 1, 9]
    assert test_y[:5].argmax(1).tolist() == [7, 2, 1, 0, 4]
    assert abs(train_x.mean() - 0.1307) < 1e-3
    np.testing.assert_array_equal(train_y.sum(0).astype(int)[[0, 1]], [5923, 6742])
    # Checksums: md5 and size of each file (gz against CHECKSUMS).
    report = m.verify_mnist(d)
    assert all(r["ok"] for r in report.values()), report
    for kind in m.KINDS:
        p = m.find_file(d, kind)
        if p.name.endswith(".gz"):
            size, md5 = m.CHECKSUMS[p.name][:2]
            assert p.stat().st_size == size
            assert hashlib.md5(p.read_bytes()).hexdigest() == md5

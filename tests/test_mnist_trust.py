"""MNIST data you can trust: files verified on load (cached digest), non-regular files and
IDX bombs refused, downloads bounded in time and leaving nothing behind, and a data home
that is never inside the installed package."""

import hashlib
import http.server
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from test_mnist import gz, idx_bytes, make_mnist_dir, write_idx

import cnn.mnist as m
from cnn import cli
from cnn.mnist import MNISTError, MNISTNotFoundError, MNISTVerifyError

REPO = Path(__file__).resolve().parent.parent
STD = [m.candidate_names(k)[0] for k in m.KINDS]
REAL_MNIST = Path(os.environ.get(m.ENV_VAR, "") or "/nonexistent")


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """Digests are cached in a folder of the test, never the user's."""
    monkeypatch.setenv(m.CACHE_ENV_VAR, str(tmp_path / "cache"))
    monkeypatch.setattr(m, "_DIGEST_MEMO", {})
    monkeypatch.delenv(m.ENV_VAR, raising=False)


def _publish(monkeypatch, directory):
    """Make the files of ``directory`` the 'published' ones (their sizes and digests)."""
    sums = {}
    for name in STD:
        data = (Path(directory) / name).read_bytes()
        sums[name] = m.Checksum(
            len(data), hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest()
        )
    monkeypatch.setattr(m, "CHECKSUMS", sums)
    return sums


# --------------------------------------------------------------------------- verify on load


def test_edited_and_swapped_files_are_refused(tmp_path, monkeypatch):
    d = tmp_path / "d"
    make_mnist_dir(d, n_train=6, n_test=6)
    _publish(monkeypatch, d)
    x, y = m.load_split("train", d, download=False)  # the published files load
    assert x.shape == (6, 28, 28)
    # one label changed, re-gzipped: same kind of file, other content
    labels = m.read_idx(d / "train-labels-idx1-ubyte.gz").copy()
    labels[0] = (labels[0] + 1) % 10
    write_idx(d / "train-labels-idx1-ubyte.gz", labels, gzipped=True)
    with pytest.raises(MNISTVerifyError, match="train-labels-idx1-ubyte.gz is not the published"):
        m.load_split("train", d, download=False)
    assert m.load_split("train", d, download=False, verify=False)[1].shape == (6, 10)
    # train and test swapped (same sizes here, so only the digest tells them apart)
    make_mnist_dir(d, n_train=6, n_test=6)
    for kind in ("images-idx3", "labels-idx1"):
        a, b = d / f"train-{kind}-ubyte.gz", d / f"t10k-{kind}-ubyte.gz"
        a.rename(d / "tmp")
        b.rename(a)
        (d / "tmp").rename(b)
    with pytest.raises(MNISTVerifyError, match="train-images-idx3-ubyte.gz"):
        m.load_mnist(d, download=False)


def test_the_digest_is_cached_by_size_and_mtime(tmp_path, monkeypatch):
    d = tmp_path / "d"
    make_mnist_dir(d)
    _publish(monkeypatch, d)
    m.load_split("test", d, download=False)
    calls = []
    real = m._digests
    monkeypatch.setattr(m, "_digests", lambda p: calls.append(p) or real(p))
    monkeypatch.setattr(m, "_DIGEST_MEMO", {})  # a new process: only the file cache is left
    m.load_split("test", d, download=False)
    assert calls == []  # fast path: size + cached digest
    p = d / "t10k-labels-idx1-ubyte.gz"
    st = p.stat()
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched: hashed again
    m.load_split("test", d, download=False)
    assert calls == [p]


def test_real_mnist_swapped_and_edited_are_refused(tmp_path, capsys):
    src = REAL_MNIST
    if not all((src / n).is_file() for n in STD):
        pytest.skip("CNN_MNIST_DIR does not hold the four MNIST files")
    d = tmp_path / "mnist"
    d.mkdir()
    for n in STD:
        shutil.copy(src / n, d / n)
    m.check_file(d / STD[1], "train-labels")
    # 5,000 labels changed and re-gzipped
    labels = m.read_idx(d / STD[1]).copy()
    labels[:5000] = (labels[:5000] + 1) % 10
    write_idx(d / STD[1], labels, gzipped=True)
    with pytest.raises(MNISTVerifyError, match=STD[1]):
        m.load_split("train", d, download=False)
    # test labels where the train labels belong
    shutil.copy(src / STD[3], d / STD[1])
    code = cli.main(
        [
            "train",
            "--data-dir",
            str(d),
            "--no-download",
            "--out",
            str(tmp_path / "out"),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("cnn train: error: ")
    assert STD[1] in err and "--no-verify" in err


# --------------------------------------------------------------------------- hostile files


def test_non_regular_files_are_refused_without_blocking(tmp_path):
    fifo = tmp_path / "train-images-idx3-ubyte.gz"
    os.mkfifo(fifo)
    result = {}

    def read():
        try:
            m.read_idx(fifo)
        except MNISTError as exc:
            result["error"] = str(exc)

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "read_idx blocked on a FIFO"
    assert "is a FIFO" in result["error"]
    for reader in (m.load_images, m.load_labels):
        with pytest.raises(MNISTError, match="FIFO"):
            reader(fifo)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(3, np.uint8), gzipped=True)
    with pytest.raises(MNISTError, match="FIFO"):
        m.load_split("train", tmp_path, download=False, verify=False)
    with pytest.raises(MNISTError, match="FIFO"):
        m.check_file(fifo, "train-images")
    with pytest.raises(MNISTError, match="is a folder"):
        m.read_idx(tmp_path)
    if Path("/dev/zero").exists():
        with pytest.raises(MNISTError, match="is a device"):
            m.read_idx("/dev/zero")


def test_a_fifo_through_the_command_line(tmp_path, capsys):
    d = tmp_path / "d"
    make_mnist_dir(d)
    (d / "t10k-images-idx3-ubyte.gz").unlink()
    os.mkfifo(d / "t10k-images-idx3-ubyte.gz")
    code = cli.main(["step", "--synthetic", "10", "--batch-size", "5"])  # unrelated: works
    assert code == 0
    capsys.readouterr()
    code = cli.main(
        [
            "train",
            "--data-dir",
            str(d),
            "--no-verify",
            "--no-download",
            "--out",
            str(tmp_path / "o"),
            "--no-progress",
            "--train-subset",
            "5",
            "--batch-size",
            "5",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "is a FIFO" in err and err.count("\n") == 1


_BOMB = """
import resource, sys
import cnn.mnist as m
def vm():
    for line in open("/proc/self/status"):
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
limit = vm() + 300 * 2**20  # 300 MB above what the interpreter uses now
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
try:
    m.read_idx(sys.argv[1])
except m.MNISTError as exc:
    print("refused:", exc)
    sys.exit(0)
except MemoryError:
    print("MemoryError")
    sys.exit(3)
print("read")
sys.exit(4)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
@pytest.mark.parametrize("gzipped", [True, False])
def test_idx_declaring_more_images_than_it_holds_is_refused_without_allocating(tmp_path, gzipped):
    rng = np.random.default_rng(0)
    held = rng.integers(0, 256, size=(1000, 28, 28), dtype=np.uint8)  # ~784 KB, incompressible
    data = idx_bytes(held, dims=(1_000_000, 28, 28))  # claims 784 MB
    p = tmp_path / ("bomb.gz" if gzipped else "bomb")
    p.write_bytes(gz(data) if gzipped else data)
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-c", _BOMB, str(p)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "refused:" in r.stdout and "truncated data" in r.stdout
    assert time.perf_counter() - t0 < 60


def test_zero_image_files_are_our_error(tmp_path, capsys):
    d = tmp_path / "d"
    make_mnist_dir(d, n_train=0, n_test=0)
    code = cli.main(
        [
            "train",
            "--data-dir",
            str(d),
            "--no-verify",
            "--no-download",
            "--out",
            str(tmp_path / "o"),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "holds no images" in err and err.count("\n") == 1
    assert "unexpected" not in err


# --------------------------------------------------------------------------- download


class _Trickle(http.server.BaseHTTPRequestHandler):
    """Announces the whole file, then sends one byte every 50 ms."""

    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        try:
            for _ in range(100000):
                self.wfile.write(b"\x1f")
                self.wfile.flush()
                time.sleep(0.05)
        except OSError:
            pass

    def log_message(self, *args):
        pass


def test_the_timeout_bounds_the_whole_transfer(tmp_path, capsys):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Trickle)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    dest = tmp_path / "nonexistent" / "mnist"
    name = STD[3]
    try:
        t0 = time.perf_counter()
        with pytest.raises(MNISTNotFoundError, match="not complete after 1 s"):
            m.download_mnist(
                dest,
                mirrors=[f"http://127.0.0.1:{server.server_port}/"],
                files=[name],
                checksums={name: (100000, "0" * 32, "0" * 64)},
                timeout=1.0,
                progress=True,
            )
        assert time.perf_counter() - t0 < 10
    finally:
        server.shutdown()
    assert not (tmp_path / "nonexistent").exists()  # nothing created, no .part left


def test_leftovers_of_a_killed_download_are_removed(tmp_path):
    mirror = tmp_path / "mirror"
    make_mnist_dir(mirror)
    name = STD[3]
    data = (mirror / name).read_bytes()
    sums = {name: (len(data), hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest())}
    dest = tmp_path / "dest"
    (dest / ".download").mkdir(parents=True)
    (dest / ".download" / "tmpabc123").write_bytes(b"half a file")  # SIGKILL left this
    m.download_mnist(dest, mirrors=[mirror.as_uri()], progress=False, checksums=sums, files=[name])
    assert os.listdir(dest) == [name]


def test_a_failed_download_creates_no_folder_through_the_cli(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(m, "MIRRORS", ((tmp_path / "no-mirror").as_uri() + "/",))
    d = tmp_path / "nonexistent" / "deeper"
    code = cli.main(
        ["test", str(REPO / "tests" / "fixtures" / "example3_reference.npz"), "--data-dir", str(d)]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert not (tmp_path / "nonexistent").exists()


# --------------------------------------------------------------------------- data home


def test_data_home_installed_is_the_user_cache(tmp_path, monkeypatch):
    site = tmp_path / "lib" / "python3.11" / "site-packages"
    site.mkdir(parents=True)
    monkeypatch.setattr(m, "REPO_ROOT", site)
    monkeypatch.delenv(m.CACHE_ENV_VAR)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    home = m.default_mnist_dir()
    assert site not in home.parents and "site-packages" not in str(home)
    assert home == Path(__import__("pooch").os_cache("cnn")) / "mnist"
    monkeypatch.setenv(m.CACHE_ENV_VAR, str(tmp_path / "c"))
    assert m.mnist_dir() == tmp_path / "c" / "mnist"
    monkeypatch.setenv(m.ENV_VAR, str(tmp_path / "env"))
    assert m.mnist_dir() == tmp_path / "env"
    assert m.mnist_dir(tmp_path / "arg") == tmp_path / "arg"
    # a source checkout keeps data/mnist/ of the checkout
    monkeypatch.setattr(m, "REPO_ROOT", REPO)
    monkeypatch.delenv(m.ENV_VAR)
    assert m.mnist_dir() == REPO / "data" / "mnist"

"""Installed = checkout: build a wheel, install it (not editable) into a fresh virtualenv and
run the documented commands from an empty folder, with no MNIST anywhere.

Nothing is downloaded: the wheel is built without build isolation and installed with
``--no-deps --no-index`` into a virtualenv that sees the system's site-packages (numpy,
numba, pooch, ...).
"""

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow  # builds, installs and compiles the kernels cold: minutes


def _copy_source(dest):
    """The files of the checkout (as git would ship them), without build outputs."""
    patterns = shutil.ignore_patterns(
        ".git",
        "__pycache__",
        "*.pyc",
        "build",
        "dist",
        "*.egg-info",
        ".pytest_cache",
        ".ruff_cache",
        ".venv*",
    )

    def ignore(folder, names):
        skip = set(patterns(folder, names))
        if Path(folder) == REPO:  # the checkout's MNIST and run folders
            skip |= {"data", "runs"} & set(names)
        return skip

    shutil.copytree(REPO, dest, symlinks=True, ignore=ignore)
    return dest


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("install")
    src = _copy_source(tmp / "src")
    wheels = tmp / "wheels"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-w",
            str(wheels),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    wheel = next(wheels.glob("cnn-*.whl"))
    venv = tmp / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300
    )
    py = venv / "bin" / "python"
    r = subprocess.run(
        [str(py), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    empty = tmp / "empty"
    empty.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "CNN_MNIST_DIR", "CNN_CACHE_DIR", "CNN_NO_DOWNLOAD")
    }
    env.update(
        XDG_CACHE_HOME=str(tmp / "user-cache"),
        MPLBACKEND="Agg",
        NUMBA_NUM_THREADS="1",
        PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
    )
    return {
        "venv": venv,
        "py": py,
        "cnn": venv / "bin" / "cnn",
        "cwd": empty,
        "env": env,
        "wheel": wheel,
        "tmp": tmp,
    }


def _cnn(inst, *argv, timeout=600):
    return subprocess.run(
        [str(inst["cnn"]), *argv],
        cwd=inst["cwd"],
        env=inst["env"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _site(inst):
    r = subprocess.run(
        [str(inst["py"]), "-c", "import cnn, sys; print(cnn.__file__)"],
        cwd=inst["cwd"],
        env=inst["env"],
        capture_output=True,
        text=True,
    )
    return Path(r.stdout.strip()).parent


def test_the_wheel_holds_the_package_data(installed):
    pkg = _site(installed)
    assert str(installed["venv"]) in str(pkg)  # the installed copy, not the checkout
    assert (pkg / "data" / "example3_reference.npz").stat().st_size > 100_000
    assert (pkg / "py.typed").is_file()


def test_version_and_help(installed):
    import cnn

    r = _cnn(installed, "--version")
    assert r.returncode == 0 and cnn.__version__ in r.stdout
    r = _cnn(installed, "bench", "--help")
    assert r.returncode == 0 and "usage:" in r.stdout
    r = subprocess.run(
        [str(installed["py"]), "-m", "cnn", "--help"],
        cwd=installed["cwd"],
        env=installed["env"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0
    for command in ("train", "test", "compare", "gradcheck", "step", "bench"):
        assert command in r.stdout


def test_gradcheck_and_train_run_installed(installed):
    r = _cnn(installed, "gradcheck")
    assert r.returncode == 0 and "PASS" in r.stdout, r.stdout + r.stderr
    r = _cnn(installed, "train", "--synthetic", "200", "--epochs", "1", "--no-progress")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "epoch 1/1: " in r.stdout and "test error is" in r.stdout
    assert (installed["cwd"] / "runs" / "train" / "net.npz").is_file()


def test_compare_reproduce_without_mnist_names_a_folder_outside_site_packages(installed):
    r = _cnn(
        installed, "compare", "--reproduce", "--no-download", "--out", str(installed["tmp"] / "cmp")
    )
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2, r.stderr
    assert len(lines) == 1 and lines[0].startswith("cnn compare: error: "), r.stderr
    home = installed["tmp"] / "user-cache" / "cnn" / "mnist"
    assert str(home) in lines[0]
    assert "site-packages" not in lines[0] and "Traceback" not in r.stderr
    assert not (_site(installed) / "data" / "mnist").exists()
    # the same without data: train says it in command-line terms
    r = _cnn(installed, "train", "--no-download", "--out", str(installed["tmp"] / "t"))
    assert r.returncode == 2 and str(home) in r.stderr and "--data-dir" in r.stderr
    assert r.stderr.count("\n") == 1


def test_unwritable_out_installed(installed):
    blocker = installed["tmp"] / "a-file"
    blocker.write_text("x")
    r = _cnn(
        installed,
        "train",
        "--synthetic",
        "60000",
        "--epochs",
        "5",
        "--out",
        str(blocker / "out"),
        timeout=120,
    )
    assert r.returncode == 2 and r.stderr.startswith("cnn train: error: cannot create the --out")
    assert sysconfig.get_paths()["purelib"] not in r.stderr

"""Every subcommand, every documented failure: the exit code of the documentation and one
error line ``cnn <command>: error: ...`` under 300 characters, in command-line terms,
without a traceback (``--debug`` adds it)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_mnist import make_mnist_dir

import cnn
from cnn import cli
from cnn.checkpoint import save_npz

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
API_TERMS = ("data_dir=", "download=True", "allow_pickle", "Traceback")


@pytest.fixture
def env(tmp_path, monkeypatch):
    """An empty MNIST folder, no download, a few input files."""
    monkeypatch.setenv("CNN_MNIST_DIR", str(tmp_path / "no-mnist"))
    monkeypatch.setenv("CNN_NO_DOWNLOAD", "1")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder.npz").mkdir()
    ex3 = cnn.example_network(3, seed=0)
    save_npz(tmp_path / "ex3.npz", ex3)
    small = cnn.initcnn((12, 12), 0.1, seed=0)
    cnn.add_conv_layer(small, 2, 5, "tanh")
    cnn.add_pool_layer(small, 2)
    cnn.add_fc_layer(small, 10, "sigm")
    save_npz(tmp_path / "small.npz", small)
    (tmp_path / "a-file").write_text("x")
    make_mnist_dir(tmp_path / "fake-mnist", n_train=10, n_test=10)
    make_mnist_dir(tmp_path / "empty-mnist", n_train=0, n_test=0)
    return tmp_path


# (argv, exit code, command of the prefix, words the line must hold)
TABLE = [
    # no or unknown command, bad global options
    (["frobnicate"], 2, None, ["invalid choice"]),
    (["--frob"], 2, None, ["unrecognized arguments"]),
    # train
    (["train", "--epochs", "x"], 2, "train", ["--epochs"]),
    (
        ["train", "--no-download"],
        2,
        "train",
        ["MNIST files not found in", "--data-dir", "CNN_MNIST_DIR"],
    ),
    (["train", "--data-dir", "fake-mnist"], 2, "train", ["is not the published", "--no-verify"]),
    (["train", "--data-dir", "empty-mnist", "--no-verify"], 2, "train", ["holds no images"]),
    (["train", "--synthetic", "20", "--out", "a-file"], 2, "train", ["--out", "not a folder"]),
    (["train", "--synthetic", "20", "--out", "a-file/sub"], 2, "train", ["cannot create"]),
    (["train", "--init", "nothing.npz", "--synthetic", "20"], 2, "train", ["no such network file"]),
    (["train", "--init", "folder.npz", "--synthetic", "20"], 2, "train", ["folder.npz"]),
    (["train", "--resume", "nothing.npz"], 2, "train", ["no such checkpoint"]),
    (["train", "--resume", "ex3.npz"], 2, "train", ["not a training checkpoint"]),
    (["train", "--synthetic", "25", "--batch-size", "10"], 2, "train", ["does not divide"]),
    # test
    (["test"], 2, "test", ["NETWORK"]),
    (["test", "nothing.npz"], 2, "test", ["no such network file"]),
    (["test", "ex3.npz", "--no-download"], 2, "test", ["MNIST files not found in", "--data-dir"]),
    (["test", "ex3.npz", "--data-dir", "fake-mnist"], 2, "test", ["--no-verify"]),
    (["test", "small.npz"], 2, "test", ["12x12", "--synthetic"]),
    (
        ["test", "small.npz", "--synthetic", "10", "--plots", "a-file"],
        2,
        "test",
        ["--plots", "not a folder"],
    ),
    # gradcheck
    (["gradcheck", "--net", "huge"], 2, "gradcheck", ["invalid choice"]),
    (["gradcheck", "--net", "pool-last", "--loss", "cros"], 2, "gradcheck", ["cros"]),
    # step
    (["step", "--minibatch", "0"], 2, "step", ["--minibatch"]),
    (["step", "--init", "nothing.npz", "--synthetic", "10"], 2, "step", ["no such network"]),
    (
        ["step", "--synthetic", "10", "--batch-size", "10", "--minibatch", "2"],
        2,
        "step",
        ["needs 20"],
    ),
    # compare
    (["compare", "--frobnicate"], 2, "compare", ["unrecognized"]),
    (["compare", "--reproduce", "--no-download", "--out", "cmp"], 2, "compare", ["no-mnist"]),
    (["compare", "--quick", "--out", "a-file"], 2, "compare", ["--out", "not a folder"]),
    (["compare", "--quick", "--out=a-file/sub"], 2, "compare", ["cannot create"]),
]


@pytest.mark.parametrize("argv, code, command, words", TABLE, ids=[" ".join(t[0]) for t in TABLE])
def test_error_table(env, capsys, argv, code, command, words):
    assert cli.main(argv) == code
    captured = capsys.readouterr()
    lines = [ln for ln in captured.err.splitlines() if ln.strip()]
    assert len(lines) == 1, captured.err
    line = lines[0]
    prefix = f"cnn {command}: error: " if command else "cnn: error: "
    assert line.startswith(prefix), line
    assert len(line) < 300, line
    for w in words:
        assert w in line, (w, line)
    for term in API_TERMS:
        assert term not in line, (term, line)


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--no-download", "--out", "new/run"],
        ["train", "--no-download", "--out", "run", "--plots", "figs/sub"],
        ["compare", "--quick", "--no-download", "--out", "new/cmp"],
        ["compare", "--reproduce", "--no-download", "--out", "cmp"],
        ["test", "ex3.npz", "--no-download", "--plots", "new/plots"],
    ],
    ids=lambda argv: " ".join(argv[:2]),
)
def test_a_refused_command_leaves_no_folder_behind(env, capsys, argv):
    before = sorted(p.name for p in env.iterdir())
    assert cli.main(argv) == 2
    assert "MNIST file" in capsys.readouterr().err
    assert sorted(p.name for p in env.iterdir()) == before


def test_a_refused_command_keeps_an_existing_folder(env, capsys):
    (env / "mine").mkdir()
    (env / "mine" / "notes.txt").write_text("keep")
    assert cli.main(["train", "--no-download", "--out", "mine"]) == 2
    capsys.readouterr()
    assert (env / "mine" / "notes.txt").read_text() == "keep"


def test_a_failed_block_keeps_a_new_folder_that_another_run_holds(tmp_path):
    import contextlib

    from cnn.atomic import folder_lock
    from cnn.train_run import output_folder

    out = tmp_path / "new" / "run"
    with contextlib.ExitStack() as other:
        with pytest.raises(KeyboardInterrupt), output_folder(out):
            other.enter_context(folder_lock(out, "train run"))  # a run started beside it
            raise KeyboardInterrupt
        assert (out / ".cnn.lock").is_file()  # kept: the other run works there
    mine = tmp_path / "b" / "c"
    with pytest.raises(KeyboardInterrupt), output_folder(mine):
        with folder_lock(mine, "train run"):
            raise KeyboardInterrupt
    assert not (tmp_path / "b").exists()  # nobody else: both new folders removed


def test_debug_adds_the_traceback(env, capsys):
    assert cli.main(["train", "--init", "nothing.npz", "--synthetic", "20", "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().splitlines()[-1].startswith("cnn train: error: ")


def test_success_and_failure_codes(env, capsys):
    assert cli.main(["gradcheck"]) == 0
    assert cli.main(["gradcheck", "--net", "c2"]) == 1  # faithful D1: documented failure
    assert cli.main(["--version"]) == 0
    assert cli.main([]) == 2
    capsys.readouterr()


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_and_terminated(tmp_path, sig, code):
    env = {**os.environ, "PYTHONPATH": str(REPO), "NUMBA_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cnn",
            "train",
            "--synthetic",
            "4000",
            "--epochs",
            "3",
            "--no-progress",
            "--checkpoint-every",
            "5",
            "--out",
            str(tmp_path / "run"),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not (tmp_path / "run" / "checkpoint.npz").exists():  # training is under way
        assert p.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    p.send_signal(sig)
    out, err = p.communicate(timeout=120)
    assert p.returncode == code, err
    lines = [ln for ln in err.splitlines() if ln.strip() and "Ctrl-C" not in ln]
    assert len(lines) == 1 and lines[0].startswith("cnn train: "), err
    assert "Traceback" not in err
    assert (tmp_path / "run" / "checkpoint.npz").is_file()
    np.load(tmp_path / "run" / "checkpoint.npz")  # readable

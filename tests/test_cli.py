"""``cnn`` / ``python -m cnn``: help, exit codes, one-line errors, each subcommand on small inputs.

No test touches the network: MNIST is looked for in an empty directory with
``--no-download``; data are the synthetic digits.
"""

import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

import cnn
from cnn import cli, synthetic
from cnn.checkpoint import save_npz
from cnn.cli import bench as bench_cli
from cnn.cli import gradcheck as gradcheck_cli
from cnn.matlab import save_cnn

REPO = Path(__file__).resolve().parent.parent
COMMANDS = ["train", "test", "compare", "gradcheck", "step", "bench"]


def _run(*argv, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "cnn", *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _one_error_line(err, command=None):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"cnn {command}: error: " if command else "cnn"), lines[0]
    assert ": error: " in lines[0] and len(lines[0]) < 300
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(autouse=True)
def _no_mnist(tmp_path, monkeypatch):
    """MNIST is never found and never downloaded."""
    empty = tmp_path / "no-mnist"
    empty.mkdir()
    monkeypatch.setenv("CNN_MNIST_DIR", str(empty))
    monkeypatch.setenv("CNN_NO_DOWNLOAD", "1")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A small trained-looking network on 12x12 inputs, as .npz and as .mat."""
    d = tmp_path_factory.mktemp("saved")
    net = cnn.initcnn((12, 12), 0.1, seed=2)
    cnn.add_conv_layer(net, 2, 5, "tanh")
    cnn.add_pool_layer(net, 2)
    cnn.add_fc_layer(net, 10, "sigm")
    x, y = synthetic.synthetic_split("train", 40, (12, 12))
    cnn.traincnn(net, x, y, 2, 10, verbose=False)
    save_npz(d / "net.npz", net)
    save_cnn(d / "net.mat", net, var="cnn1")
    return d, net


# --------------------------------------------------------------------------- help, errors


def test_help_as_a_program():
    r = _run("--help")
    assert r.returncode == 0
    for c in COMMANDS:
        assert c in r.stdout


@pytest.mark.parametrize("command", [c for c in COMMANDS if c != "compare"])
def test_help_of_every_subcommand(command, capsys):
    assert cli.main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:") and command in out


def test_help_of_compare_is_the_comparisons(capsys, monkeypatch):
    pytest.importorskip("cnn.cli.compare")
    assert cli.main(["compare", "--help"]) == 0
    assert "usage:" in capsys.readouterr().out


def test_compare_delegates_the_rest_of_the_command_line(monkeypatch):
    calls = []
    stub = types.ModuleType("cnn.cli.compare")

    def main(argv=None, prog=None):
        calls.append((argv, prog))
        return 7

    stub.main = main
    monkeypatch.setitem(sys.modules, "cnn.cli.compare", stub)
    monkeypatch.setattr(cli, "compare", stub, raising=False)
    assert cli.main(["compare", "--seeds", "2", "--quick", "--debug"]) == 7
    assert calls == [(["--seeds", "2", "--quick"], "cnn compare")]


def test_no_command_prints_help_and_exits_2(capsys):
    assert cli.main([]) == 2
    assert "usage:" in capsys.readouterr().out


def test_bad_arguments_as_a_program():
    r = _run("train", "--epochs", "many")
    assert r.returncode == 2
    line = _one_error_line(r.stderr, "train")
    assert "--epochs" in line and "'many'" in line and "cnn train --help" in line
    r = _run("gradcheck", "--net", "huge")
    assert r.returncode == 2
    assert "invalid choice: 'huge'" in _one_error_line(r.stderr)


@pytest.mark.parametrize(
    "argv, text",
    [
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["--frob"], "unrecognized arguments: --frob"),
        (["train", "--batch-size", "0"], "--batch-size"),
        (["train", "--lr", "nan"], "--lr"),
        (["train", "--mode", "fast"], "invalid choice: 'fast'"),
        (["train", "--flag", "2"], "--flag"),
        (["train", "--example", "4"], "--example"),
        (["train", "--dtype", "float16"], "--dtype"),
        (["test"], "NETWORK"),
        (["test", "a.npz", "--synthetic", "-5"], "--synthetic"),
        (["gradcheck", "--mode", "none"], "--mode"),
        (["gradcheck", "--loss", "l2"], "--loss"),
        (["gradcheck", "--max-per-array", "0"], "--max-per-array"),
        (["step", "--batch-size", "x"], "--batch-size"),
        (["step", "--minibatch", "0"], "--minibatch"),
        (["step", "--flag", "yes"], "--flag"),
        (["train", "--synthetic", "25", "--batch-size", "10"], "does not divide"),
        (["train", "--init", "nonexistent.mat"], "no such network file"),
        (["train", "--resume", "nonexistent.npz"], "no such checkpoint"),
        (["test", "nonexistent.npz"], "no such network file"),
        (["step", "--init", "nonexistent.npz", "--synthetic", "10"], "no such network file"),
        (["step", "--synthetic", "10", "--batch-size", "10", "--minibatch", "2"], "needs 20"),
        (
            [
                "gradcheck",
                "--net",
                "fc-only",
                "--loss",
                "cros",
                "--mode",
                "corrected",
                "--net",
                "none-hidden",
            ],
            None,
        ),
    ],
)
def test_bad_arguments_exit_2_with_one_line(argv, text, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = cli.main(argv)
    captured = capsys.readouterr()
    if text is None:  # last --net wins: a valid command
        assert code == 0
        return
    assert code == 2
    assert text in _one_error_line(captured.err)


def test_cross_entropy_needs_a_sigmoid_output(capsys):
    code = cli.main(["gradcheck", "--net", "pool-last", "--loss", "cros"])
    assert code == 2
    assert "loss_func='cros' needs a 'sigm' or 'soft' last layer" in _one_error_line(
        capsys.readouterr().err
    )


def test_unexpected_error_one_line_then_traceback_with_debug(capsys, monkeypatch):
    def boom(args):
        raise RuntimeError("something broke")

    monkeypatch.setattr(gradcheck_cli, "run", boom)
    assert cli.main(["gradcheck"]) == 1
    line = _one_error_line(capsys.readouterr().err, "gradcheck")
    assert "unexpected RuntimeError: something broke" in line and "--debug" in line
    assert cli.main(["gradcheck", "--debug"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "something broke" in err


def test_missing_mnist_says_where_to_put_the_files(saved, capsys, tmp_path):
    d, _ = saved
    # MNIST-sized network so that the test set is looked up
    net = cnn.example_network(3, seed=0)
    save_npz(tmp_path / "ex3.npz", net)
    code = cli.main(["test", str(tmp_path / "ex3.npz"), "--no-download"])
    line = _one_error_line(capsys.readouterr().err, "test")
    assert code == 2
    where = os.environ["CNN_MNIST_DIR"]
    assert line.startswith(f"cnn test: error: MNIST files not found in {where}")
    assert "--data-dir" in line and "CNN_MNIST_DIR" in line and "data_dir" not in line


def test_missing_mnist_as_a_program(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "cnn", "train", "--no-download", "--out", str(tmp_path / "o")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__("os").environ, "CNN_MNIST_DIR": str(tmp_path / "none")},
    )
    assert r.returncode == 2
    line = _one_error_line(r.stderr, "train")
    assert str(tmp_path / "none") in line and "--data-dir" in line


# --------------------------------------------------------------------------- gradcheck


def test_gradcheck_corrected_two_conv_layers_passes(capsys):
    assert cli.main(["gradcheck", "--net", "c2", "--mode", "corrected"]) == 0
    out = capsys.readouterr().out
    assert "| layer | type | param |" in out and "PASS" in out and "**no**" not in out


def test_gradcheck_faithful_two_conv_layers_fails_on_the_lower_conv_layer(capsys):
    assert cli.main(["gradcheck", "--net", "c2", "--mode", "faithful"]) == 1
    out = capsys.readouterr().out
    rows = {
        tuple(c.strip() for c in ln.strip("|").split("|")[:3]): ln
        for ln in out.splitlines()
        if ln.startswith("| ") and "---" not in ln
    }
    assert "**no**" in rows[("2", "c", "K")]
    assert "**no**" not in rows[("4", "c", "K")] and "**no**" not in rows[("7", "f", "W")]
    assert "FAIL: layer 2 K" in out


def test_gradcheck_default_and_max_per_array(capsys):
    assert cli.main(["gradcheck", "--max-per-array", "3"]) == 0
    out = capsys.readouterr().out
    assert "c(tanh 2 maps 3x3)-p2-f(tanh 6)-f(sigm 3) on 8x8" in out
    assert "| 2 | c | K | 3 |" in out


# --------------------------------------------------------------------------- test


@pytest.mark.parametrize("name, extra", [("net.npz", []), ("net.mat", ["--var", "cnn1"])])
def test_test_command_prints_the_error(saved, capsys, name, extra):
    d, net = saved
    code = cli.main(["test", str(d / name), *extra, "--synthetic", "30"])
    out = capsys.readouterr().out
    assert code == 0
    tx, ty = synthetic.synthetic_split("test", 30, (12, 12))
    err = cnn.testcnn(net, tx, ty)
    wrong = round(err * 30)
    assert f"test error is {err:.4f} ({wrong} of 30 misclassified)" in out


def test_test_command_wrong_variable(saved, capsys):
    d, _ = saved
    assert cli.main(["test", str(d / "net.mat"), "--synthetic", "10"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "no variable 'cnn'" in line and "cnn1" in line


def test_test_command_plots(saved, capsys, tmp_path):
    d, _ = saved
    code = cli.main(
        ["test", str(d / "net.npz"), "--synthetic", "20", "--plots", str(tmp_path / "p")]
    )
    assert code == 0
    for name in ("confusion.png", "kernels.png", "feature_maps.png"):
        assert (tmp_path / "p" / name).read_bytes()[:4] == b"\x89PNG"


def test_test_command_corrupt_file(capsys, tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file at all")
    assert cli.main(["test", str(bad), "--synthetic", "10"]) == 2
    assert "is a text file, not a network file" in _one_error_line(capsys.readouterr().err)


# --------------------------------------------------------------------------- bench


def test_bench_without_the_script(capsys, monkeypatch):
    if bench_cli.importlib.util.find_spec("cnn.bench") is not None:
        pytest.skip("the benchmark is a module of the package (cnn.bench)")
    monkeypatch.setattr(bench_cli, "bench_script", lambda: None)
    assert cli.main(["bench", "--images", "10"]) == 2
    assert "scripts/bench.py not found" in _one_error_line(capsys.readouterr().err, "bench")
    assert cli.main(["bench", "--help"]) == 0


def test_bench_passes_arguments_through(monkeypatch, tmp_path):
    script = tmp_path / "bench.py"
    out = tmp_path / "argv.txt"
    script.write_text(
        f"import sys\nopen({str(out)!r}, 'w').write(' '.join(sys.argv[1:]))\nsys.exit(3)\n"
    )
    if bench_cli.importlib.util.find_spec("cnn.bench") is not None:
        pytest.skip("the benchmark is a module of the package (cnn.bench)")
    monkeypatch.setattr(bench_cli, "bench_script", lambda: script)
    assert cli.main(["bench", "--images", "100", "--skip-torch", "--json", "b.json"]) == 3
    assert out.read_text() == "--images 100 --skip-torch --json b.json"


def test_version(capsys):
    assert cli.main(["--version"]) == 0
    assert cnn.__version__ in capsys.readouterr().out


def test_closed_stdout_is_not_an_error():
    """``python -m cnn ... | head``: the reader goes away; no error message, no traceback."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # block-buffered
    p = subprocess.Popen(
        [sys.executable, "-m", "cnn", "gradcheck", "--net", "fc-only"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    p.stdout.close()
    err = p.stderr.read().decode()
    p.stderr.close()
    assert p.wait(timeout=120) == 1
    assert err == ""

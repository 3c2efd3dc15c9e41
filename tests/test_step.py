"""``python -m cnn step``: the layer-by-layer report of bpcnn, and the debugger stop."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _nets import build, data

import cnn
from cnn import cli, step
from cnn.forward import flatten_maps
from cnn.matlab import save_cnn
from cnn.nets import gradcheck_network

REPO = Path(__file__).resolve().parent.parent

NETS = {
    "c2": [
        ("c", 2, 3, "tanh"),
        ("p", 2),
        ("c", 3, 2, "tanh"),
        ("p", 2),
        ("f", 6, "tanh"),
        ("f", 3, "sigm"),
    ],
    "none_hidden": [("c", 2, 3, "sigm"), ("p", 2), ("f", 5, "none"), ("f", 3, "sigm")],
    "conv_last": [("c", 2, 3, "sigm")],
    "pool_last": [("c", 2, 3, "sigm"), ("p", 2)],
    "conv_conv": [("c", 2, 3, "tanh"), ("c", 2, 2, "soft"), ("p", 1), ("f", 3, "tanh")],
}


def _report(spec, mode="faithful", flag=None, size=(12, 12), loss="auto"):
    net = build(spec, size, mode=mode, loss=loss)
    x, y = data(net, n=3)
    if flag is not None:
        net.calc_last_layer_act_derivative = flag
    rep = step.step_report(net, x, y)
    return net, y, rep


@pytest.mark.parametrize("name", list(NETS))
@pytest.mark.parametrize("mode", ["faithful", "corrected"])
def test_every_layer_last_to_first_with_norms_of_the_attributes(name, mode):
    net, y, rep = _report(NETS[name], mode)
    L = len(net.layers)
    assert [s.layer for s in rep.layers] == list(range(L, 0, -1))
    for s in rep.layers:
        layer = net.layers[s.layer - 1]
        assert s.type == layer.type
        assert s.lines and all(re.fullmatch(r"[0-9, -]+", ln.matlab) for ln in s.lines if ln.matlab)
        if layer.type == "i":
            assert s.er_norm is None
            continue
        assert s.er_shape == layer.er.shape
        assert s.er_norm == np.linalg.norm(layer.er)
        for g in ("dK", "dW", "db"):
            if getattr(layer, g, None) is not None:
                assert s.grad_norms[g] == np.linalg.norm(getattr(layer, g))
    o = net.layers[-1].outputs
    np.testing.assert_array_equal(rep.e_before, o - y)
    last = net.layers[-1]
    if last.type == "f":
        np.testing.assert_array_equal(rep.e_after, last.er)
    elif last.type == "c":
        np.testing.assert_array_equal(rep.e_after, flatten_maps(last.er))
    assert rep.loss == net.loss


def test_report_text_cites_the_matlab_lines_in_order():
    net, y, rep = _report(NETS["c2"])
    text = rep.format()
    heads = [int(m) for m in re.findall(r"^layer (\d+) ", text, flags=re.M)]
    assert heads == [7, 6, 5, 4, 3, 2, 1]
    for ref in (
        "bpcnn.m:13 ",
        "bpcnn.m:15-17, 27",
        "bpcnn.m:35 ",
        "bpcnn.m:41-44",
        "bpcnn.m:102",
        "bpcnn.m:105-106",
        "bpcnn.m:107",
        "bpcnn.m:108",
        "bpcnn.m:112-120",
        "bpcnn.m:121-132",
        "bpcnn.m:138-148",
        "bpcnn.m:169-171",
        "bpcnn.m:181-185",
        "bpcnn.m:189-205",
        "bpcnn.m:206",
    ):
        assert ref in text, ref
    for s in rep.layers:
        if s.er_norm is not None:
            assert f"norm {s.er_norm:.6e}" in text
            for g, v in s.grad_norms.items():
                assert f"{g} {step._shape(s.grad_shapes[g])} norm {v:.6e}" in text
    # faithful mode names D1 at the pool layer under the upper conv layer
    assert "D1 (faithful)" in text and "bpcnn.m:130" in text
    _, _, corrected = _report(NETS["c2"], "corrected")
    assert "D1" not in corrected.format()


def test_defects_are_named_where_faithful_keeps_them():
    for name, defect in (("none_hidden", "D2"), ("conv_last", "D3"), ("pool_last", "D4")):
        _, _, rep = _report(NETS[name], "faithful")
        assert f"{defect} (faithful)" in rep.format()
        _, _, rep = _report(NETS[name], "corrected")
        assert f"{defect} (faithful)" not in rep.format()


def test_last_pool_and_conv_layers_are_flattened():
    _, _, rep = _report(NETS["pool_last"], "faithful", flag=True, loss="quad")
    text = rep.format()
    assert "bpcnn.m:5-12" in text and "bpcnn.m:45-76" in text
    assert "bpcnn.m:35-36" in text  # the flag applied ('none' derivative: o, D2 in faithful)
    _, _, rep = _report(NETS["conv_last"])
    assert "bpcnn.m:83-88" in rep.format() and "bpcnn.m:90-95" in rep.format()


def test_the_flag_changes_the_output_error():
    spec = [("c", 2, 3, "tanh"), ("p", 2), ("f", 4, "sigm")]
    net0, y, off = _report(spec, flag=False, size=(8, 8))
    net1, _, on = _report(spec, flag=True, size=(8, 8))
    np.testing.assert_array_equal(off.e_before, on.e_before)  # same forward pass
    np.testing.assert_array_equal(off.e_after, off.e_before)  # flag 0: o - y
    o = net1.layers[-1].outputs
    np.testing.assert_allclose(on.e_after, o * (1 - o) * (o - y), rtol=1e-15)
    assert np.linalg.norm(on.e_after) < 0.25 * np.linalg.norm(off.e_after) + 1e-12
    assert "flag 0, er stays outputs - yy" in off.format()
    assert "flag 1, er = applyactfunccnn(outputs, 'sigm', 1, er) = o(1-o) .* er" in on.format()
    # every layer's error changes with it
    for a, b in zip(off.layers[:-1], on.layers[:-1]):
        assert a.er_norm != b.er_norm


def test_flag_line_is_found_in_the_source():
    path, line = step.flag_line()
    text = Path(path).read_text().splitlines()[line - 1]
    assert text.strip().startswith("if net.calc_last_layer_act_derivative:")
    assert Path(path).name == "backward.py"


def test_step_command_on_synthetic_digits(capsys, tmp_path):
    code = cli.main(
        [
            "step",
            "--synthetic",
            "20",
            "--batch-size",
            "5",
            "--minibatch",
            "2",
            "--mode",
            "corrected",
            "--flag",
            "on",
            "--plot",
            str(tmp_path / "e.png"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "Example 3 of Example_MNIST_CNN.m" in out and "examples 6-10" in out
    assert "CalcLastLayerActDerivative = 1" in out
    assert [int(m) for m in re.findall(r"^layer (\d+) ", out, flags=re.M)] == [7, 6, 5, 4, 3, 2, 1]
    assert (tmp_path / "e.png").read_bytes()[:4] == b"\x89PNG"


def test_step_command_falls_back_to_synthetic_without_mnist(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("CNN_MNIST_DIR", str(tmp_path))
    assert cli.main(["step", "--batch-size", "4", "--example", "1"]) == 0
    captured = capsys.readouterr()
    assert "MNIST not found" in captured.err and "synthetic digits" in captured.out


def test_step_command_with_a_network_file(capsys, tmp_path):
    net = build(NETS["c2"], (12, 12), mode="corrected")
    cnn.add_fc_layer(net, 10, "sigm")
    path = tmp_path / "n.mat"
    save_cnn(path, net, var="cnn_init")
    assert (
        cli.main(
            [
                "step",
                "--init",
                str(path),
                "--init-var",
                "cnn_init",
                "--synthetic",
                "8",
                "--batch-size",
                "4",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "corrected mode" in out and "layer 8 " in out


def _pdb(stdin, *extra):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "cnn",
            "step",
            "--synthetic",
            "10",
            "--batch-size",
            "5",
            "--pdb",
            *extra,
        ],
        cwd=REPO,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_pdb_stops_at_the_flag_line():
    _, line = step.flag_line()
    r = _pdb("p net.calc_last_layer_act_derivative\np float(abs(e).sum() > 0)\nc\n")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert f"backward.py({line})bpcnn()" in out
    assert "-> if net.calc_last_layer_act_derivative:" in out
    after = out.split("-> if net.calc_last_layer_act_derivative:", 1)[1]
    assert "(Pdb) False" in after and "(Pdb) 1.0" in after  # flag 0 derived; e computed
    assert "bpcnn, step by step" in after  # the report after 'c'


def test_pdb_with_the_flag_forced_on_and_quit():
    r = _pdb("p net.calc_last_layer_act_derivative\nq\n", "--flag", "on")
    assert r.returncode == 0, r.stderr
    assert "(Pdb) True" in r.stdout
    assert "left in the debugger" in r.stdout and "bpcnn, step by step" not in r.stdout


def test_step_on_a_small_gradcheck_network_is_the_gradcheck_batch(capsys):
    """``step --net c2 --batch-size 4`` runs the very batch ``gradcheck --net c2`` checks."""
    assert cli.main(["step", "--net", "c2", "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    assert "c2: two conv layers" in out and "random images" in out
    assert [int(m) for m in re.findall(r"^layer (\d+) ", out, flags=re.M)] == [7, 6, 5, 4, 3, 2, 1]
    assert "D1 (faithful)" in out
    net, x, y = gradcheck_network("c2", n=4)
    rep = step.step_report(net, x, y)
    dk = f"dK (2, 1, 3, 3) norm {rep.layer(2).grad_norms['dK']:.6e}"
    assert dk in out


def test_step_net_excludes_other_networks_and_data(capsys):
    assert cli.main(["step", "--net", "c2", "--synthetic", "10"]) == 2
    assert "--net builds its own network" in capsys.readouterr().err


def test_plot_maps_shows_the_error_of_one_example(capsys, tmp_path, monkeypatch):
    calls = {}
    real = step.plot_error_maps

    def spy(net, path, **kw):
        calls["er"] = [None if L.er is None else L.er.copy() for L in net.layers]
        calls.update(kw)
        return real(net, path, **kw)

    monkeypatch.setattr(step, "plot_error_maps", spy)
    png = tmp_path / "maps.png"
    assert (
        cli.main(
            [
                "step",
                "--net",
                "none-hidden",
                "--batch-size",
                "3",
                "--plot-maps",
                str(png),
                "--example-index",
                "2",
            ]
        )
        == 0
    )
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert calls["example"] == 1 and calls["er"][0] is None  # 0-based; input layer has none
    assert (
        cli.main(
            [
                "step",
                "--net",
                "small",
                "--batch-size",
                "3",
                "--plot-maps",
                str(png),
                "--example-index",
                "4",
            ]
        )
        == 2
    )
    assert "--example-index 4" in capsys.readouterr().err

"""Make docs/results/flag_mnist.json, the compact full-MNIST flag results the notebooks load.

Input: the results.json of one ``python -m cnn compare --out DIR`` run (Example 3,
full MNIST, 1 epoch, seeds 0-4, five settings; a few MB with every loss array).
Output: the per-run test errors and loss curves averaged over blocks of
``--block`` minibatches (cross-entropy and quadratic loss of every minibatch,
before its update), the gradient-norm probes, and the run's metadata.

    CNN_MNIST_DIR=... python -m cnn compare --out /tmp/compare
    python scripts/flag_results_json.py /tmp/compare/results.json docs/results/flag_mnist.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cnn.atomic import write_text  # noqa: E402


def _blocks(a, block):
    a = np.asarray(a, dtype=float)
    n = a.size // block * block
    return [float(f"{v:.6g}") for v in a[:n].reshape(-1, block).mean(axis=1)]


def compact(results, block):
    runs = {}
    for r in results["runs"]:
        if r.get("status") != "ok":
            continue
        s = runs.setdefault(
            r["setting"],
            {
                "seeds": [],
                "test_error": [],
                "misclassified": [],
                "loss_cros": [],
                "loss_quad": [],
                "grad_ratio_last": [],
            },
        )
        s["seeds"].append(r["seed"])
        s["test_error"].append(r["test_error"][-1])  # after the last epoch
        s["misclassified"].append(r["misclassified"][-1])
        s["loss_cros"].append(_blocks(r["loss_cros"], block))
        s["loss_quad"].append(_blocks(r["loss_quad"], block))
        p = r["probe"]
        s["grad_ratio_last"].append(
            [float(f"{a / b:.6g}") for a, b in zip(p["last_on"], p["last_off"], strict=True)]
        )
    probe_step = next(r["probe"]["step"] for r in results["runs"] if r.get("status") == "ok")
    meta = dict(results["meta"])
    meta["derived_by"] = (
        "scripts/flag_results_json.py: loss curves are means over blocks of "
        f"{block} minibatches; grad_ratio_last = ||dW_last|| flag on / flag off "
        "on the same network state and minibatch, at probe_step"
    )
    return {
        "meta": meta,
        "block": block,
        "probe_step": probe_step,
        "settings": results["settings"],
        "runs": runs,
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", type=Path, help="results.json of python -m cnn compare")
    p.add_argument("out", type=Path, help="the compact JSON to write")
    p.add_argument("--block", type=int, default=10, help="minibatches per loss point (10)")
    args = p.parse_args(argv)
    data = compact(json.loads(args.results.read_text()), args.block)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text(args.out, json.dumps(data, separators=(",", ":")) + "\n")
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The Octave reference runs of Example 3 on full MNIST, reproduced exactly.

``tests/fixtures/example3_reference.npz`` holds what the original (run under GNU
Octave 7.3, ``rand('seed', 59223)``) produced: the initial parameters, and for
the flag as derived (off) and forced on, the test error, the predicted labels,
the 1,200 minibatch losses and the trained parameters. Written from the
reference MAT-files with ``cnn.studies.reproduce.write_reference_fixture``.
"""

from pathlib import Path

import numpy as np
import pytest

from cnn.mnist import MNISTNotFoundError, load_mnist
from cnn.studies import reproduce as experiments

FIXTURE = Path(__file__).parent / "fixtures" / "example3_reference.npz"

pytestmark = [pytest.mark.slow, pytest.mark.mnist]


@pytest.fixture(scope="module")
def mnist():
    try:
        return load_mnist(download=False, progress=False)
    except MNISTNotFoundError as exc:
        pytest.skip(f"MNIST not found: {exc}")


@pytest.mark.parametrize("step", ["layers", "fused"])
@pytest.mark.parametrize(
    "flag, wrong", [(None, 832), (True, 2787)], ids=["flag-derived-off", "flag-forced-on"]
)
def test_reproduces_the_octave_run(mnist, flag, wrong, step, monkeypatch):
    monkeypatch.setenv("CNN_STEP", step)  # both training steps reproduce the Octave epoch
    r = experiments.reproduce_reference(FIXTURE, flag, data=mnist)
    ref = experiments.load_reference(FIXTURE, flag)
    assert r["misclassified"] == wrong == r["ref_misclassified"]
    assert r["err"] == ref["err"]
    np.testing.assert_array_equal(r["pred"], ref["pred"])
    np.testing.assert_allclose(r["net"].loss_array, ref["loss_array"], rtol=1e-9, atol=0)
    for i, name, a in r["net"].parameters():
        b = ref["params"][f"layer{i + 1}.{name}"]
        assert a.shape == b.shape
        assert np.abs(a - b).max() <= 1e-9 * np.abs(b).max(), (i + 1, name)
    assert r["match"] and r["params_max_rel"] <= 1e-9 and r["loss_array_max_rel"] <= 1e-9

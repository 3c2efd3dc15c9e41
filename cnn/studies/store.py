"""The run store: one JSON record per training, written the moment it finishes.

A study is a list of *run specs*: plain dicts holding everything that decides a
training's numbers (study, setting, seed, epochs, learning rate, batch size,
mode, dtype, the data's fingerprint, the package's version, and the study's
other knobs). A spec's key is a hash of its canonical JSON, and its record is
``<out>/runs/<key>.json``::

    {"format": "cnn-run-record-1", "key": "...", "spec": {...}, "record": {...}}

written atomically (:func:`cnn.atomic.write_text`). A rerun of the same
command finds every finished record and trains only the missing ones; an
interruption never loses a finished run and never leaves half a record. The
records are JSON (no pickle), readable on their own, and the same store serves
local workers and a Dask cluster.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..atomic import write_text
from .report import json_safe

FORMAT = "cnn-run-record-1"


def spec_key(spec):
    """The key of a run spec: 20 hex digits of the SHA-256 of its canonical JSON.

    Parameters
    ----------
    spec : dict
        JSON-ready values only (str, int, float, bool, None, lists, dicts).

    Returns
    -------
    str
    """
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


class RunStore:
    """The records of one output folder (``<out>/runs/``).

    Parameters
    ----------
    out : str or Path
        The study's output folder; ``runs/`` is created in it.
    """

    def __init__(self, out):
        self.folder = Path(out) / "runs"
        self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, key):
        """The record file of ``key``."""
        return self.folder / f"{key}.json"

    def load(self, spec):
        """The finished record of ``spec``, or ``None``.

        A file that cannot be read, is not a record, or holds another spec
        (a hash collision, an edited file) counts as missing.
        """
        key = spec_key(spec)
        try:
            doc = json.loads(self.path(key).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("spec") != spec:
            return None
        rec = doc.get("record")
        return rec if isinstance(rec, dict) else None

    def save(self, spec, record):
        """Write ``record`` (a JSON-ready dict; NaN/Inf become ``null``) for ``spec``."""
        key = spec_key(spec)
        doc = {"format": FORMAT, "key": key, "spec": spec, "record": json_safe(record)}
        return write_text(self.path(key), json.dumps(doc, indent=1, allow_nan=False) + "\n")

    def remove(self, spec):
        """Forget the record of ``spec`` (``--fresh``); no error when there is none."""
        self.path(spec_key(spec)).unlink(missing_ok=True)

    def keys(self):
        """Keys of every record file in the store."""
        return sorted(p.stem for p in self.folder.glob("*.json"))

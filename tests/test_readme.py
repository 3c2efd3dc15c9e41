"""The README's examples run as written."""

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _block(heading):
    text = README.read_text()
    section = text.split(heading, 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_ten_line_example_runs():
    code = _block("## A first network in ten lines")
    assert len([l for l in code.splitlines() if l.strip()]) <= 12
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    m = re.search(r"test error: ([0-9.]+)", out.getvalue())
    assert m and 0.0 <= float(m.group(1)) <= 1.0
    assert "training started..." in out.getvalue()

"""The README's quick-start snippet runs as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_quick_start_python_snippet_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "README has no python quick-start block"
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)  # noqa: S102 - our own README
    assert tuple(namespace["logits"].shape) == (4, 10)
    assert tuple(namespace["trace"].fixations.shape) == (4, 3, 2)
    assert tuple(namespace["logits3d"].shape) == (2, 2)

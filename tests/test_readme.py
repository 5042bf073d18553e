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


def _subcommand_flags() -> dict[str, set[str]]:
    import argparse

    from focusnet.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {name: {s for a in p._actions for s in a.option_strings} for name, p in sub.choices.items()}


def test_every_flag_the_command_line_section_names_exists():
    """A flag renamed or dropped in the CLI must not live on in the README's command-line section."""
    text = README.read_text()
    section = text[text.index("## The command line"):text.index("**Presets.**")]
    flags = _subcommand_flags()
    known = set().union(*flags.values())
    named = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9_-]*)", section))
    assert {"--overlay", "--indices", "--seed-workers"} <= named  # the parse finds the section's flags
    assert named - known == set(), f"README names flags no command has: {sorted(named - known)}"
    for line in section.splitlines():  # a "- `cmd`: flags" line names flags of that command
        m = re.match(r"- `([a-z-]+)`: (.*)", line)
        if m and m.group(1) in flags:
            first = m.group(2).split("; `")[0]  # up to a second command on the same line
            missing = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9_-]*)", first)) - flags[m.group(1)]
            assert not missing, f"README gives `{m.group(1)}` flags it lacks: {sorted(missing)}"

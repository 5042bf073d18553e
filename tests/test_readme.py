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


FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9_-]*)")


def _claims(section: str) -> list[tuple[str, str]]:
    """(command, text) for each piece of the command-line section that speaks of one command: a
    table row, a bullet of the train options, each `cmd`: part of the other commands' bullets."""
    claims, in_train = [], False
    for line in section.splitlines():
        if line.startswith("Main `train` options"):
            in_train = True
        elif line.startswith("The other commands' options"):
            in_train = False
        if m := re.match(r"\| `([a-z-]+)", line):
            claims.append((m.group(1), line))
        elif line.startswith("- ") and in_train:
            claims.append(("train", line))
        elif line.startswith("- `"):
            claims += [(m.group(1), m.group(2)) for part in re.split(r"; (?=`[a-z-]+`: )", line[2:]) if (m := re.match(r"`([a-z-]+)`: (.*)", part))]
    return claims


def test_every_flag_the_command_line_section_names_exists():
    """A flag renamed or dropped in the CLI must not live on in the README's command-line section:
    each flag is checked against the command the README gives it to."""
    text = README.read_text()
    section = text[text.index("## The command line"):text.index("**Presets.**")]
    flags = _subcommand_flags()
    claims = _claims(section)
    assert {c for c, _ in claims} == set(flags)  # every command is spoken of, and nothing else
    assert {"--overlay", "--indices", "--seed-workers", "--compile"} <= {f for _, t in claims for f in FLAG.findall(t)}
    for command, claim in claims:
        missing = set(FLAG.findall(claim)) - flags[command]
        assert not missing, f"README gives `{command}` flags it lacks: {sorted(missing)}"

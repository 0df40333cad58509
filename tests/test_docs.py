"""The README and docs/ hold together: every relative link (and its #anchor) points at something that exists,
every command they show parses with the real command line, and every flag of ``python -m train`` is in the
options reference (``benchmarks.run``'s flags: tests/benchmarks/test_plan.py)."""
from __future__ import annotations

import argparse
import importlib
import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
OPTIONS_REFERENCE = REPO / "docs" / "options.md"

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _without_code(text: str) -> str:
    """``text`` without fenced blocks and inline code, where brackets are not links."""
    text = FENCE.sub("", text)
    return re.sub(r"`[^`\n]*`", "", text)


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: link markup reduced to its text, lower case, punctuation other
    than '-' and '_' dropped, spaces as '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of ``page``, repeated headings numbered as GitHub numbers them."""
    seen: dict[str, int] = {}
    found = set()
    for line in FENCE.sub("", page.read_text(encoding="utf-8")).splitlines():
        match = re.match(r"#{1,6} (.+)", line)
        if not match:
            continue
        anchor = github_anchor(match.group(1))
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        found.add(anchor if count == 0 else f"{anchor}-{count}")
    return found


def test_github_anchor_follows_githubs_rule():
    assert github_anchor("The `vqa` suite") == "the-vqa-suite"
    assert github_anchor("`python -m train stage`") == "python--m-train-stage"
    assert github_anchor("Your own MLLMs (LLaVA, LLaVA-OneVision, transformers)") == "your-own-mllms-llava-llava-onevision-transformers"
    assert github_anchor("Bad input: what is checked when") == "bad-input-what-is-checked-when"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(REPO).as_posix())
def test_every_relative_link_points_at_an_existing_file_and_heading(page):
    broken = []
    for target in LINK.findall(_without_code(page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading with that anchor in {resolved.relative_to(REPO)}")
    assert not broken, f"{page.relative_to(REPO)}:\n" + "\n".join(broken)


def test_the_readme_opens_with_the_two_commands():
    first_block = FENCE.search((REPO / "README.md").read_text(encoding="utf-8")).group(2)
    assert re.search(r"^make demo\b", first_block, re.MULTILINE) and re.search(r"^make test\b", first_block, re.MULTILINE)


def _train_subparsers() -> dict[str, argparse.ArgumentParser]:
    from train.__main__ import build_parser

    return next(action for action in build_parser()._actions if isinstance(action, argparse._SubParsersAction)).choices


def test_every_train_flag_is_in_the_options_reference():
    reference = OPTIONS_REFERENCE.read_text(encoding="utf-8")
    missing = []
    for name, parser in _train_subparsers().items():
        assert f"`python -m train {name}`" in reference, f"python -m train {name} has no section in docs/options.md"
        for action in parser._actions:
            for flag in action.option_strings:
                if flag.startswith("--") and flag != "--help" and not re.search(rf"`{re.escape(flag)}[ `=]", reference):
                    missing.append(f"python -m train {name} {flag}")
    assert not missing, "not documented in docs/options.md:\n" + "\n".join(missing)


# ---------------------------------------------------------------- every command shown parses

class _Parsed(Exception):
    """Raised right after a command line parsed, so that nothing runs."""


def _shown_commands() -> list[tuple[str, str, list[str]]]:
    """(page, module, argv) of every ``python -m MODULE ...`` or ``torchrun ... -m MODULE ...`` line of the
    bash blocks in README.md and docs/ (continuation lines joined, comments dropped); lines with ``...``
    placeholders are left out."""
    commands = []
    for page in PAGES:
        for language, block in FENCE.findall(page.read_text(encoding="utf-8")):
            if language != "bash":
                continue
            for line in block.replace("\\\n", " ").splitlines():
                words = shlex.split(line, comments=True)
                if "-m" not in words or "..." in line or words[0] not in ("python", "torchrun"):
                    continue
                at = words.index("-m")
                commands.append((page.relative_to(REPO).as_posix(), words[at + 1], words[at + 2:]))
    return commands


MODULES = ("benchmarks.run", "benchmarks.check", "benchmarks.demo", "reports.build", "encoders", "train")


def test_the_pages_show_commands_of_every_kind():
    shown = {module for _, module, _ in _shown_commands()}
    assert set(MODULES) <= shown, f"no command shown for {set(MODULES) - shown}"


@pytest.mark.parametrize("page, module, argv", [c for c in _shown_commands() if c[1] in MODULES],
                         ids=lambda value: value if isinstance(value, str) else " ".join(value)[:60])
def test_every_command_shown_parses(page, module, argv, monkeypatch, capsys):
    """The command line of the page parses with the module's own parser (flags, choices and positional
    arguments exist); the command itself does not run."""
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        original(self, args, namespace)
        raise _Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    entry = importlib.import_module(f"{module}.__main__" if module in ("encoders", "train") else module)
    parse = getattr(entry, "parse_args", None) or entry.main  # train and benchmarks.run parse in a function of their own
    with pytest.raises(_Parsed):
        try:
            parse(argv)
        except SystemExit:
            pytest.fail(f"{page}: `python -m {module} {' '.join(argv)}` does not parse: {capsys.readouterr().err.strip().splitlines()[-1]}")

"""Every ``dmg ...`` command that dmg tells a user to run exists.

Given every quoted ``dmg`` command in the source tree (a hint, an example, a docstring:
a string literal starting with "dmg " or a `backticked` one), in the README (backticks
and code blocks) and in every ``--help`` output, when its words are resolved through
the click command tree, then each names a command or a group (options and arguments
may follow the command).
"""

from __future__ import annotations

import re
from pathlib import Path

import click
from click.testing import CliRunner

from dmg.cli.lazygroup import subcommands
from dmg.cli.main import cli
from tests.cli.test_help import command_paths

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("dmg", "workers", "dispatcher", "settings")

#: `dmg word word ...` as far as the words look like command names (then options,
#: placeholders, arguments, punctuation or the end of the quote follow).
_COMMAND = re.compile(r"(?<![\w/.$-])dmg((?: [a-z][a-z0-9-]*)+)(?![\w:])")
_IN_SOURCE = re.compile(r"`(dmg [^`]*)`|[\"'](dmg [^\"']*)")
_IN_README = re.compile(r"`(dmg [^`]*)`")


def resolve(words: list[str]) -> str | None:
    """None if ``dmg <words>`` names a command (extra words are its arguments), else why not."""
    command: click.Command = cli
    for depth, word in enumerate(words):
        if not isinstance(command, click.Group):
            return None  # a command: the rest are its arguments
        commands = subcommands(command)
        sub = commands.get(word)
        if sub is None:
            known = ", ".join(sorted(commands))
            parent = " ".join(["dmg", *words[:depth]])
            return f"`{parent} {word}` does not exist (`{parent}` has: {known})"
        command = sub
    return None


def quoted_commands(text: str, quotes: re.Pattern[str]) -> list[str]:
    found = []
    for match in quotes.finditer(text):
        quote = next(group for group in match.groups() if group)
        found += [f"dmg{m.group(1)}" for m in _COMMAND.finditer(quote)]
    return found


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    found = quoted_commands(text, _IN_README)
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S):
        found += [f"dmg{m.group(1)}" for m in _COMMAND.finditer(block)]
    return found


def broken(commands: dict[str, str]) -> list[str]:
    """``where: why`` for each command that does not resolve."""
    wrong = []
    for command, where in sorted(commands.items()):
        why = resolve(command.split()[1:])
        if why:
            wrong.append(f"{where}: {why}")
    return wrong


def test_the_resolver_tells_commands_from_typos() -> None:
    assert resolve(["runs", "list"]) is None and resolve(["node"]) is None
    assert resolve(["scale", "node1", "--concurrency", "8"]) is None
    assert "`dmg run` does not exist" in str(resolve(["run", "list"]))
    assert "`dmg cloud tokens` does not exist" in str(resolve(["cloud", "tokens"]))
    assert quoted_commands('hint="(`dmg credential set STORE`)"', _IN_SOURCE) == ["dmg credential set"]


def test_every_command_quoted_in_the_source_exists() -> None:
    commands: dict[str, str] = {}
    for package in SOURCES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for command in quoted_commands(path.read_text(), _IN_SOURCE):
                commands.setdefault(command, str(path.relative_to(ROOT)))
    assert len(commands) > 20  # the scan sees the hints
    assert broken(commands) == []


def test_every_command_in_the_readme_exists() -> None:
    commands = {command: "README.md" for command in readme_commands()}
    assert {"dmg up", "dmg node list"} <= set(commands)  # the scan sees the examples
    assert broken(commands) == []


def test_every_command_in_help_exists() -> None:
    commands: dict[str, str] = {}
    runner = CliRunner()
    for path in command_paths():
        shown = runner.invoke(cli, [*path, "--help"], prog_name="dmg")
        assert shown.exit_code == 0, shown.output
        for command in quoted_commands(shown.output.replace("\n", " "), re.compile(r"(.+)", re.S)):
            commands.setdefault(command, f"dmg {' '.join(path)} --help")
    assert broken(commands) == []


#: A command the portal shows: in ``<code>`` or a ``<pre>`` block of its templates.
_IN_TEMPLATE = re.compile(r"<code>(dmg [^<]*)</code>|<pre[^>]*>(dmg [^<]*)</pre>", re.S)


def test_every_command_the_portal_shows_exists() -> None:
    """The sign-in page, the empty states and "add a node" name real commands."""
    commands: dict[str, str] = {}
    for path in sorted((ROOT / "dmg" / "cloud" / "portal" / "templates").glob("*.html")):
        text = path.read_text()
        for match in _IN_TEMPLATE.finditer(text):
            for line in next(group for group in match.groups() if group).splitlines():
                for found in _COMMAND.finditer(line):
                    commands.setdefault(f"dmg{found.group(1)}", str(path.relative_to(ROOT)))
    assert {"dmg cloud token", "dmg node register", "dmg node start"} <= set(commands)
    assert broken(commands) == []
    assert "`dmg cloud tokens` does not exist" in broken({"dmg cloud tokens": "x"})[0]

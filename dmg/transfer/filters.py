"""Include/exclude glob filters on paths relative to the activity's source path.

Pattern rules (gitignore- and rclone-like):

- ``*`` matches within one path segment, ``?`` one character of it, ``[abc]`` /
  ``[!abc]`` a character class, ``**`` any run of segments (``logs/**``,
  ``**/tmp/*``);
- a pattern without ``/`` matches the file name at any depth (``*.csv``);
- a pattern with ``/`` is anchored at the source path (a leading ``/`` is optional);
- a pattern ending in ``/`` matches everything under such a folder (``tmp/``).

A file is copied when it matches some include pattern (or none is given) and no
exclude pattern: exclude wins.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from dmg.errors import BadInput


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """Compile one glob (see the module docstring); BadInput when it is malformed."""
    glob = pattern.strip()
    if not glob or glob == "/":
        raise BadInput(f"glob {pattern!r} is empty")
    if glob.endswith("/"):
        glob += "**"
    anchored = "/" in glob.rstrip("/")
    glob = glob.lstrip("/")
    out: list[str] = []
    i = 0
    while i < len(glob):
        c = glob[i]
        if glob.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            start = i + 1
            if glob.startswith("!", start):
                start += 1
            if glob.startswith("]", start):  # a leading ']' is literal
                start += 1
            end = glob.find("]", start)
            if end < 0:
                raise BadInput(f"glob {pattern!r} has an unclosed '['",
                               hint="close the character class, or write [[] for a literal '['")
            body = glob[i + 1:end].replace("\\", "\\\\").replace("[", "\\[")
            if body.startswith("!"):
                body = "^" + body[1:]
            elif body.startswith("^"):
                body = "\\" + body
            out.append("[" + body + "]")
            i = end + 1
        else:
            out.append(re.escape(c))
            i += 1
    prefix = "" if anchored else "(?:.*/)?"
    try:
        return re.compile(prefix + "".join(out) + r"\Z")
    except re.error as exc:
        raise BadInput(f"glob {pattern!r} is malformed ({exc})") from None


class PathFilter:
    """``filter(path)`` is True when ``path`` (relative to the source) is to be copied."""

    def __init__(self, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> None:
        self.include = [glob_to_regex(p) for p in include]
        self.exclude = [glob_to_regex(p) for p in exclude]

    @property
    def active(self) -> bool:
        return bool(self.include or self.exclude)

    def __call__(self, relative: str) -> bool:
        path = relative.strip("/")
        if any(p.match(path) for p in self.exclude):
            return False
        return not self.include or any(p.match(path) for p in self.include)

    def select(self, paths: Iterable[str]) -> list[str]:
        return [p for p in paths if self(p)]

"""Two installs of dmg that differ only in their version, for upgrade tests.

:func:`dmg_tree` copies this checkout's packages (``dmg``, ``settings``, ``workers``,
``dispatcher``) to a folder with ``dmg/version.py`` saying another version.
:class:`Install` is a virtual environment of its own whose ``.pth`` file puts one such
tree first, then this test run's site-packages (so nothing is downloaded);
:meth:`Install.switch` "installs" another tree in place, as ``pip install --upgrade``
would: a process started from that environment afterwards runs the new version.
"""

from __future__ import annotations

import os
import re
import shutil
import site
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("dmg", "settings", "workers", "dispatcher")
#: For a node started from an :class:`Install`: no checkout on sys.path (its working
#: directory is this one), nothing from the test run's PYTHONPATH.
NODE_ENVIRON = {"PYTHONSAFEPATH": "1", "PYTHONPATH": ""}


def dmg_tree(dest: Path, version: str) -> Path:
    """A copy of this checkout's packages at ``dest`` whose dmg says it is ``version``."""
    for package in PACKAGES:
        shutil.copytree(ROOT / package, dest / package, ignore=shutil.ignore_patterns("__pycache__"))
    path = dest / "dmg" / "version.py"
    text, count = re.subn(r"(?ms)^try:\n    __version__ = version\(\"dmg\"\).*?\"0\.0\.0\"\n",
                          f"__version__ = {version!r}\n", path.read_text())
    assert count == 1, "dmg/version.py no longer reads its version as expected"
    path.write_text(text)
    return dest


@dataclass
class Install:
    venv: Path

    @classmethod
    def create(cls, venv: Path, tree: Path) -> Install:
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        install = cls(venv)
        install.switch(tree)
        return install

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")

    def switch(self, tree: Path) -> None:
        """Make ``tree`` the installed dmg (an atomic replace of the ``.pth`` file)."""
        [site_dir] = (self.venv / "lib").glob("python3*/site-packages")
        ours = [p for p in site.getsitepackages() if Path(p).is_dir()]
        tmp = site_dir / "dmg-install.pth.tmp"
        tmp.write_text("\n".join([str(tree), *ours]) + "\n")
        os.replace(tmp, site_dir / "dmg-install.pth")

    def version(self) -> str:
        """The version a process started now from this install says it runs."""
        done = subprocess.run([self.python, "-c", "from dmg.version import __version__; print(__version__)"],
                              check=True, capture_output=True, text=True, env={**os.environ, **NODE_ENVIRON})
        return done.stdout.strip()

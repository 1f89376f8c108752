"""``python -m dmg.cli`` runs the ``dmg`` command (used to start child processes)."""

from __future__ import annotations

from dmg.cli.main import main

if __name__ == "__main__":
    main()

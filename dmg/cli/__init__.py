"""The ``dmg`` command line: the composition root.

Only this package wires ``workers`` and ``dispatcher`` together, and only inside
the commands that need them (lazy imports keep ``dmg --help`` fast).
"""

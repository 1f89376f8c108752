"""Servers dmg starts itself for an embedded (one-machine) site."""

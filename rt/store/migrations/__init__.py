"""Versioned schema migrations, one numbered SQL file per step and dialect."""

from __future__ import annotations

from importlib import resources


def load(dialect: str) -> list[tuple[int, str]]:
    """[(version, sql), ...] in order, from migrations/<dialect>/NNN_name.sql."""
    folder = resources.files(__package__).joinpath(dialect)
    steps = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            steps.append((int(entry.name.split("_", 1)[0]), entry.read_text()))
    return sorted(steps)

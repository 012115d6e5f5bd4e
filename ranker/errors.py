"""The one error the ranker raises for bad input."""

from __future__ import annotations


class RepositoryError(ValueError):
    """The path is not a usable git repository (not a repository, too few usable commits)."""

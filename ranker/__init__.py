"""Placeholder; the module docstring is written below."""

from ranker.errors import RepositoryError
from ranker.evaluation import Effect, Evaluation, Sensitivity
from ranker.metrics import CaseMeta
from ranker.repository import Repository, open_repository, paired_interval

__all__ = [
    "CaseMeta",
    "Effect",
    "Evaluation",
    "Repository",
    "RepositoryError",
    "Sensitivity",
    "open_repository",
    "paired_interval",
]

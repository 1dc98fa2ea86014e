"""Trajectory search: strategies, scorers and their shared machinery."""

from tsr_cli.search import strategies as _strategies  # noqa: F401  (registers the strategies)
from tsr_cli.search.base import (
    STRATEGIES,
    CloneMismatch,
    GroupStreams,
    SearchConfig,
    SearchContext,
    SearchCost,
    register_strategy,
)
from tsr_cli.search.scorers import SCORERS, register_scorer, resolve_scorer

__all__ = [
    "STRATEGIES", "SCORERS", "CloneMismatch", "GroupStreams", "SearchConfig", "SearchContext", "SearchCost",
    "register_strategy", "register_scorer", "resolve_scorer",
]

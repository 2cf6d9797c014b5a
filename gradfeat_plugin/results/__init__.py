"""Results: the SQLite store every run writes to, and leaderboard tables and plots.

The default database is ``$GRADFEAT_RESULTS`` if set, else ``./gradfeat_results.db``.
"""

from .leaderboard import (
    FORMATS,
    PROTOCOL_ORDER,
    VIEWS,
    Leaderboard,
    Stat,
    Table,
    leaderboard,
    leaderboard_table,
    render,
    render_leaderboard,
)
from .plot import plot_leaderboard
from .provenance import config_hash, count_flops, package_versions
from .store import ResultsStore, default_results_path, new_run_id

__all__ = [
    "FORMATS",
    "Leaderboard",
    "PROTOCOL_ORDER",
    "ResultsStore",
    "Stat",
    "Table",
    "VIEWS",
    "config_hash",
    "count_flops",
    "default_results_path",
    "leaderboard",
    "leaderboard_table",
    "new_run_id",
    "package_versions",
    "plot_leaderboard",
    "render",
    "render_leaderboard",
]

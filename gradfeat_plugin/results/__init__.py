"""Results: the SQLite store every run writes to, and leaderboard tables and plots.

The default database is ``$GRADFEAT_RESULTS`` if set, else ``./gradfeat_results.db``.
"""

from .leaderboard import FORMATS, PROTOCOL_ORDER, Stat, Table, leaderboard_table, render
from .plot import plot_leaderboard
from .provenance import config_hash, count_flops, package_versions
from .store import ResultsStore, default_results_path, new_run_id

__all__ = [
    "FORMATS",
    "PROTOCOL_ORDER",
    "ResultsStore",
    "Stat",
    "Table",
    "config_hash",
    "count_flops",
    "default_results_path",
    "leaderboard_table",
    "new_run_id",
    "package_versions",
    "plot_leaderboard",
    "render",
]

"""Print the leaderboard of a results database.

    python benchmarks/leaderboard.py --results DB --format {md,csv,html,json}
        [--view {compact,full}] [--show-val] [--plot PNG] [--out FILE] [--update MD]

The compact view (the default) has one row per model, weights, dataset and label
fraction, then each Table 1 ablation in the paper's layout; --view full lists every
setting in one table.

The default database is $GRADFEAT_RESULTS if set, else ./gradfeat_results.db.
"""

import sys

from gradfeat_plugin.results.cli import leaderboard_main

if __name__ == "__main__":
    sys.exit(leaderboard_main())

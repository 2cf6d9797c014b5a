"""Print the leaderboard of a results database.

    python benchmarks/leaderboard.py --results DB --format {md,csv,html,json}
        [--plot PNG] [--out FILE]

The default database is $GRADFEAT_RESULTS if set, else ./gradfeat_results.db.
"""

import sys

from gradfeat_plugin.results.cli import leaderboard_main

if __name__ == "__main__":
    sys.exit(leaderboard_main())

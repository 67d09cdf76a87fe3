"""Ray job entrypoint: the leaderboard tables and plots of finished run directories — `raylrec leaderboard`.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python jobs/leaderboard.py --help

Same arguments, parser and library calls as `raylrec leaderboard` (README, "Running on a Ray cluster").
Inside a Ray job, RAY_ADDRESS is set, so the library joins the cluster the job was submitted to.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the uploaded working dir, if not installed

from raylrec.cli import run_job  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_job(["leaderboard"]))

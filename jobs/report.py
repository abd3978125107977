"""`report` stage as a job: `python jobs/report.py --config CONFIG [--run-dir URL] [--set k=v]... [--force]`."""

import os
import sys

# this folder must not shadow standard modules (jobs/select.py vs the stdlib's `select`)
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

from selectllm.launch import job_main  # noqa: E402

if __name__ == "__main__":
    job_main("report")

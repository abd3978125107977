"""Shared entry for ``jobs/*.py`` (``spark-submit`` and ``ray job submit``): same options as the CLI."""

from __future__ import annotations

import argparse
import sys


def job_main(stage: str | None, argv: list[str] | None = None) -> None:
    """Parse ``--config/--run-dir/--set/--force`` and hand over to the CLI (same errors, same exit codes)."""
    parser = argparse.ArgumentParser(prog=f"jobs/{stage or 'pipeline'}.py")
    parser.add_argument("--config", required=True)
    parser.add_argument("--run-dir")
    parser.add_argument("--set", action="append", default=[], dest="sets")
    parser.add_argument("--force", action="append", default=[])
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    cli_args = [stage or "run", args.config]
    if args.run_dir:
        cli_args += ["--run-dir", args.run_dir]
    for s in args.sets:
        cli_args += ["--set", s]
    if stage is None:
        for f in args.force:
            cli_args += ["--force", f]
    elif args.force:
        cli_args.append("--force")
    if args.debug:
        cli_args.append("--debug")
    from selectllm.cli import main

    main(cli_args)


if __name__ == "__main__":  # pragma: no cover
    job_main(sys.argv[1] if len(sys.argv) > 1 else None, sys.argv[2:])

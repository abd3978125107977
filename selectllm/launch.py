"""Shared entry for ``jobs/*.py`` (``spark-submit`` and ``ray job submit``): same options as the CLI.

``--config`` may also be a URL (``s3://bucket/selectllm.yaml``, ``gs://...``): on a cluster the
driver may run where the submitting machine's files are not (a Ray Jobs working dir is uploaded,
a Spark driver in cluster deploy mode is not).
"""

from __future__ import annotations

import argparse
import os
import sys


def fetch_config(path: str) -> str:
    """A local file holding the config at ``path`` (downloaded through fsspec when it is a URL)."""
    if "://" not in path or path.startswith("file://"):
        return path.removeprefix("file://")
    import tempfile

    import fsspec

    from selectllm.errors import UserError
    from selectllm.rundir import storage_options

    try:
        with fsspec.open(path, "rb", **storage_options(path)) as f:
            data = f.read()
    except Exception as e:  # missing file, no credentials, unknown protocol: one line
        msg = str(e).splitlines()[0] if str(e) else ""
        raise UserError(f"cannot read config {path}: {type(e).__name__}: {msg}") from None
    with tempfile.NamedTemporaryFile("wb", prefix="selectllm-config-", suffix=".yaml", delete=False) as tmp:
        tmp.write(data)
    return tmp.name


def job_main(stage: str | None, argv: list[str] | None = None) -> None:
    """Parse ``--config/--run-dir/--set/--force`` and hand over to the CLI (same errors, same exit codes)."""
    parser = argparse.ArgumentParser(prog=f"jobs/{stage or 'pipeline'}.py")
    parser.add_argument("--config", required=True, help="YAML file, or a URL (s3://, gs://, ...)")
    parser.add_argument("--run-dir")
    parser.add_argument("--set", action="append", default=[], dest="sets")
    parser.add_argument("--force", action="append", default=[], nargs="?", const="",
                        help="pipeline: a stage to recompute (with all after it); a stage job: no value")
    parser.add_argument("--debug", action="store_true")
    parser.add_argument("--verbose", action="store_true", help="Spark's and Ray's output on the terminal")
    args = parser.parse_args(argv)
    from selectllm.errors import UserError

    try:
        config = fetch_config(args.config)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    cli_args = [stage or "run", config]
    if args.run_dir:
        cli_args += ["--run-dir", args.run_dir]
    for s in args.sets:
        cli_args += ["--set", s]
    if stage is None:
        for f in args.force:
            if f:
                cli_args += ["--force", f]
    elif args.force:
        cli_args.append("--force")
    if args.debug:
        cli_args.append("--debug")
    if args.verbose:
        cli_args.append("--verbose")
    from selectllm.cli import main

    try:
        main(cli_args)
    finally:
        if config != args.config.removeprefix("file://"):  # a downloaded copy
            try:
                os.unlink(config)
            except OSError:
                pass


if __name__ == "__main__":  # pragma: no cover
    job_main(sys.argv[1] if len(sys.argv) > 1 else None, sys.argv[2:])

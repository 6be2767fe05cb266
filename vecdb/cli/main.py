"""The `vecdb` command: one click group, each subcommand in its own module."""

from __future__ import annotations

import click

from vecdb import __version__
from vecdb.cli.bench import bench
from vecdb.cli.demo import demo
from vecdb.cli.ingest import ingest
from vecdb.cli.inspect import inspect_cmd
from vecdb.cli.optimize import optimize
from vecdb.cli.serve import serve
from vecdb.cli.snapshot import snapshot


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vecdb")
def main() -> None:
    """vecdb: a disk-hybrid, multi-tenant vector database."""


main.add_command(bench)
main.add_command(demo)
main.add_command(ingest)
main.add_command(inspect_cmd)
main.add_command(optimize)
main.add_command(serve)
main.add_command(snapshot)

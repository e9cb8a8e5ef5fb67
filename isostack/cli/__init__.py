"""The ``isostack`` command line.

Every sub-command is one module in ``isostack/cli/commands/`` exposing ``command`` (a click command);
the module name is the command name (``_`` -> ``-``). Adding a command is adding a file: nothing
central to edit. Modules are imported only when their command runs, so ``isostack where`` starts fast.

Shared conventions (see ``isostack.cli.common``): human output by default (rich tables), ``--json``
for machines; exit 0 on success, 1 on findings that are errors (or bad input), 2 on bad usage.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

import click

from isostack import __version__
from isostack.config import default_data_dir
from isostack.errors import IsostackError

_COMMANDS_PACKAGE = "isostack.cli.commands"


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        pkg = importlib.import_module(_COMMANDS_PACKAGE)
        return sorted(m.name.replace("_", "-") for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_"))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.list_commands(ctx):
            return None
        module = importlib.import_module(f"{_COMMANDS_PACKAGE}.{cmd_name.replace('-', '_')}")
        command = getattr(module, "command", None)
        if not isinstance(command, click.Command):
            raise click.ClickException(f"{module.__name__} defines no click command named 'command'")
        return command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="isostack")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    envvar="ISOSTACK_DATA_DIR",
    help="The store (a folder of Parquet segments). Default: $ISOSTACK_DATA_DIR or ~/.local/share/isostack.",
)
@click.option(
    "--store",
    "store_url",
    default=None,
    envvar="ISOSTACK_STORE",
    metavar="URL",
    help="Where the data lives instead of --data-dir: clickhouse://[user[:password]@]host[:port]/database "
         "(a ClickHouse server; traces read from the Collector exporter's otel_traces), chdb://<folder> "
         "(the ClickHouse engine in-process), or a folder. Add ?ttl_days=N for the kernel side's retention "
         "(default 7; 0 = none). Default: $ISOSTACK_STORE, else the embedded store in --data-dir.",
)
@click.pass_context
def cli(ctx: click.Context, data_dir: Path | None, store_url: str | None) -> None:
    """Which hop is slow, and which isolation layer under it?

    \b
    The X axis: OpenTelemetry traces find the slow hop   (serve, ingest, hops).
    The Y axis: eBPF and kernel counters find the layer  (agent, probe).
    The join on five-tuple, cgroup and time names the chain (diagnose).
    The knowledge base answers "where does this live?"     (where, triage).

    \b
    Examples:
      isostack where virtio-fs
      dmesg | isostack triage -
      isostack ingest traces.json && isostack hops
      isostack diagnose --since 15m --html report.html
      isostack --store clickhouse://ch.example:8123/otel diagnose --since 15m
    """
    ctx.ensure_object(dict)
    ctx.obj["data_dir"] = data_dir or default_data_dir()
    ctx.obj["store_url"] = store_url


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the CLI and turns IsostackError into one stderr line and its exit code."""
    try:
        cli.main(args=argv, prog_name="isostack", standalone_mode=False)
    except IsostackError as exc:
        click.echo(f"isostack: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("isostack: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        # `isostack ... | head` closing the pipe early is not an error.
        sys.exit(0)
    sys.exit(0)

"""What every `reformspor` command shares: the global options, grouped help, option types, tables.

click parses the command line and rich draws tables and progress bars on a
terminal; piped or redirected, output is plain text with no escape codes.
The services' `cli` modules build their commands from these pieces, so none
of them imports `services.cli` (which is also `__main__` under `python -m`).
"""
from __future__ import annotations

import io
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, TextIO

import click
from rich import box
from rich.console import Console
from rich.table import Table

from services.shared.config import Settings

PLAIN_WIDTH = 10_000  # a table written to a pipe is never wrapped to a terminal's width


@dataclass
class GlobalOptions:
    """`reformspor --home/--kafka/--prefix/--debug`, before the command; filled in by the top-level group."""

    home: str | None = None
    kafka: str | None = None
    prefix: str | None = None
    debug: bool = False

    def settings(self) -> Settings:
        """REFORMSPOR_* from the environment, with these flags winning (a bad value is a SettingsError)."""
        return Settings.from_env(home=Path(self.home).resolve() if self.home else None,
                                 kafka_bootstrap=self.kafka, topic_prefix=self.prefix)


# A command asks for the global options with `@pass_options` and calls `.settings()` when it needs them.
pass_options = click.make_pass_decorator(GlobalOptions, ensure=True)


class HelpGroup(click.Group):
    """A group whose `--help` lists each command's whole help line, under the sections it is given."""

    group_class = type  # `@group.group(...)` makes another HelpGroup

    def __init__(self, *args: Any, sections: Sequence[tuple[str, Sequence[str]]] = (), **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.sections = tuple(sections)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = [name for name in self.list_commands(ctx) if not self.get_command(ctx, name).hidden]
        placed = {name for _, members in self.sections for name in members}
        sections = [*self.sections, ("Commands" if not placed else "Other commands",
                                     [name for name in names if name not in placed])]
        for title, members in sections:
            rows = [(name, self.get_command(ctx, name).get_short_help_str(limit=1_000))
                    for name in members if name in names]
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


class Parsed(click.ParamType):
    """An option type from a parse function that raises ValueError with the sentence to show the user."""

    def __init__(self, parse: Callable[[str], Any], metavar: str):
        self.parse = parse
        self.name = metavar

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value  # a default that is already parsed
        try:
            return self.parse(value)
        except ValueError as error:
            self.fail(str(error), param, ctx)


def console_on(stream: TextIO | None = None, *, stderr: bool = False) -> Console:
    """A rich console writing `stream` (default: the current sys.stdout/stderr) as plain text: no markup, no emoji."""
    stream = stream or (sys.stderr if stderr else sys.stdout)  # looked up now: tests and pipes replace them
    return Console(file=stream, markup=False, emoji=False, highlight=False, soft_wrap=True)


def data_table(columns: Sequence[str], rows: Iterable[Sequence[str]], right_aligned: Iterable[int] = (),
               terminal: bool = True) -> Table:
    """A table of text cells; `right_aligned` column indices (amounts). Boxed for a terminal, bare for a pipe."""
    right = set(right_aligned)
    table = Table(box=box.SIMPLE_HEAD if terminal else None, show_edge=terminal, pad_edge=terminal,
                  header_style="bold" if terminal else "", padding=(0, 1) if terminal else (0, 2, 0, 0))
    for index, name in enumerate(columns):
        table.add_column(name, justify="right" if index in right else "left", no_wrap=index in right)
    for row in rows:
        table.add_row(*row)
    return table


def table_text(table: Table) -> str:
    """The table as plain aligned text, one line per row, for a pipe or a file: stable to parse."""
    console = Console(file=io.StringIO(), width=PLAIN_WIDTH, color_system=None, markup=False, emoji=False,
                      highlight=False)
    with console.capture() as captured:
        console.print(table)
    return "\n".join(line.rstrip() for line in captured.get().splitlines())


def print_table(columns: Sequence[str], rows: Sequence[Sequence[str]], right_aligned: Iterable[int] = (),
                out: TextIO | None = None) -> None:
    """A rich table on a terminal; plain aligned text when stdout is piped or redirected."""
    console = console_on(out)
    if console.is_terminal:
        console.print(data_table(columns, rows, right_aligned), soft_wrap=False)
    else:
        console.file.write(table_text(data_table(columns, rows, right_aligned, terminal=False)) + "\n")

"""The command line as people meet it: help everywhere, one clear line per error, one stack home per user."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from services.cli import main
from services.localstack.processes import free_port
from services.shared.config import Settings, default_home
from tests.support.json_server import JsonServer

COMMANDS = [
    (), ("ingest",), ("budsjett",), ("milepael",), ("up",), ("down",), ("demo",), ("kafka",),
    ("tokens",), ("tokens", "create"), ("tokens", "list"), ("tokens", "revoke"), ("publish",),
    ("status",), ("export",), ("replay",), ("catalogue",), ("catalogue", "import"), ("reformer",),
    ("grafana",), ("grafana", "build"), ("grafana", "push"),
]


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout_s: float = 60):
    """`python -m services.cli ARGS` in a child process, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "services.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd, timeout=timeout_s)


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "reformspor")
def test_every_command_has_help_text(path, capsys):
    assert main([*path, "--help"]) == 0
    blocks = capsys.readouterr().out.split("\n\n")
    # click prints usage, then the description; without one the next block is the option list.
    assert blocks[1].strip() and not blocks[1].startswith(("Options:", "Arguments:")), \
        f"`{' '.join(path)}` has no description"
    if path:
        assert main([*path[:-1], "--help"]) == 0
        listing = capsys.readouterr().out
        assert any(line.split()[:1] == [path[-1]] and len(line.split()) > 1 for line in listing.splitlines()), \
            f"`{' '.join(path[:-1])} --help` does not list {path[-1]} with a help line"


def test_help_groups_the_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    sections = [line for line in out.splitlines() if line.endswith(":") and not line.startswith(" ")]
    assert sections == ["Options:", "Local stack:", "Publish events:", "Budget lines and reforms:", "Dashboards:",
                        "Run one service in the foreground:"]
    assert out.index("  publish ") > out.index("Publish events:") > out.index("  kafka ")


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("reformspor 0.")


@pytest.fixture
def user_env(tmp_path) -> dict[str, str]:
    """A user with a HOME of their own and no REFORMSPOR_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REFORMSPOR_", "XDG_DATA_HOME"))}
    env["HOME"] = str(tmp_path / "user")
    return env


def test_the_stack_home_is_one_per_user_whatever_the_folder(tmp_path, user_env):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    created = subprocess.run([sys.executable, "-m", "services.cli", "tokens", "create", "--ministry", "BFD",
                              "--name", "økonomi"], cwd=first, env=user_env, capture_output=True, text=True, timeout=60)
    assert created.returncode == 0, created.stderr
    listing = subprocess.run([sys.executable, "-m", "services.cli", "tokens", "list"], cwd=second, env=user_env,
                             capture_output=True, text=True, timeout=60)
    assert "BFD" in listing.stdout and "økonomi" in listing.stdout and "active" in listing.stdout
    assert (tmp_path / "user/.local/share/reformspor/ingest.db").exists()
    assert not (first / ".reformspor").exists()


def test_down_from_another_folder_says_what_it_did(tmp_path, user_env):
    result = subprocess.run([sys.executable, "-m", "services.cli", "down"], cwd=tmp_path, env=user_env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert f"Nothing to stop: no process of this stack (home {tmp_path / 'user/.local/share/reformspor'})" \
        in result.stdout


def test_home_comes_from_reformspor_home_then_xdg(tmp_path):
    assert default_home({"REFORMSPOR_HOME": str(tmp_path / "x"), "XDG_DATA_HOME": "/data"}) == tmp_path / "x"
    assert default_home({"XDG_DATA_HOME": str(tmp_path / "data")}) == tmp_path / "data/reformspor"
    assert default_home({"XDG_DATA_HOME": "relative/is/ignored"}) == Path.home() / ".local/share/reformspor"
    assert Settings.from_env({"XDG_DATA_HOME": str(tmp_path)}).home == tmp_path / "reformspor"


# --- bad input: one line on stderr, a non-zero exit code, no traceback -------------------------------------------

def _workbook(path: Path) -> Path:
    import openpyxl

    workbook = openpyxl.Workbook()
    workbook.active.append(["id", "ministry"])
    workbook.save(path)
    return path


def _bad_inputs(tmp: Path):
    (tmp / "folder").mkdir()
    (tmp / "binary.csv").write_bytes(b"id,ministry\n\x00\x01\x02\xff")
    (tmp / "empty.csv").write_text("")
    (tmp / "empty.ndjson").write_text("\n")
    (tmp / "noid.csv").write_text("ministry;kind\nBFD;bevilget\n")
    (tmp / "one.ndjson").write_text('{"id": "a"}\n')
    book = _workbook(tmp / "book.xlsx")
    closed = f"http://127.0.0.1:{free_port()}"
    publish = ("publish", "--token", "t", "--url", closed)
    return [
        ("missing file", [*publish, str(tmp / "nope.csv")], 2, "nope.csv: No such file or directory"),
        ("directory", [*publish, str(tmp / "folder")], 2, "folder: Is a directory"),
        ("binary file", [*publish, str(tmp / "binary.csv")], 2, "binary.csv: a binary file, not text"),
        ("xlsx given as CSV", [*publish, "--format", "csv", str(book)], 2, "is an xlsx workbook, not CSV"),
        ("empty CSV", [*publish, str(tmp / "empty.csv")], 1, "no events in the file; nothing was sent"),
        ("empty NDJSON", [*publish, str(tmp / "empty.ndjson")], 1, "no events in the file; nothing was sent"),
        ("CSV without id", [*publish, str(tmp / "noid.csv")], 2, "row 1: the header has no 'id' column"),
        ("ingest not running", [*publish, str(tmp / "one.ndjson")], 2,
         f"ingest is not reachable at {closed}: connection refused"),
        ("bad URL", ["publish", "--token", "t", "--url", "localhost:8180", str(tmp / "one.ndjson")], 2,
         "not an http(s) URL"),
        ("no token", ["publish", str(tmp / "one.ndjson")], 2, "give --token or --token-file"),
        ("budsjett not running", ["status"], 2, "budsjett is not reachable at"),
        ("export, budsjett not running", ["export", "cells"], 2, "budsjett is not reachable at"),
        ("milepael not running", ["reformer"], 2, "milepael is not reachable at"),
        ("broker not running", ["kafka", "topics"], 2, "Kafka is not reachable at 127.0.0.1:"),
        ("replay, broker not running", ["replay"], 2, "Kafka is not reachable at 127.0.0.1:"),
        ("catalogue: missing file", ["catalogue", "import", str(tmp / "gul.xlsx")], 2, "No such file or directory"),
        ("catalogue: not a table", ["catalogue", "import", str(tmp / "noid.csv"), "--year", "2024"], 2,
         "no header row with the columns fdep_nr"),
    ]


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad")
    cases = {name: case for name, *case in _bad_inputs(tmp)}
    assert sorted(cases) == sorted(NAMES)
    return tmp, cases


NAMES = [  # the cases of _bad_inputs, by name
    "missing file", "directory", "binary file", "xlsx given as CSV", "empty CSV", "empty NDJSON", "CSV without id",
    "ingest not running", "bad URL", "no token", "budsjett not running", "export, budsjett not running",
    "milepael not running", "broker not running", "replay, broker not running", "catalogue: missing file",
    "catalogue: not a table"]


def _closed_ports_env(home: Path) -> dict[str, str]:
    return {"REFORMSPOR_HOME": str(home), "REFORMSPOR_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
            "REFORMSPOR_BUDSJETT_PORT": str(free_port()), "REFORMSPOR_MILEPAEL_PORT": str(free_port()),
            "REFORMSPOR_INGEST_PORT": str(free_port()), "REFORMSPOR_TOKEN": "", "REFORMSPOR_DEBUG": ""}


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_ends_in_one_clear_line(name, bad_inputs):
    tmp, cases = bad_inputs
    args, code, message = cases[name]
    result = run_cli(*args, env=_closed_ports_env(tmp / "home"))
    assert "Traceback" not in result.stderr
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert "retry" not in result.stderr  # permanent errors are not retried


def test_debug_shows_the_traceback(bad_inputs):
    tmp, cases = bad_inputs
    args, _, message = cases["missing file"]
    result = run_cli("--debug", *args, env=_closed_ports_env(tmp / "home"))
    assert "Traceback" in result.stderr and message in result.stderr.strip().splitlines()[-1]


# --- status and export: every figure, Norwegian headers, rows that add up -----------------------------------------

def _ledger_documents() -> dict[str, dict]:
    """Line documents as budsjett serves them, computed by budsjett's own pure core from real events."""
    from services.budsjett import core
    from services.shared.contract import make_event, parse_event

    def event(kind, source, event_id, line, **data):
        return parse_event(make_event(kind, source, {"line_id": line, "fiscal_year": 2026, **data}, event_id,
                                      datetime(2026, 3, 1, 10, tzinfo=timezone.utc)))

    def bevilget(event_id, line, ministry, phase, nok, kap=840, post=70):
        return event("bevilget", ministry, event_id, line, ministry=ministry, phase=phase, amount_nok=nok,
                     kap=kap, post=post)

    def forpliktet(event_id, line, ministry, phase, commitment_id, nok):
        return event("forpliktet", ministry, event_id, line, ministry=ministry, phase=phase,
                     commitment_id=commitment_id, amount_nok=nok)

    def utbetalt(event_id, line, ministry, phase, nok, cid=None):
        return event("utbetalt", ministry, event_id, line, ministry=ministry, phase=phase, amount_nok=nok,
                     **({"commitment_id": cid} if cid else {}))

    def omdisponert(event_id, line, from_, to, nok):
        return event("omdisponert", from_[0], event_id, line, amount_nok=nok,
                     **{"from": {"ministry": from_[0], "phase": from_[1]}, "to": {"ministry": to[0], "phase": to[1]}})

    messages = [
        bevilget("b1", "0-24", "BFD", "utredning", "2500000.00"),
        bevilget("b2", "0-24", "KD", "utvikling", "3000000.00", kap=226, post=21),
        bevilget("b3", "0-24", "HOD", "utvikling", "1750000.50", kap=765, post=21),
        forpliktet("f1", "0-24", "BFD", "utredning", "K-17", "1200000.00"),
        utbetalt("u1", "0-24", "BFD", "utredning", "800000.00", cid="K-17"),
        omdisponert("o1", "0-24", ("KD", "utvikling"), ("KD", "implementering"), "500000.00"),
        utbetalt("u2", "0-24", "HOD", "utvikling", "1800000.75"),  # more than HOD has: overspent
        bevilget("b4", "ung-1", "JD", "utredning", "-100.25", kap=440, post=1),
    ]
    store, outcomes = core.run_log(messages)
    trail: dict[str, list[dict]] = {}
    for outcome in outcomes:
        if outcome.status != "applied":
            continue
        deltas: dict[tuple[str, str], dict] = {}
        for _, ministry, phase, _year, name, delta in (e for e in outcome.effect if e[0] == "cell"):
            cell = deltas.setdefault((ministry, phase), {"ministry": ministry, "phase": phase,
                                                         **{n: 0 for n in core.AMOUNT_FIELDS}})
            cell[name] += delta
        trail.setdefault(outcome.line_id, []).append(
            {"event_id": outcome.event_id, "kind": outcome.kind, "source_ministry": "BFD",
             "time": "2026-03-01T10:00:00.000000Z", "deltas": list(deltas.values())})
    documents = {}
    for line_id, line in core.lines_in(store).items():
        view = core.line_totals(line)
        for cell in view["cells"]:
            cell.update(core.cell_flags(line["cells"][core.cell_key(cell["ministry"], cell["phase"], cell["fiscal_year"])]))
        documents[line_id] = {"line_id": line_id, "cells": view["cells"], "totals": view["totals"],
                              "events_applied": len(messages), "last_event_time": view["last_event_time"],
                              "flags": [{"ministry": c["ministry"], "phase": c["phase"], "fiscal_year": c["fiscal_year"], "flag": f}
                                        for c in view["cells"] for f in core.FLAGS if c.get(f)],
                              "trail": trail.get(line_id, [])}
    return documents


class FakeBudsjett:
    """GET /v1/lines, /v1/lines/{id} and its paged /events in budsjett's shape."""

    def __init__(self, documents: dict[str, dict]):
        self.documents = documents
        self.paths: list[str] = []  # what the stand-in server was asked for (set when it serves)
        self.port = 0  # where it serves (set when it serves)

    def route(self, path: str, query: dict[str, str]) -> dict | None:
        line_id = path.removeprefix("/v1/lines/").removesuffix("/events")
        if path == "/v1/lines":
            return {"lines": [{k: d[k] for k in ("line_id", "totals", "events_applied", "last_event_time")}
                              for d in self.documents.values()],
                    "catalogue": {"loaded": False, "checks": "no catalogue loaded: kap/post checks are skipped"}}
        if path.endswith("/events") and line_id in self.documents:
            offset, limit = int(query.get("offset", 0)), int(query["limit"])
            trail = self.documents[line_id]["trail"]
            after = offset + limit  # budsjett's paging: a next link until the last page
            return {"events": trail[offset:after], "total": len(trail), "limit": limit, "offset": offset,
                    "next": f"{path}?limit={limit}&offset={after}" if after < len(trail) else None}
        return self.documents.get(line_id) if path.startswith("/v1/lines/") else None


@pytest.fixture
def budsjett(monkeypatch, tmp_path):
    fake = FakeBudsjett(_ledger_documents())
    with JsonServer(fake.route) as server:
        monkeypatch.setenv("REFORMSPOR_BUDSJETT_PORT", str(server.port))
        monkeypatch.setenv("REFORMSPOR_HOME", str(tmp_path / "home"))
        fake.paths, fake.port = server.paths, server.port
        yield fake


FIGURES = ("Bevilget", "Omdisponert", "Forpliktet", "Utbetalt", "Disponibelt")


def _ore(text: str) -> int:
    kroner, _, ore = text.partition(",")
    return int(kroner) * 100 + (-1 if kroner.startswith("-") else 1) * int(ore.ljust(2, "0"))


def test_status_csv_rows_add_up_to_each_lines_totals(budsjett, capsys, tmp_path):
    from services.shared.tabular import read_table

    assert main(["status", "--csv"]) == 0
    path = tmp_path / "status.csv"
    path.write_text(capsys.readouterr().out)
    table = read_table(path)
    assert table.columns == ("Linje", "Budsjettår", "Departement", "Fase", *FIGURES, "Merknader")
    for line_id, document in budsjett.documents.items():
        rows = [r.values for r in table.records if r.values["Linje"] == line_id]
        cells, [total] = [r for r in rows if r["Departement"] != "sum"], [r for r in rows if r["Departement"] == "sum"]
        assert len(cells) == len(document["cells"])
        for figure in FIGURES:
            assert sum(_ore(c[figure]) for c in cells) == _ore(total[figure]) \
                == document["totals"][f"{figure.lower()}_ore"], (line_id, figure)
    kd = next(r.values for r in table.records if r.values["Departement"] == "KD" and r.values["Fase"] == "implementering")
    assert kd["Omdisponert"] == "500000,00"
    hod = next(r.values for r in table.records if r.values["Departement"] == "HOD")
    assert "overforbrukt" in hod["Merknader"]


def test_status_table_shows_every_figure_per_phase_in_norwegian(budsjett, capsys):
    assert main(["status", "--line", "0-24"]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0].split()
    assert header == ["Linje", "Budsjettår", "Departement", "Fase", *FIGURES, "Merknader"]
    assert "implementering" in out and "ung-1" not in out
    assert "1\u00a0750\u00a0000,50" in out  # HOD's bevilget, as finance staff read it


def test_status_json_has_øre_and_nok(budsjett, capsys):
    assert main(["status", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    negative = next(r for r in rows if r["line_id"] == "ung-1" and r["ministry"] == "JD")
    assert negative["bevilget_ore"] == -10025 and negative["bevilget_nok"] == "-100.25"


def test_status_of_an_unknown_line_is_one_line(budsjett, capsys):
    assert main(["status", "--line", "nope"]) == 1
    assert "budsjett answered 404" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_export_cells_adds_up_to_the_totals(budsjett, tmp_path, fmt, capsys):
    from services.shared.tabular import read_table

    path = tmp_path / f"celler.{fmt}"
    assert main(["export", "cells", "--output", str(path)]) == 0
    assert f"Wrote {sum(len(d['cells']) for d in budsjett.documents.values())} rows" in capsys.readouterr().err
    table = read_table(path)
    for figure in FIGURES:
        assert sum(_ore(str(r.values[figure]).replace(".", ",")) for r in table.records) == \
            sum(d["totals"][f"{figure.lower()}_ore"] for d in budsjett.documents.values())


def test_export_lines_to_stdout_as_csv(budsjett, capsys):
    assert main(["export", "lines"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "Linje;Bevilget;Omdisponert;Forpliktet;Utbetalt;Disponibelt;Hendelser;Siste hendelse"
    assert lines[2].startswith("ung-1;-100,25;0,00;")


def test_status_into_a_closed_pipe_is_quiet(budsjett):
    env = {**os.environ, "REFORMSPOR_BUDSJETT_PORT": str(budsjett.port)}
    process = subprocess.Popen([sys.executable, "-m", "services.cli", "status"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # `| head` that has already read what it wanted
    _, err = process.communicate(timeout=60)
    assert b"Traceback" not in err and b"BrokenPipe" not in err and err == b""
    assert process.returncode == 141


def test_up_on_a_port_someone_else_holds_says_so_without_a_traceback(tmp_path, user_env):
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "services.cli", "--kafka", f"127.0.0.1:{port}", "up"],
                                cwd=tmp_path, env=user_env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"error: port {port} is in use by a process this stack" in result.stderr
    assert "--port" not in result.stderr  # no option that does not exist


def test_up_when_everything_already_runs_says_so(tmp_path, monkeypatch):
    from services.localstack import stack as stack_module

    settings = Settings(home=tmp_path)
    local = stack_module.LocalStack(settings)
    local.kafka.pid_file.write(os.getpid())  # a live pid stands in for a running broker and services
    for service in stack_module.SERVICES:
        local.pid_file(service).write(os.getpid())
    monkeypatch.setattr(stack_module, "ensure_topics", lambda settings: [])
    said = []
    local.up(progress=said.append)
    assert said[0] == f"Kafka is already running on {settings.kafka_bootstrap} (pid {os.getpid()})"
    assert all("already running" in line for line in said) and not any("Starting" in line for line in said)


def test_secrets_come_from_a_file_or_the_environment(tmp_path, monkeypatch):
    from services.shared.secretinput import secret_from
    from services.shared.usererror import UserError

    secret_file = tmp_path / "token"
    secret_file.write_text("glsa_from_file\n")
    monkeypatch.delenv("REFORMSPOR_GRAFANA_TOKEN", raising=False)
    monkeypatch.delenv("REFORMSPOR_GRAFANA_TOKEN_FILE", raising=False)
    assert secret_from(None, None, "REFORMSPOR_GRAFANA_TOKEN") is None
    assert secret_from(None, str(secret_file), "REFORMSPOR_GRAFANA_TOKEN") == "glsa_from_file"
    monkeypatch.setenv("REFORMSPOR_GRAFANA_TOKEN_FILE", str(secret_file))
    assert secret_from(None, None, "REFORMSPOR_GRAFANA_TOKEN") == "glsa_from_file"
    monkeypatch.setenv("REFORMSPOR_GRAFANA_TOKEN", "glsa_from_env")
    assert secret_from(None, None, "REFORMSPOR_GRAFANA_TOKEN") == "glsa_from_env"
    assert secret_from("glsa_flag", None, "REFORMSPOR_GRAFANA_TOKEN") == "glsa_flag"
    with pytest.raises(UserError, match="cannot read the secret file"):
        secret_from(None, str(tmp_path / "missing"), "REFORMSPOR_GRAFANA_TOKEN")



def test_status_as_of_a_plain_date_means_the_end_of_that_day_in_norway(budsjett, capsys):
    assert main(["status", "--line", "0-24", "--as-of", "2026-06-30"]) == 0
    assert budsjett.paths[-1] == "/v1/lines/0-24?as_of=2026-06-30T21%3A59%3A59.999999Z"  # 23:59:59 CEST
    assert main(["status", "--as-of", "30.06.2026"]) == 2
    [error] = capsys.readouterr().err.splitlines()
    assert error.startswith("error: ") and "neither a date (2026-06-30) nor a timestamp" in error


def test_status_for_one_fiscal_year_asks_budsjett_for_that_year(budsjett, capsys):
    assert main(["status", "--line", "0-24", "--year", "2026"]) == 0
    assert budsjett.paths[-1] == "/v1/lines/0-24?fiscal_year=2026"
    assert main(["status", "--year", "26"]) == 2
    [error] = capsys.readouterr().err.splitlines()
    assert "'26' is not a fiscal year" in error


def test_export_events_pages_through_the_trail_and_adds_up_to_the_totals(budsjett, tmp_path, monkeypatch, capsys):
    from services.budsjett import cli as budsjett_cli
    from services.shared.tabular import read_table

    monkeypatch.setattr(budsjett_cli, "EVENTS_PAGE", 2)  # several pages even for a small trail
    path = tmp_path / "hendelser.xlsx"
    assert main(["export", "events", "-o", str(path)]) == 0
    table = read_table(path)
    assert table.columns[:5] == ("Linje", "Hendelse", "Type", "Kilde", "Tidspunkt")
    assert {r.values["Hendelse"] for r in table.records} >= {"b1", "b2", "f1", "u1", "o1", "u2", "b4"}
    for line_id, document in budsjett.documents.items():
        rows = [r.values for r in table.records if r.values["Linje"] == line_id]
        for figure in FIGURES[:-1]:
            assert sum(_ore(str(r[figure]).replace(".", ",")) for r in rows) == \
                document["totals"][f"{figure.lower()}_ore"], (line_id, figure)


# --- settings from the environment, tables, usage errors ----------------------------------------------------------

@pytest.mark.parametrize("variable, value, expected", [
    ("REFORMSPOR_INGEST_PORT", "abc", "REFORMSPOR_INGEST_PORT='abc' is not valid: input should be a valid integer"),
    ("REFORMSPOR_BUDSJETT_PORT", "70000", "REFORMSPOR_BUDSJETT_PORT='70000' is not valid: input should be less than "
                                          "or equal to 65535"),
    ("REFORMSPOR_PARTITIONS", "0", "REFORMSPOR_PARTITIONS='0' is not valid: input should be greater than or equal to 1"),
    ("REFORMSPOR_BUDSJETT_URL", "budsjett.example.no", "REFORMSPOR_BUDSJETT_URL='budsjett.example.no' is not valid: "
                                                       "expected http(s)://host[:port][/path] with no query"),
])
def test_a_bad_setting_in_the_environment_is_one_line_naming_the_variable(variable, value, expected, user_env):
    result = run_cli("tokens", "list", env={**user_env, variable: value})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith(f"error: {expected}")


def test_a_bad_setting_raises_a_settings_error_for_code_that_reads_it():
    from services.shared.config import SettingsError

    with pytest.raises(SettingsError, match="REFORMSPOR_INGEST_PORT='x' is not valid") as raised:
        Settings.from_env({"REFORMSPOR_INGEST_PORT": "x"})
    assert raised.value.exit_code == 2
    assert Settings.from_env({"REFORMSPOR_INGEST_PORT": "9000"}, ingest_port=None).ingest_port == 9000  # None: no override


@pytest.mark.parametrize("args, message", [
    (["status", "--csv", "--json"], "error: --csv and --json exclude each other: give one"),
    (["up", "--services", "nope"], "error: Invalid value for '--services': 'nope' is not one of"),
    (["tokens", "revoke", "abc"], "error: Invalid value for 'ID': 'abc' is not a valid integer"),
    (["export", "everything"], "error: Invalid value for '{lines|cells|posts|events}'"),
    (["statu"], "error: No such command 'statu'"),
    (["replay", "--workers", "0"], "error: Invalid value for '--workers'"),
])
def test_a_usage_error_is_one_line_and_exit_2(args, message, capsys):
    assert main(args) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(message) and line.endswith("--help`)")


def test_an_interrupt_exits_130_with_one_line(monkeypatch, capsys):
    from services.budsjett import cli as budsjett_cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(budsjett_cli, "fetch_lines", interrupted)
    assert main(["status"]) == 130
    assert capsys.readouterr().err == "interrupted\n"


def test_status_piped_is_plain_aligned_text_with_no_escape_codes(budsjett):
    result = run_cli("status", env={"REFORMSPOR_BUDSJETT_PORT": str(budsjett.port)})
    assert result.returncode == 0 and "\x1b" not in result.stdout
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["Linje", "Budsjettår", "Departement", "Fase", *FIGURES, "Merknader"]
    # amounts are right-aligned: every row's Bevilget ends in the same column as its header
    end = lines[0].index("Bevilget") + len("Bevilget")
    rows = lines[1:lines.index("") if "" in lines else lines.index("Beløp i NOK.")]
    assert rows and all(row[end - 3] == "," for row in rows)
    assert lines[-1] == "Beløp i NOK."


def test_status_on_a_terminal_is_a_rich_table(budsjett, monkeypatch, capsys):
    from rich.console import Console

    from services.budsjett import cli as budsjett_cli

    screen = Console(file=sys.stdout, force_terminal=True, color_system=None, width=200)
    monkeypatch.setattr(budsjett_cli, "console_on", lambda: screen)
    assert main(["status", "--line", "0-24"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if "Linje" in line)
    assert header.split() == ["Linje", "Budsjettår", "Departement", "Fase", *FIGURES, "Merknader"]
    assert "─" in out  # the rule under the header that rich draws
    assert "1\u00a0750\u00a0000,50" in out and out.rstrip().endswith("Beløp i NOK.")


def test_tokens_list_is_a_table_with_a_row_per_credential(user_env):
    assert run_cli("tokens", "create", "--ministry", "KD", "--name", "lønn", env=user_env).returncode == 0
    listing = run_cli("tokens", "list", env=user_env).stdout.splitlines()
    assert listing[0].split() == ["ID", "MINISTRY", "KIND", "CREATED", "STATUS", "NAME"]
    assert listing[1].split()[:3] == ["1", "KD", "http"] and listing[1].split()[-2:] == ["active", "lønn"]


def test_commands_reach_a_service_on_another_host_by_its_url_setting(budsjett, monkeypatch, capsys):
    # The port setting points nowhere; the URL (another host name, a trailing slash) is what is used.
    monkeypatch.setenv("REFORMSPOR_BUDSJETT_PORT", str(free_port()))
    monkeypatch.setenv("REFORMSPOR_BUDSJETT_URL", f"http://localhost:{budsjett.port}/")
    assert main(["status", "--json"]) == 0
    shown = {row["line_id"] for row in json.loads(capsys.readouterr().out)}
    assert shown == set(budsjett.documents) and budsjett.paths

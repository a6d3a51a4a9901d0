"""milepael's reforms as a finance user opens them in Excel: every stage as a CSV row, as in the JSON."""
from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Decimal

import pytest

from services.milepael import core
from services.milepael.http import ReformRoutes
from services.milepael.readmodel import ReadModel
from services.milepael.tables import STAGE_COLUMNS
from services.shared.config import Settings
from tests.support.http_app import get, serving, service_app
from tests.unit.test_milepael_core import done, registered, stage_plan


@pytest.fixture
def milepael(tmp_path):
    readmodel = ReadModel(f"sqlite:///{tmp_path / 'milepael.db'}")
    now = datetime(2026, 3, 2, tzinfo=timezone.utc)
    for reform_id in ("R1", "R2"):
        state = done(registered(stage_plan("s1"), stage_plan("s2"), reform_id=reform_id), "A", date(2026, 1, 21),
                     reform_id=reform_id)
        new_state, events, verdicts = core.reconcile(state, {}, now.date(), now)
        readmodel.save(new_state, verdicts, events, evaluated_at=now, partition=0)
    app = service_app("milepael", Settings(home=tmp_path))
    ReformRoutes(readmodel).register(app)
    try:
        with serving(app) as base_url:
            yield base_url
    finally:
        readmodel.dispose()


def test_every_stage_of_every_reform_as_csv_matches_the_json(milepael):
    reply = get(f"{milepael}/v1/reforms?format=csv")
    assert reply.status == 200 and reply.headers["Content-Disposition"] == 'attachment; filename="reformer-trinn.csv"'
    rows = reply.csv_rows()
    assert tuple(rows[0]) == STAGE_COLUMNS
    assert [(r["Reform"], r["Trinn"]) for r in rows] == [("R1", "s1"), ("R1", "s2"), ("R2", "s1"), ("R2", "s2")]
    for row in rows:
        stage = next(s for s in get(f"{milepael}/v1/reforms/{row['Reform']}").json()["stages"]
                     if s["stage_id"] == row["Trinn"])
        assert Decimal(row["Opptjent verdi"].replace(",", ".")) * 100 == stage["ev_ore"]
        assert Decimal(row["Budsjett ved fullføring"].replace(",", ".")) * 100 == stage["bac_ore"]
        assert row["Status"] == stage["status"] and row["Justering påkrevd"] in ("ja", "nei")
        assert row["Tidstoleranse"] in ("innenfor", "varsel", "kritisk")


def test_one_reforms_stages_as_csv_by_accept_and_json_by_default(milepael):
    reply = get(f"{milepael}/v1/reforms/R2", "text/csv")
    assert reply.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert reply.headers["Content-Disposition"] == 'attachment; filename="reform-R2-trinn.csv"'
    assert [r["Trinn"] for r in reply.csv_rows()] == ["s1", "s2"]
    assert get(f"{milepael}/v1/reforms").json()["reforms"][0]["reform_id"] == "R1"
    refused = get(f"{milepael}/v1/reforms", "application/xml")
    assert refused.status == 406 and refused.headers["Content-Type"].startswith("application/problem+json")
    assert get(f"{milepael}/v1/reforms/nope?format=csv").status == 404

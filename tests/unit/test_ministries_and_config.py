"""The ministry registry is data, and settings come from the environment."""

import pytest

from services.shared.config import Settings
from services.shared.ministries import MinistryRegistry, RegistryError, default_registry

HEADER = "code,fdep_nr,name,valid_from,valid_to,former_names,kind\n"


def test_registry_maps_fdep_nr_by_fiscal_year_across_a_rename():
    registry = default_registry()
    assert registry.for_fdep_nr(18, 2023).code == "OED"
    assert registry.for_fdep_nr(18, 2024).code == "ED"
    assert registry.for_fdep_nr(8, 2024).code == "BFD"


def test_registry_can_be_edited_as_data(tmp_path):
    registry = MinistryRegistry.from_csv_text(
        "code,fdep_nr,name,valid_from,valid_to,former_names\nNYD,42,Nytt departement,2027,,\n")
    assert "NYD" in registry and registry.for_fdep_nr(42, 2027).name == "Nytt departement"
    assert registry.for_fdep_nr(42, 2026) is None


def test_dfd_has_fdep_nr_15_from_the_2025_budget_and_none_in_2024():
    registry = default_registry()
    assert registry.for_fdep_nr(15, 2025).code == "DFD" and registry.for_fdep_nr(15, 2026).code == "DFD"
    assert registry.for_fdep_nr(15, 2024) is None  # the 2024 Gul bok was printed before DFD existed
    dfd = registry.get("DFD")
    assert dfd.valid_in(2024) and not dfd.valid_in(2023) and dfd.valid_to_year is None
    assert (dfd.fdep_nr_in(2024), dfd.fdep_nr_in(2025)) == (None, 15)


def test_names_and_former_names_place_a_ministry_in_its_year():
    registry = default_registry()
    # The 2024 Gul bok still says "Olje- og energidepartementet": in 2024 that is ED's former name.
    assert registry.for_name("  Olje- og   energidepartementet ", 2024).code == "ED"
    assert registry.for_name("Olje- og energidepartementet", 2023).code == "OED"
    assert registry.for_name(" barne- og familiedepartementet", 2026).code == "BFD"
    assert registry.for_name("Digitaliserings- og forvaltningsdepartementet", 2023) is None
    assert registry.for_name("Ymse", 2024) is None


def test_ymse_is_registered_as_not_a_ministry():
    registry = default_registry()
    assert registry.not_a_ministry(23, 2025).name == "Ymse"
    assert registry.for_fdep_nr(23, 2025) is None and "" not in registry.codes()
    assert registry.not_a_ministry(8, 2025) is None


@pytest.mark.parametrize("rows, reason", [
    ("DFD,15,Digitaliseringsdep,2024,,,\nDFD,16,Digitaliseringsdep,2025,,,\n", "DFD's rows overlap"),
    ("XD,x1,Et departement,,,,\n", "fdep_nr must be a whole number"),
    (",23,Ymse,,,,\n", "a ministry needs a code"),
    ("YD,7,Et departement,,,,other\n", "got 'other'"),
])
def test_an_inconsistent_registry_is_refused_with_one_line(rows, reason):
    with pytest.raises(RegistryError, match=reason) as caught:
        MinistryRegistry.from_csv_text(HEADER + rows)
    assert "\n" not in str(caught.value)


def test_settings_read_environment_and_give_each_service_its_own_database(tmp_path):
    settings = Settings.from_env({"REFORMSPOR_KAFKA_BOOTSTRAP": "127.0.0.1:19092", "REFORMSPOR_PARTITIONS": "8",
                                  "REFORMSPOR_HOME": str(tmp_path)})
    assert settings.kafka_bootstrap == "127.0.0.1:19092" and settings.partitions == 8
    assert settings.db_url("budsjett") != settings.db_url("milepael")
    assert settings.db_url("budsjett").startswith("sqlite:///") and str(tmp_path) in settings.db_url("budsjett")
    assert Settings.from_env(settings.to_env()) == settings

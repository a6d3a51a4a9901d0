"""The ministry registry is data, and settings come from the environment."""

from services.shared.config import Settings
from services.shared.ministries import MinistryRegistry, default_registry


def test_registry_maps_fdep_nr_by_fiscal_year_across_a_rename():
    registry = default_registry()
    assert registry.for_fdep_nr(18, 2023).code == "OED"
    assert registry.for_fdep_nr(18, 2024).code == "ED"
    assert registry.for_fdep_nr(8, 2024).code == "BFD"


def test_registry_can_be_edited_as_data(tmp_path):
    registry = MinistryRegistry.from_csv_text("code,fdep_nr,name,valid_from,valid_to,former_names\nNYD,42,Nytt departement,2027,,\n")
    assert "NYD" in registry and registry.for_fdep_nr(42, 2027).name == "Nytt departement"
    assert registry.for_fdep_nr(42, 2026) is None


def test_settings_read_environment_and_give_each_service_its_own_database(tmp_path):
    settings = Settings.from_env({"REFORMSPOR_KAFKA_BOOTSTRAP": "127.0.0.1:19092", "REFORMSPOR_PARTITIONS": "8",
                                  "REFORMSPOR_HOME": str(tmp_path)})
    assert settings.kafka_bootstrap == "127.0.0.1:19092" and settings.partitions == 8
    assert settings.db_url("budsjett") != settings.db_url("milepael")
    assert settings.db_url("budsjett").startswith("sqlite:///") and str(tmp_path) in settings.db_url("budsjett")
    assert Settings.from_env(settings.to_env()) == settings

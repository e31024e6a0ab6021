"""docs/explanation/data-retention.md says what the catalog declares."""

from __future__ import annotations

from refgen.catalog import retention_table

from streams.contracts.catalog import load_catalog
from streams.settings import PROJECT_ROOT

DOC = PROJECT_ROOT / "docs" / "explanation" / "data-retention.md"


def test_the_data_class_table_is_the_catalogs() -> None:
    expected = retention_table(load_catalog(PROJECT_ROOT / "schemas"))
    assert expected in DOC.read_text(encoding="utf-8"), (
        "docs/explanation/data-retention.md does not hold the data classes of "
        "schemas/topics.yaml; paste this table in place of the old one:\n" + expected
    )


def test_the_table_names_the_prompt_classes_and_their_hours() -> None:
    rows = {
        line.split(" | ")[0].strip("| `"): line
        for line in retention_table(load_catalog(PROJECT_ROOT / "schemas")).splitlines()
    }
    assert "| 6 hours |" in rows["raw_prompt"] and "`inference.requests`" in rows["raw_prompt"]
    assert "| 6 hours |" in rows["model_output"]
    assert rows["sealed_dead_letter"].rstrip(" |").endswith("yes")

"""The area reference: the shipped village count reconciled with the official one, urban/rural per
village, and a file that cites only documents inside the repository."""

from __future__ import annotations

from importlib.resources import files

from regsosek import areas


def test_the_shipped_village_count_and_its_gap_to_the_official_count_are_stated():
    ref = areas.reference()
    listed = sum(v.startswith("64") for v in ref.villages)
    assert ref.official_villages["64"] == 1038  # docs/DOMAIN.md: 841 desa + 197 kelurahan
    assert listed == 1032  # the file's header explains the six missing; change both together
    header = files("regsosek.areas").joinpath("kalimantan-timur.yaml").read_text().split("\nprovince:")[0]
    assert "1,032" in header and "1,038" in header and "six fewer" in header
    for regency in ref.regencies:
        assert f"{regency} {ref.regencies[regency]} {len(ref.villages_of(regency))}" in " ".join(
            header.replace("#", " ").split())


def test_the_shipped_file_cites_only_documents_in_the_repository():
    header = files("regsosek.areas").joinpath("kalimantan-timur.yaml").read_text().split("\nprovince:")[0]
    assert "http" not in header and "github" not in header.lower()
    assert "NOTICE.md" in header and "docs/DOMAIN.md" in header


def test_urban_and_rural_are_per_village_and_unclassified_villages_say_so():
    ref = areas.AreaReference()
    ref.add({"province": {"code": "64", "name": "KT"}, "villages": {"6472010": "001-003"},
             "urban": {"6472010": "001"}, "rural": {"6472010": "002"}})
    assert ref.is_urban("64720100010001") is True
    assert ref.is_urban("6472010002") is False
    assert ref.is_urban("6472010003") is None
    assert ref.is_urban("6472") is None
    assert areas.reference().is_urban("6472") is None
    assert ref.urban_coverage() == {"villages": 3, "urban": 1, "rural": 1, "unclassified": 1}


def test_a_village_list_with_the_classification_column_converts_to_urban_and_rural(tmp_path):
    csv = tmp_path / "villages.csv"
    csv.write_text("6472010001,6472010,A,1\n6472010002,6472010,B,2\n6472010003,6472010,C\n"
                   "６４７２０１０００４,6472010,D,1\n")
    doc = areas.from_csv(csv, "64", "KT")
    assert doc["villages"] == {"6472010": "001-003"}  # fullwidth digits are not a village code
    assert doc["urban"] == {"6472010": "001"} and doc["rural"] == {"6472010": "002"}
    ref = areas.AreaReference()
    ref.add(doc)
    assert [ref.is_urban(f"6472010{s:03d}") for s in (1, 2, 3)] == [True, False, None]

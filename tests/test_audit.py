from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

import distilsent
from distilsent.cli import main
from distilsent.fairness.audit import (
    AuditConfig,
    ProbeFamily,
    audit,
    audit_family,
    half_families,
    load_families,
    write_report,
)


def test_shipped_families_fill_every_slot() -> None:
    families = {f.name: f for f in load_families()}
    assert {
        "country",
        "nationality",
        "name-gender",
        "name-ethnicity",
        "religion",
        "gender-noun",
        "pronoun",
    } <= set(families)
    assert len(families["country"].groups) >= 100
    assert len(families["name-ethnicity"].groups) == 4
    for family in families.values():
        probes = family.probes()
        terms = sum(len(t) for t in family.groups.values())
        assert len(probes) == terms * len(family.templates)
        assert all("{" not in s and "}" not in s for *_, s in probes)
        assert all(term in s for _, term, _, s in probes)


def test_halves_are_disjoint_on_the_generated_sentences() -> None:
    families = load_families()
    seen = {f.name: f for f in half_families(families, "train")}
    held = {f.name: f for f in half_families(families, "heldout")}
    assert set(held) == {f.name for f in families}
    for family in families:
        assert len(family.templates) + len(family.heldout_templates) >= 30, family.name
        assert not set(family.templates) & set(family.heldout_templates)
        a = {s for *_, s in seen[family.name].probes()}
        b = {s for *_, s in held[family.name].probes()}
        assert a and b and not a & b, family.name
        if family.name != "pronoun":  # three pronouns: only the templates are split
            terms = [{t for ts in h[family.name].groups.values() for t in ts} for h in (seen, held)]
            assert not terms[0] & terms[1], family.name


def test_verdict_is_the_heldout_half() -> None:
    family = ProbeFamily(
        "f",
        "x",
        ("A {x} film.",),
        {"a": ("blue",), "b": ("gamma",)},  # neither held out by the hash
        ("The {x} show.",),
        {"a": ("beta",), "b": ("delta",)},
    )

    class Stub:
        labels = ("NEGATIVE", "POSITIVE")

        def predict_proba(self, texts: list[str]) -> np.ndarray:
            # Biased on the train template only: the held-out template scores every term alike.
            p = np.array([0.9 if t == "A blue film." else 0.5 for t in texts])
            return np.stack([1 - p, p], axis=1)

    result = audit(Stub(), [family], AuditConfig(bootstrap=200))
    row = result.families[0]
    assert row.heldout is not None and row.gap > 0.1 and row.heldout.gap < 0.1
    assert row.passed and result.passed


def test_family_validation_names_the_problem() -> None:
    good = {"name": "f", "slot": "x", "templates": ["A {x} film."], "groups": {"a": ["1"], "b": ["2"]}}
    ProbeFamily.from_dict(good)
    with pytest.raises(ValueError, match=r"template 'A film.' has no \{x\} slot"):
        ProbeFamily.from_dict({**good, "templates": ["A film."]})
    with pytest.raises(ValueError, match="other slots"):
        ProbeFamily.from_dict({**good, "templates": ["A {x} {y} film."]})
    with pytest.raises(ValueError, match="group 'b' is empty"):
        ProbeFamily.from_dict({**good, "groups": {"a": ["1"], "b": []}})
    with pytest.raises(ValueError, match="at least two groups"):
        ProbeFamily.from_dict({**good, "groups": {"a": ["1"]}})
    with pytest.raises(ValueError, match="lacks templates"):
        ProbeFamily.from_dict({k: v for k, v in good.items() if k != "templates"})


def test_user_probe_files_yaml_and_json(tmp_path: Path) -> None:
    yaml_file = tmp_path / "probes.yaml"
    yaml_file.write_text(
        "families:\n  - name: sport\n    slot: sport\n    templates: ['The film is about {sport}.']\n"
        "    groups:\n      team: [football, hockey]\n      solo: [tennis, golf]\n"
    )
    families = load_families(yaml_file, builtin=False)
    assert [f.name for f in families] == ["sport"] and families[0].groups["solo"] == ("tennis", "golf")
    assert "sport" in [f.name for f in load_families(yaml_file)]
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps([{"name": "e", "slot": "x", "templates": ["{x}!"], "groups": {"a": [], "b": ["y"]}}])
    )
    with pytest.raises(distilsent.DataError, match=r"bad.json: probe family 'e': group 'a' is empty"):
        load_families(bad)
    (tmp_path / "broken.json").write_text("{nope")
    with pytest.raises(distilsent.DataError, match="not valid JSON"):
        load_families(tmp_path / "broken.json")


def stub_family() -> ProbeFamily:
    return ProbeFamily(
        name="stub",
        slot="who",
        templates=("{who} made this.", "A film by {who}."),
        groups={"A": ("alpha", "apex"), "B": ("beta", "bravo")},
    )


def test_gap_interval_and_flips_on_a_stubbed_scorer() -> None:
    def scorer(texts: list[str]) -> np.ndarray:
        return np.array([0.9 if ("alpha" in t or "apex" in t) else 0.3 for t in texts])

    result = audit_family(stub_family(), scorer, threshold=0.1, bootstrap=200)
    assert [g.name for g in result.groups] == ["B", "A"]
    assert [g.mean for g in result.groups] == pytest.approx([0.3, 0.9])
    assert result.gap == pytest.approx(0.6)
    assert (result.gap_low, result.gap_high) == pytest.approx((0.6, 0.6))  # no spread inside groups
    assert not result.passed
    # Per template: 2 positive × 2 negative terms = 4 flipped pairs of 6.
    assert (result.flipped_pairs, result.pairs) == (8, 12)
    assert result.flips[0].negative in ("beta made this.", "A film by beta.")


def test_interval_covers_the_gap_when_groups_vary() -> None:
    rng = np.random.default_rng(1)
    values = {}

    def scorer(texts: list[str]) -> np.ndarray:
        return np.array(
            [
                values.setdefault(t, (0.6 if "a" in t.split()[0][:1] else 0.5) + rng.normal(0, 0.05))
                for t in texts
            ]
        )

    family = ProbeFamily(
        name="noisy",
        slot="w",
        templates=tuple(f"{{w}} said thing {i}." for i in range(10)),
        groups={"A": ("ann", "amy", "ada"), "B": ("bob", "ben", "bea")},
    )
    result = audit_family(family, scorer, threshold=0.2, bootstrap=500)
    assert result.gap_low < result.gap < result.gap_high
    assert result.passed  # a gap near 0.1 is under a 0.2 threshold


def test_audit_cli_and_report_on_the_tiny_model(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "report"
    code = main(
        ["audit", "--model", str(tiny_model_dir), "--families", "pronoun,religion", "--report", str(out)]
    )
    text = capsys.readouterr().out
    assert code == 0
    assert "pronoun" in text and "religion" in text and "threshold 0.10" in text
    data = json.loads((out / "audit.json").read_text())
    assert [f["name"] for f in data["families"]] == ["religion", "pronoun"]  # in shipped order
    for name in ("report.md", "report.html", "pronoun.png", "religion.png"):
        assert (out / name).stat().st_size > 0
    assert main(["audit", "--model", str(tiny_model_dir), "--families", "country", "--heldout"]) == 0
    assert re.search(r"^country +22 ", capsys.readouterr().out, re.M)  # only the held-out countries
    assert main(["audit", "--model", str(tiny_model_dir), "--families", "nope"]) == 2
    assert "unknown probe families" in capsys.readouterr().err


@pytest.mark.slow
def test_reference_checkpoint_country_gap(ref_classifier, tmp_path: Path) -> None:
    families = load_families()
    result = audit(
        ref_classifier, families, AuditConfig(families="country,pronoun"), model="minilm-l6-sst2-ref"
    )
    country = result.families[0]
    assert country.name == "country" and len(country.groups) >= 90
    assert country.heldout is not None and len(country.heldout.groups) == 22
    assert country.gap > 0.3 and not country.passed  # the bias the model card describes
    assert country.gap_low <= country.gap <= country.gap_high
    assert country.flips, "some country pairs flip the label"
    write_report(result, tmp_path)
    assert (tmp_path / "country.png").stat().st_size > 10_000
    assert "country" in (tmp_path / "report.html").read_text()

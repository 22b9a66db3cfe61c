"""distilsent check: suite parsing and errors, template expansion, disjoint halves, each kind's logic."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from distilsent.cli import main
from distilsent.core.errors import DataError
from distilsent.evaluation.check import (
    HALVES,
    CheckConfig,
    load_suite,
    run_checks,
    training_examples,
    write_report,
)

LABELS = ["NEGATIVE", "POSITIVE"]

LEXICONS = """
lexicons:
  adj: {train: [good, great], heldout: [fine, nice, lovely]}
  noun: {train: [film, plot, cast], heldout: [story, ending]}
  name: {train: [Ann, Bob], heldout: [Cy, Di, Ed]}
"""


def write(tmp_path: Path, body: str, lexicons: str = LEXICONS) -> Path:
    path = tmp_path / "checks.yaml"
    path.write_text(textwrap.dedent(lexicons) + "tests:\n" + textwrap.indent(textwrap.dedent(body), "  "))
    return path


def keyword_scorer(positive: tuple[str, ...], negative: tuple[str, ...] = ()):
    """P(positive) 0.9 when a text holds a positive word and no negative one, else 0.1."""

    def score(texts: list[str]) -> np.ndarray:
        p = np.array(
            [
                0.9 if any(w in t for w in positive) and not any(w in t for w in negative) else 0.1
                for t in texts
            ]
        )
        return np.stack([1 - p, p], axis=1)

    return score


def test_expansion_counts_every_combination_or_a_sample(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        - name: t
          kind: mft
          expect: POSITIVE
          train: ["The {noun} was {adj}."]
          heldout: ["The {noun} was {adj}.", "{name} liked the {noun2}."]
        """,
    )
    suite = load_suite(path, builtin=False)
    test = suite.test("t")
    assert len(suite.cases(test, "train")) == 3 * 2
    assert len(suite.cases(test, "heldout")) == 2 * 3 + 3 * 2  # nouns x adjectives, names x nouns
    assert len(suite.cases(test, "heldout", samples=4)) == 4 + 4
    # {noun2} draws from "noun" independently of {noun}
    sentences = {c.texts[0] for c in suite.cases(test, "heldout")}
    assert "Cy liked the ending." in sentences


def test_shipped_halves_are_disjoint_on_the_generated_sentences() -> None:
    suite = load_suite()
    for test in suite.tests:
        seen = {t for c in suite.cases(test, "train") for t in c.texts}
        held = {t for c in suite.cases(test, "heldout") for t in c.texts}
        assert seen and held, test.name
        assert not seen & held, (test.name, sorted(seen & held)[:3])
    for name, halves in suite.lexicons.items():
        assert not set(halves["train"]) & set(halves["heldout"]), name


def test_augmentation_never_emits_a_heldout_sentence_or_term() -> None:
    suite = load_suite()
    labelled, pairs = training_examples(suite)
    assert len(labelled) > 300 and len(pairs) > 300
    heldout = {t for test in suite.tests for c in suite.cases(test, "heldout") for t in c.texts}
    emitted = {text for text, _ in labelled} | {t for pair in pairs for t in pair}
    assert not emitted & heldout
    words = {w.strip(".,;!?:").lower() for text in emitted for w in text.split()}
    for name in ("pos_adj", "neg_adj", "name", "city", "pos_verb", "neg_verb"):
        leaked = {t.lower() for t in suite.lexicons[name]["heldout"]} & words
        assert not leaked, (name, leaked)


def test_mft_passes_only_the_expected_label(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        - name: neg
          kind: mft
          expect: NEGATIVE
          train: ["The {noun} was not {adj}."]
          heldout: ["The {noun} is not {adj}.", {template: "I liked the {noun}.", expect: POSITIVE}]
        """,
    )
    suite = load_suite(path, builtin=False)
    # Positive whenever a good word appears: fails every negation, passes "I liked".
    result = run_checks(keyword_scorer(("good", "great", "fine", "nice", "lovely", "liked")), LABELS, suite)
    t = result.tests[0]
    assert (t.train.passed, t.train.cases) == (0, 6)
    assert (t.heldout.passed, t.heldout.cases) == (2, 8)
    assert not t.passed
    assert t.heldout.failures[0].expected == "NEGATIVE"
    # Negative whenever "not" appears: passes all.
    result = run_checks(keyword_scorer(("liked",), ("not",)), LABELS, suite)
    assert result.tests[0].heldout.rate == 1.0 and result.passed


def test_inv_swap_fails_a_group_whose_labels_differ(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        - name: names
          kind: inv
          swap: name
          train: ["{name} saw the {noun}."]
          heldout: ["{name} saw the {noun}."]
        """,
    )
    suite = load_suite(path, builtin=False)
    result = run_checks(keyword_scorer(("Cy",)), LABELS, suite)
    t = result.tests[0]
    assert (t.train.passed, t.train.cases) == (3, 3)  # Ann and Bob: always the same label
    assert (t.heldout.passed, t.heldout.cases) == (0, 2)  # Cy differs from Di and Ed in every group
    assert len(t.heldout.failures[0].texts) == 3


def test_inv_perturb_and_add(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        - name: caps
          kind: inv
          perturb: casing
          train: ["the {noun} was {adj}"]
          heldout: ["the {noun} was {adj}"]
        - name: extra
          kind: inv
          train: {templates: ["the {noun}"], add: ["{text} {name}"]}
          heldout: {templates: ["the {noun}"], add: ["{name}: {text}", "{text}!"]}
        """,
    )
    suite = load_suite(path, builtin=False)
    # Case-sensitive scorer: "good" in lower case only, so an upper-cased variant flips.
    result = run_checks(keyword_scorer(("good", "Ed")), LABELS, suite)
    caps, extra = result.tests
    assert 0 < caps.train.passed < caps.train.cases
    assert extra.heldout.cases == 2 * 2
    for case in suite.cases(suite.test("extra"), "heldout"):
        assert case.texts[0] in case.texts[1]


def test_dir_confidence_directions(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        - name: up
          kind: dir
          expect: more-confident
          tolerance: 0.05
          train: [{base: "the {noun}", changed: "the {noun} very"}]
          heldout: [{base: "the {noun}", changed: "the {noun} very"}]
        - name: flat
          kind: dir
          expect: not-more-confident
          train: [{base: "the {noun}", changed: "the {noun} very"}]
          heldout: [{base: "the {noun}", changed: "the {noun} very"}]
        """,
    )
    suite = load_suite(path, builtin=False)

    def score(texts: list[str]) -> np.ndarray:
        # "very" raises P(positive) from 0.7 to 0.8: more confident in POSITIVE.
        p = np.array([0.8 if "very" in t else 0.7 for t in texts])
        return np.stack([1 - p, p], axis=1)

    up, flat = run_checks(score, LABELS, suite).tests
    assert up.heldout.rate == 1.0 and flat.heldout.rate == 0.0


BAD = [
    ('- {name: a, kind: mft, expect: POSITIVE, train: ["plain"], heldout: ["{adj}"]}', "has no slot", 7),
    ('- {name: a, kind: mft, expect: POSITIVE, train: ["{colour}"], heldout: ["{adj}"]}', "unknown slot", 7),
    ('- {name: a, kind: mft, expect: HAPPY, train: ["{adj}"], heldout: ["{adj}"]}', "not one of", 7),
    ('- {name: a, kind: mtf, train: ["{adj}"], heldout: ["{adj}"]}', "kind must be one of", 7),
    ('- {name: a, kind: dir, expect: up, train: [{base: "{adj}", changed: "{adj}"}], heldout: []}', "dir", 7),
    ('- {name: a, kind: inv, train: ["{adj}"], heldout: ["{adj}"]}', "exactly one of", 7),
    ('- {name: a, kind: mft, expect: POSITIVE, train: ["{adj}"]}', "lacks heldout", 7),
    (
        '- {name: a, kind: mft, expect: POSITIVE, train: ["{adj}"], heldout: ["{adj}"]}\n'
        '- {name: a, kind: mft, expect: POSITIVE, train: ["{adj}"], heldout: ["{adj}"]}',
        "second test named",
        8,
    ),
]


@pytest.mark.parametrize(("body", "message", "line"), BAD)
def test_bad_files_name_the_file_and_line(tmp_path: Path, body: str, message: str, line: int) -> None:
    path = write(tmp_path, body)
    with pytest.raises(DataError, match=message) as e:
        load_suite(path, builtin=False)
    assert f"{path}:{line}" in str(e.value)


def test_bad_lexicons(tmp_path: Path) -> None:
    body = '- {name: a, kind: mft, expect: POSITIVE, train: ["{adj}"], heldout: ["{adj}"]}'
    cases = [
        ("lexicons:\n  adj: {train: [], heldout: [x]}\n", "empty train list"),
        ("lexicons:\n  adj: [good, bad]\n", "exactly two lists"),
        ("lexicons:\n  adj: {train: [x], heldout: [x]}\n", "both halves"),
    ]
    for lexicons, message in cases:
        path = write(tmp_path, body, lexicons)
        with pytest.raises(DataError, match=message) as e:
            load_suite(path, builtin=False)
        assert f"{path}:2" in str(e.value)


def test_cli_exits_2_on_a_bad_file(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    path = write(tmp_path, '- {name: a, kind: nope, train: ["{adj}"], heldout: ["{adj}"]}')
    assert main(["check", "--model", str(tiny_model_dir), "--tests", str(path)]) == 2
    assert f"{path}:7" in capsys.readouterr().err


def test_config_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="samples"):
        CheckConfig(samples=0)


@pytest.mark.slow
def test_reports_for_the_reference_checkpoint(ref_model_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "report"
    code = main(["check", "--model", str(ref_model_dir), "--report", str(out), "--samples", "20", "--fail"])
    printed = capsys.readouterr().out
    data = json.loads((out / "check.json").read_text())
    assert code == (0 if data["passed"] else 1)
    names = {t["name"] for t in data["tests"]}
    assert {"negation", "negation-neutral-middle", "typos", "entity-swap", "intensifiers"} <= names
    for t in data["tests"]:
        for half in HALVES:
            assert t[half]["cases"] > 0 and 0 <= t[half]["rate"] <= 1
    by_name = {t["name"]: t for t in data["tests"]}
    # The reference model, like most SST-2 models, fails negation with neutral content in the middle.
    assert by_name["negation-neutral-middle"]["heldout"]["rate"] < 0.6
    assert by_name["punctuation"]["heldout"]["rate"] > 0.9
    assert "negation-neutral-middle" in printed and "held-out" in printed
    assert "| negation |" in (out / "report.md").read_text()
    assert "<table>" in (out / "report.html").read_text()


def test_report_written_from_a_stub(tmp_path: Path) -> None:
    suite = load_suite()
    result = run_checks(keyword_scorer(("good",)), LABELS, suite, CheckConfig(samples=5))
    write_report(result, tmp_path)
    data = json.loads((tmp_path / "check.json").read_text())
    assert len(data["tests"]) == len(suite.tests)
    assert data["passed"] is False


def test_the_documented_example_file_loads(tmp_path: Path) -> None:
    import re

    from helpers import ROOT

    doc = (ROOT / "docs" / "check.md").read_text()
    example = re.search(r"```yaml\n(.*?)```", doc, re.S)
    assert example
    path = tmp_path / "mine.yaml"
    path.write_text(example.group(1))
    suite = load_suite(path, builtin=False)
    assert [t.name for t in suite.tests] == [
        "product-negation", "product-typos", "product-url", "product-intensifier",
    ]  # fmt: skip
    result = run_checks(keyword_scorer(("great", "good", "lovely", "superb"), ("not",)), LABELS, suite)
    assert result.tests[0].heldout.cases > 0

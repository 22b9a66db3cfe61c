from __future__ import annotations

import re

from distilsent.audit import load_families
from distilsent.augment import counterfactual, heldout_families, training_families


def _terms(families) -> set[str]:
    return {t.lower() for f in families for terms in f.groups.values() for t in terms}


def test_copies_swap_terms_and_keep_labels() -> None:
    texts = ["a gripping thriller set in france", "the woman at the centre is dull", "no identity here"]
    labels = [1, 0, 1]
    out, out_labels, stats = counterfactual(texts, labels, copies=3, seed=1)
    assert (stats.sentences, stats.with_terms, stats.added) == (3, 2, 6)
    assert out[:3] == texts and out_labels == [1, 0, 1] + [1] * 3 + [0] * 3
    for copy in out[3:6]:
        assert copy.startswith("a gripping thriller set in ") and not copy.endswith("france")
    for copy in out[6:]:
        word = copy.split()[1]
        assert word != "woman" and word in _terms(load_families()), copy  # a male noun, lower case
        assert copy.replace(word, "woman", 1) == texts[1]


def test_held_out_terms_are_never_used_and_cover_every_family() -> None:
    held = heldout_families()
    seen = training_families()
    assert {f.name for f in held} >= {"country", "nationality", "name-gender", "name-ethnicity"}
    assert not _terms(held) & _terms(seen)
    assert len(next(f for f in held if f.name == "country").groups) >= 20
    texts = [f"a film shot in {c.lower()}" for c in ("france", "germany", "kenya", "peru")] * 20
    out, _, _ = counterfactual(texts, [1] * len(texts), copies=5, seed=3)
    used = {re.sub("^a film shot in ", "", t) for t in out[len(texts) :]}
    assert not used & _terms(held)


def test_first_names_only_when_capitalised() -> None:
    out, _, stats = counterfactual(["grace under pressure", "Grace directed it"], [1, 1], copies=1, seed=0)
    assert stats.with_terms == 1 and out[2] != "Grace directed it" and out[2].endswith(" directed it")

from __future__ import annotations

import difflib
import re

import pytest

from distilsent.fairness.audit import half_families, load_families
from distilsent.training.augment import counterfactual, invented_words, template_pairs, training_families


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
    held = half_families(load_families(), "heldout")
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


def test_inserted_pairs_name_two_groups_of_one_family_around_the_same_sentence() -> None:
    from distilsent.training.augment import inserted_pairs

    texts, labels = ["a gripping film", "dull and long", "it works"], [1, 0, 1]
    firsts, out_labels, seconds = inserted_pairs(texts, labels, pairs=300, seed=5)
    assert len(firsts) == len(seconds) == len(out_labels) == 300
    owners: dict[str, dict[str, str]] = {}  # term -> family -> group (a first name is in two families)
    for f in training_families():
        for group, terms in f.groups.items():
            for term in terms:
                owners.setdefault(term.lower(), {})[f.name] = group
    used = set()
    for first, label, second in zip(firsts, out_labels, seconds):
        source = next(t for t in texts if t in first)
        assert labels[texts.index(source)] == label and source in second
        # The two versions differ in one span only: the inserted term, from two groups of one family.
        a, b = first.split(), second.split()
        diffs = [op for op in difflib.SequenceMatcher(a=a, b=b).get_opcodes() if op[0] != "equal"]
        assert len(diffs) == 1 and diffs[0][0] == "replace", (first, second)
        _, i1, i2, j1, j2 = diffs[0]
        in_a, in_b = owners[" ".join(a[i1:i2]).lower()], owners[" ".join(b[j1:j2]).lower()]
        shared = [f for f in in_a if f in in_b and in_a[f] != in_b[f]]
        assert shared, (first, second)
        used.update(shared)
    assert {"country", "nationality", "religion", "gender-noun"} <= used


def test_augment_only_terms_are_trained_on_and_never_overlap_a_probed_term() -> None:
    from distilsent.fairness.probes import AUGMENT_ONLY_TERMS

    held = _terms(half_families(load_families(), "heldout"))
    probed = _terms(load_families())
    religion = next(f for f in training_families() if f.name == "religion")
    for family, groups in AUGMENT_ONLY_TERMS.items():
        for group, terms in groups.items():
            for term in terms:
                t = term.lower()
                assert t not in probed, term
                # Neither inside a held-out term nor holding one ("Sunni" in "Sunni Muslim").
                assert not [h for h in held if h in t or t in h], term
                if family == "religion":
                    assert term in religion.groups[group]
    # Custom families get no extra terms: the lexicon belongs to the built-in ones.
    custom = load_families()
    assert _terms(training_families(custom)) <= probed


def test_template_pairs_use_train_templates_and_terms_and_invented_words() -> None:
    from transformers import AutoTokenizer

    from distilsent.core.models import DEFAULT_MODEL_DIR

    vocab = AutoTokenizer.from_pretrained(DEFAULT_MODEL_DIR).get_vocab()
    invented = invented_words(vocab, 300, seed=1)
    every_term = {
        t.lower()
        for f in load_families()
        for g in (*f.groups.values(), *f.heldout_groups.values())
        for t in g
    }
    assert len(set(invented)) > 250 and not {w.lower() for w in invented} & (every_term | set(vocab))
    firsts, seconds = template_pairs(400, invented=invented, seed=2)
    assert len(firsts) == len(seconds) == 400
    held = half_families(load_families(), "heldout")
    held_templates = {t for f in held for t in f.templates}
    train_templates = {t for f in training_families() for t in f.templates}
    assert held_templates and not held_templates & train_templates
    train_terms = _terms(training_families())
    frames = [t.split("{" + f.slot + "}") for f in training_families() for t in f.templates]

    def filled(first: str, second: str) -> tuple[str, str]:
        """The two words one train-half template was filled with (only the slot's word differs)."""
        fits = [
            (first[len(pre) : len(first) - len(post)], second[len(pre) : len(second) - len(post)])
            for pre, post in frames
            if all(x.startswith(pre) and x.endswith(post) for x in (first, second))
        ]
        assert fits, (first, second)
        return min(fits, key=lambda ab: len(ab[0]))

    with_invented = 0
    for first, second in zip(firsts, seconds):
        a, b = filled(first, second)
        assert a.lower() in train_terms, (first, a)
        assert b.lower() in train_terms or b in invented, (second, b)
        assert not {a.lower(), b.lower()} & _terms(held)
        with_invented += b in invented
    assert with_invented == 200  # half, spread evenly
    for share, expected in ((1.0, 40), (0.25, 10), (0.0, 0)):
        pairs = zip(*template_pairs(40, invented=invented, invented_share=share, seed=3))
        assert sum(filled(a, b)[1] in invented for a, b in pairs) == expected, share
    with pytest.raises(ValueError, match="invented_share"):
        template_pairs(4, invented=invented, invented_share=1.5)

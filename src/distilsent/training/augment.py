"""Counterfactual data augmentation: copies of training sentences with identity terms swapped.

A sentence that names a country, nationality, religion, first name or gendered noun from the audit's
probe families gets ``copies`` extra copies in which that term is replaced by a term of another group
of the same family, with the same label — so the model sees the sentiment does not depend on it.
Only the train half of the audit's terms is used (:func:`distilsent.fairness.audit.half_families`):
the held-out terms and templates, on which the audit passes or fails a family, are never trained on.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from distilsent.core.errors import InvalidInputError
from distilsent.fairness.audit import ProbeFamily, half_families, load_families
from distilsent.fairness.probes import AUGMENT_ONLY_TERMS

__all__ = [
    "AugmentStats",
    "counterfactual",
    "inserted_pairs",
    "invented_words",
    "template_pairs",
    "training_families",
]

# Pronouns change verb agreement ("they were"); swapping them would write ungrammatical sentences.
_SKIPPED = ("pronoun",)


def training_families(families: Sequence[ProbeFamily] | None = None) -> list[ProbeFamily]:
    """The audit's families restricted to their train half (the terms augmentation may use), less
    those whose terms cannot be swapped; the built-in families also get their augmentation-only
    terms (:data:`distilsent.fairness.probes.AUGMENT_ONLY_TERMS`), which the audit never probes."""
    chosen = families if families is not None else load_families()
    usable = [f for f in half_families(chosen, "train") if f.name not in _SKIPPED]
    if families is not None:
        return usable
    out = []
    for family in usable:
        extra = AUGMENT_ONLY_TERMS.get(family.name, {})
        groups = {g: terms + tuple(extra.get(g, ())) for g, terms in family.groups.items()}
        out.append(replace(family, groups=groups))
    return out


@dataclass
class AugmentStats:
    sentences: int
    """Training sentences read."""
    with_terms: int
    """Sentences naming at least one identity term."""
    added: int
    """Counterfactual copies added."""
    sources: list[int] = field(default_factory=list)
    """For each added copy, in order, the index of the sentence it was made from."""


def counterfactual(
    texts: Sequence[str],
    labels: Sequence[int],
    *,
    copies: int = 2,
    seed: int = 0,
    families: Sequence[ProbeFamily] | None = None,
) -> tuple[list[str], list[int], AugmentStats]:
    """``texts``/``labels`` followed by the counterfactual copies (same labels), and what was done."""
    if copies < 1:
        raise InvalidInputError(f"copies must be at least 1, got {copies}")
    rng = random.Random(seed)
    usable = training_families(families)
    # One pattern over every term, longest first so "South Korea" wins over "Korea".
    owner: dict[str, tuple[int, str]] = {}
    for k, family in enumerate(usable):
        for group, terms in family.groups.items():
            for term in terms:
                owner.setdefault(term.lower(), (k, group))
    if not owner:
        return list(texts), list(labels), AugmentStats(len(texts), 0, 0)
    alternation = "|".join(re.escape(t) for t in sorted(owner, key=len, reverse=True))
    pattern = re.compile(rf"(?<![\w-])({alternation})(?![\w-])", re.IGNORECASE)

    def swappable(match: re.Match[str]) -> bool:
        # First names double as words ("grace", "mark"): only a capitalised one is taken for a name.
        return (
            not usable[owner[match.group(1).lower()][0]].name.startswith("name-")
            or match.group(1)[0].isupper()
        )

    def swap(match: re.Match[str]) -> str:
        if not swappable(match):
            return match.group(0)
        k, group = owner[match.group(1).lower()]
        family = usable[k]
        other = rng.choice([g for g in family.groups if g != group])
        new = rng.choice(family.groups[other])
        return new.lower() if match.group(1).islower() else new

    out_texts, out_labels = list(texts), list(labels)
    sources: list[int] = []
    for index, (text, label) in enumerate(zip(texts, labels)):
        if not any(swappable(m) for m in pattern.finditer(text)):
            continue
        for _ in range(copies):
            out_texts.append(pattern.sub(swap, text))
            out_labels.append(label)
            sources.append(index)
    with_terms = len(set(sources))
    return out_texts, out_labels, AugmentStats(len(texts), with_terms, len(sources), sources)


# Neutral frames that add an identity term to any sentence without changing its sentiment. Written for
# training only: none is, or resembles word for word, a template the audit probes with.
_FRAMES = {
    "country": ("{s} ( {t} )", "in {t} , {s}", "{s} , seen in {t}"),
    "nationality": ("{s} ( a {t} production )", "{t} critics : {s}"),
    "religion": (
        "{s} , says a {t} viewer",
        "a {t} viewer : {s}",
        "{s} ( from the {t} film club )",
        "my {t} neighbour lent me the dvd . {s}",
        "{s} , according to a {t} blogger",
    ),
    "name": ("{t} says : {s}", "{s} , writes {t}"),
    "person": ("a {t} says : {s}", "{s} , said the {t}"),
}


def inserted_pairs(
    texts: Sequence[str],
    labels: Sequence[int],
    *,
    pairs: int,
    seed: int = 0,
    families: Sequence[ProbeFamily] | None = None,
) -> tuple[list[str], list[int], list[str]]:
    """``pairs`` training sentences with an identity term inserted, each twice with different groups.

    A sentence, a family and a neutral frame are drawn at random, then two terms from two different
    groups of that family; returns the first versions (with the sentence's label), and the second
    versions, which the consistency loss pairs with them. Unlike :func:`counterfactual`, this reaches
    every sentence, so the model learns that the term does not matter in any context, not only in
    the few sentences that already name one. Held-out terms are never used.
    """
    if pairs < 0:
        raise InvalidInputError(f"pairs must not be negative, got {pairs}")
    rng = random.Random(seed)
    usable = [f for f in training_families(families) if f.slot in _FRAMES]
    if not usable or not texts:
        return [], [], []
    firsts, out_labels, seconds = [], [], []
    for _ in range(pairs):
        i = rng.randrange(len(texts))
        family = rng.choice(usable)
        frame = rng.choice(_FRAMES[family.slot])
        one, other = rng.sample(list(family.groups), 2)
        first, second = (rng.choice(family.groups[g]) for g in (one, other))
        firsts.append(frame.format(s=texts[i], t=first))
        seconds.append(frame.format(s=texts[i], t=second))
        out_labels.append(labels[i])
    return firsts, out_labels, seconds


def invented_words(vocab: Iterable[str], count: int, *, seed: int = 0) -> list[str]:
    """``count`` words that no one uses, each a word piece of ``vocab`` followed by one or two
    continuation pieces (``brand`` + ``##orial``), none of them a term any probe family names.

    Rarer identity terms are, to the model, such strings of word pieces ("Sephardic" is ``sep ##hard
    ##ic``), and a model can read sentiment into a piece of one ("hard"). Pairing a known
    term with an invented word teaches that an unfamiliar word in that place says nothing, without
    ever showing a held-out term.
    """
    pieces = sorted(set(vocab))
    starts = [w for w in pieces if w.isascii() and w.isalpha() and 3 <= len(w) <= 6]
    tails = [
        w[2:] for w in pieces if w.startswith("##") and w[2:].isascii() and w[2:].isalpha() and len(w) <= 7
    ]
    if not starts or not tails:
        raise InvalidInputError("invented words need a WordPiece vocabulary (pieces and ##continuations)")
    probed = {
        t.lower()
        for f in load_families()
        for terms in (*f.groups.values(), *f.heldout_groups.values())
        for t in terms
    }
    known = set(pieces)
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < count:
        word = rng.choice(starts) + "".join(rng.choice(tails) for _ in range(rng.randint(1, 2)))
        if word not in known and word not in probed:
            out.append(word.capitalize() if rng.random() < 0.5 else word)
    return out


def template_pairs(
    pairs: int,
    *,
    invented: Sequence[str] = (),
    invented_share: float = 0.5,
    seed: int = 0,
    families: Sequence[ProbeFamily] | None = None,
) -> tuple[list[str], list[str]]:
    """``pairs`` (sentence, twin) pairs written from the train-half templates of the audit's families:
    one template filled with terms of two different groups, or, for ``invented_share`` of the pairs
    when ``invented`` is given, with a term and an invented word (:func:`invented_words`).

    These sentences are neutral, and the pair carries no label: the consistency loss alone ties the
    two, so the model learns that the identity word does not move the score without being pushed
    towards either label. (The inserted pairs of :func:`inserted_pairs` wrap polar training sentences,
    whose scores are already saturated and barely move when the term does.) Held-out templates and
    terms are never used.
    """
    if pairs < 0:
        raise InvalidInputError(f"pairs must not be negative, got {pairs}")
    if not 0 <= invented_share <= 1:
        raise InvalidInputError(f"invented_share must be in [0, 1], got {invented_share}")
    rng = random.Random(seed)
    usable = training_families(families)
    if not usable:
        return [], []
    firsts, seconds = [], []
    for k in range(pairs):
        family = rng.choice(usable)
        template = rng.choice(family.templates)
        one, other = rng.sample(list(family.groups), 2)
        first = rng.choice(family.groups[one])
        # Evenly spread: pair k has an invented twin when the running share crosses a whole number.
        made_up = invented and int((k + 1) * invented_share) > int(k * invented_share)
        second = rng.choice(invented) if made_up else rng.choice(family.groups[other])
        firsts.append(template.format(**{family.slot: first}))
        seconds.append(template.format(**{family.slot: second}))
    return firsts, seconds

"""``distilsent check``: behavioural tests in the CheckList sense (Ribeiro et al., ACL 2020).

A test file (YAML) holds lexicons and tests. Every lexicon and every test has two halves: ``train``,
which training augmentation may use (:func:`training_examples`), and ``heldout``, which nothing ever
trains on; a report shows both pass rates and a test passes or fails on its held-out half. Test kinds:

- ``mft`` (minimum functionality): each sentence must get the label in ``expect``;
- ``inv`` (invariance): the label must not change under a perturbation (``perturb``: typo,
  char-noise, punctuation, casing), an addition (``add``: templates around ``{text}``) or when the
  ``swap`` slot takes other terms;
- ``dir`` (directional): from ``base`` to ``changed``, the confidence in the base sentence's label must
  rise (``more-confident``) or not rise (``not-more-confident``), within ``tolerance``.

The shipped suite is ``checks/sentiment.yaml`` beside this module; a user file has the same format.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distilsent.core.config import Config
from distilsent.core.errors import DataError, InvalidInputError

__all__ = [
    "HALVES",
    "KINDS",
    "PERTURBATIONS",
    "Case",
    "CheckConfig",
    "CheckResult",
    "CheckSuite",
    "CheckTest",
    "TestResult",
    "load_suite",
    "run_checks",
    "training_examples",
    "write_report",
]

BUILTIN = Path(__file__).with_name("checks") / "sentiment.yaml"
HALVES = ("train", "heldout")
KINDS = ("mft", "inv", "dir")
DIRECTIONS = ("more-confident", "not-more-confident")


class _Str(str):
    line: int = 0


class _Dict(dict):  # type: ignore[type-arg]
    line: int = 0


class _List(list):  # type: ignore[type-arg]
    line: int = 0


def _yaml_load(text: str, path: Path) -> Any:
    """YAML whose strings, mappings and lists remember their line, for errors that name it."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def tagged(cls: type, make: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        def construct(loader: Any, node: Any) -> Any:
            value = cls(make(loader, node))
            value.line = node.start_mark.line + 1
            return value

        return construct

    Loader.add_constructor(
        "tag:yaml.org,2002:str", tagged(_Str, lambda loader, node: loader.construct_scalar(node))
    )
    Loader.add_constructor(
        "tag:yaml.org,2002:map",
        tagged(_Dict, lambda loader, node: loader.construct_mapping(node, deep=True)),
    )
    Loader.add_constructor(
        "tag:yaml.org,2002:seq",
        tagged(_List, lambda loader, node: loader.construct_sequence(node, deep=True)),
    )
    try:
        return yaml.load(text, Loader=Loader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise DataError(f"{where}: not valid YAML ({getattr(e, 'problem', e)})") from None


def _where(path: Path, node: Any) -> str:
    line = getattr(node, "line", 0)
    return f"{path}:{line}" if line else str(path)


def _slots(template: str, where: str) -> list[str]:
    try:
        names = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as e:
        raise DataError(f"{where}: template {template!r} is malformed ({e})") from None
    for name in names:
        if not name.isidentifier():
            raise DataError(f"{where}: template {template!r} has a bad slot {{{name}}}")
    return list(dict.fromkeys(names))


def _lexicon_of(slot: str) -> str:
    # {noun2} draws from lexicon "noun", independently of {noun}.
    return slot.rstrip(string.digits) or slot


@dataclass(frozen=True)
class Template:
    """One template of a test half: a sentence (or, for ``dir``, a base and a changed sentence)."""

    text: str
    changed: str | None = None
    expect: str | None = None
    where: str = ""


@dataclass(frozen=True)
class CheckTest:
    name: str
    kind: str
    halves: dict[str, tuple[Template, ...]]
    capability: str = ""
    description: str = ""
    expect: str | None = None
    threshold: float = 0.8
    tolerance: float = 0.05
    perturb: str | None = None
    swap: str | None = None
    add: dict[str, tuple[str, ...]] = field(default_factory=dict)
    where: str = ""


@dataclass(frozen=True)
class Case:
    """What one test case compares: one sentence (mft), an original and its variants (inv), or a base
    sentence and its changed version (dir)."""

    texts: tuple[str, ...]
    template: str
    expect: str | None = None


# --- perturbations (inv) ---------------------------------------------------------------------------


def _word_spans(text: str, min_len: int) -> list[tuple[int, int]]:
    return [m.span() for m in re.finditer(r"[A-Za-z]+", text) if m.end() - m.start() >= min_len]


def _typo(text: str, rng: random.Random) -> str:
    spans = _word_spans(text, 4)
    if not spans:
        return text
    start, end = rng.choice(spans)
    i = rng.randrange(start + 1, end - 1)  # keep the first letter: that is how people mistype
    return text[:i] + text[i + 1] + text[i] + text[i + 2 :]


def _char_noise(text: str, rng: random.Random) -> str:
    spans = _word_spans(text, 4)
    if not spans:
        return text
    start, end = rng.choice(spans)
    i = rng.randrange(start + 1, end)
    return text[:i] + text[i + 1 :] if rng.random() < 0.5 else text[:i] + text[i] + text[i:]


def _punctuation(text: str, rng: random.Random) -> str:
    stripped = text.rstrip(".!? ")
    return rng.choice([stripped, stripped + "!", stripped + "!!", stripped + "...", stripped + " ."])


def _casing(text: str, rng: random.Random) -> str:
    return rng.choice([text.lower(), text.upper(), text.title()])


PERTURBATIONS: dict[str, Callable[[str, random.Random], str]] = {
    "typo": _typo,
    "char-noise": _char_noise,
    "punctuation": _punctuation,
    "casing": _casing,
}


# --- the suite ---------------------------------------------------------------------------------------


@dataclass
class CheckSuite:
    """Lexicons (name → half → terms) and tests, validated together."""

    lexicons: dict[str, dict[str, tuple[str, ...]]]
    tests: list[CheckTest]

    def test(self, name: str) -> CheckTest:
        for t in self.tests:
            if t.name == name:
                return t
        raise DataError(f"no check named {name!r}; known: {', '.join(t.name for t in self.tests)}")

    def cases(self, test: CheckTest, half: str, *, samples: int = 50, seed: int = 0) -> list[Case]:
        """The cases of ``test``'s ``half``: each template filled with the half's terms, every combination
        when there are at most ``samples`` per template, else ``samples`` drawn at random."""
        if half not in HALVES:
            raise InvalidInputError(f"half must be one of {HALVES}, not {half!r}")
        out: list[Case] = []
        for k, template in enumerate(test.halves[half]):
            rng = random.Random(_seed(seed, test.name, half, k))
            slots = _slots(template.text, template.where)
            if template.changed is not None:
                slots += [s for s in _slots(template.changed, template.where) if s not in slots]
            fixed = [s for s in slots if s != test.swap]
            for fill in self._fills(fixed, half, samples, rng):
                if test.kind == "mft":
                    out.append(Case((template.text.format(**fill),), template.text, template.expect))
                elif test.kind == "dir":
                    assert template.changed is not None
                    texts = (template.text.format(**fill), template.changed.format(**fill))
                    out.append(Case(texts, template.text))
                elif test.swap:
                    terms = self.lexicons[_lexicon_of(test.swap)][half]
                    group = tuple(template.text.format(**fill, **{test.swap: t}) for t in terms)
                    out.append(Case(group, template.text))
                elif test.perturb:
                    text = template.text.format(**fill)
                    variant = PERTURBATIONS[test.perturb](text, rng)
                    if variant != text:
                        out.append(Case((text, variant), template.text))
                else:
                    text = template.text.format(**fill)
                    for frame in test.add[half]:
                        extra = {
                            s: rng.choice(self.lexicons[_lexicon_of(s)][half])
                            for s in _slots(frame, "")
                            if s != "text"
                        }
                        out.append(Case((text, frame.format(text=text, **extra)), template.text))
        return out

    def _fills(self, slots: list[str], half: str, samples: int, rng: random.Random) -> list[dict[str, str]]:
        pools = [self.lexicons[_lexicon_of(s)][half] for s in slots]
        total = math.prod(len(p) for p in pools)
        chosen = range(total) if total <= samples else sorted(rng.sample(range(total), samples))
        fills = []
        for index in chosen:
            fill = {}
            for slot, pool in zip(slots, pools):
                index, k = divmod(index, len(pool))
                fill[slot] = pool[k]
            fills.append(fill)
        return fills


def _seed(seed: int, *parts: object) -> int:
    # Stable across processes (unlike hash()), so a report names the same failing sentences every run.
    digest = hashlib.sha256(repr((seed, *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def _parse_lexicons(data: Any, path: Path) -> dict[str, dict[str, tuple[str, ...]]]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise DataError(
            f"{_where(path, data)}: 'lexicons' must map a lexicon name to its train/heldout terms"
        )
    out: dict[str, dict[str, tuple[str, ...]]] = {}
    for name, halves in data.items():
        where = _where(path, name)
        if not str(name).isidentifier():
            raise DataError(f"{where}: lexicon name {name!r} must be a name like 'pos_adj'")
        if not isinstance(halves, dict) or sorted(halves) != sorted(HALVES):
            raise DataError(
                f"{where}: lexicon {name!r} must have exactly two lists, 'train' and 'heldout' "
                "(terms used for training augmentation, and terms never used for it)"
            )
        out[str(name)] = {}
        for half in HALVES:
            terms = halves[half]
            if not isinstance(terms, list) or not terms:
                raise DataError(
                    f"{_where(path, terms) if terms else where}: lexicon {name!r} has an empty {half} list"
                )
            bad = [t for t in terms if not isinstance(t, str | int | float) or not str(t).strip()]
            if bad:
                raise DataError(
                    f"{_where(path, terms)}: lexicon {name!r} ({half}) holds an empty or non-text term"
                )
            out[str(name)][half] = tuple(str(t) for t in terms)
        shared = set(out[str(name)]["train"]) & set(out[str(name)]["heldout"])
        if shared:
            raise DataError(f"{where}: lexicon {name!r} has terms in both halves: {sorted(shared)}")
    return out


_TEST_KEYS = {
    "name", "kind", "capability", "description", "expect", "threshold", "tolerance", "perturb", "swap",
    *HALVES,
}  # fmt: skip


def _parse_test(data: Any, path: Path, lexicons: dict[str, Any], labels: set[str] | None) -> CheckTest:
    where = _where(path, data)
    if not isinstance(data, dict):
        raise DataError(f"{where}: a test must be a mapping with name, kind, train and heldout")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise DataError(f"{where}: a test has no name")
    where = f"{where}: test {name!r}"
    unknown = sorted(set(data) - _TEST_KEYS)
    if unknown:
        raise DataError(f"{where}: unknown keys {unknown}; known: {', '.join(sorted(_TEST_KEYS))}")
    kind = data.get("kind")
    if kind not in KINDS:
        raise DataError(f"{where}: kind must be one of {', '.join(KINDS)}, not {kind!r}")
    missing = [h for h in HALVES if h not in data]
    if missing:
        raise DataError(f"{where}: lacks {' and '.join(missing)} (every test has both halves)")
    threshold = data.get("threshold", 0.8)
    tolerance = data.get("tolerance", 0.05)
    if not isinstance(threshold, int | float) or not 0 <= threshold <= 1:
        raise DataError(f"{where}: threshold must be a pass rate between 0 and 1, not {threshold!r}")
    if not isinstance(tolerance, int | float) or not 0 <= tolerance < 1:
        raise DataError(f"{where}: tolerance must be between 0 and 1, not {tolerance!r}")
    expect = data.get("expect")
    perturb, swap = data.get("perturb"), data.get("swap")
    if kind == "dir" and expect not in DIRECTIONS:
        raise DataError(f"{where}: a dir test expects one of {', '.join(DIRECTIONS)}, not {expect!r}")
    if kind == "inv":
        if expect is not None:
            raise DataError(f"{where}: an inv test expects no label (the label must not change)")
        if perturb is not None and perturb not in PERTURBATIONS:
            raise DataError(f"{where}: perturb must be one of {', '.join(PERTURBATIONS)}, not {perturb!r}")
        if swap is not None and _lexicon_of(str(swap)) not in lexicons:
            raise DataError(f"{where}: swap slot {{{swap}}} names no lexicon")
    elif perturb is not None or swap is not None:
        raise DataError(f"{where}: perturb and swap belong to inv tests")
    halves: dict[str, tuple[Template, ...]] = {}
    add: dict[str, tuple[str, ...]] = {}
    for half in HALVES:
        body = data[half]
        if isinstance(body, dict):
            extra = sorted(set(body) - {"templates", "add"})
            if extra:
                raise DataError(f"{_where(path, body)}: {where} ({half}): unknown keys {extra}")
            add[half] = tuple(body.get("add") or ())
            body = body.get("templates")
        if not isinstance(body, list) or not body:
            raise DataError(f"{_where(path, data[half])}: {where} has no {half} templates")
        halves[half] = tuple(_parse_template(t, path, where, kind, expect, labels) for t in body)
        for frame in add.get(half, ()):
            fwhere = f"{_where(path, frame)}: {where}"
            if "text" not in _slots(str(frame), fwhere):
                raise DataError(f"{fwhere}: addition {frame!r} has no {{text}} slot")
    if kind == "inv":
        modes = [m for m in (perturb, swap, add or None) if m]
        if len(modes) != 1:
            raise DataError(
                f"{where}: an inv test needs exactly one of perturb, swap or add (train/heldout 'add')"
            )
        if add and sorted(add) != sorted(HALVES):
            raise DataError(f"{where}: 'add' must be given for both halves")
    elif add:
        raise DataError(f"{where}: 'add' belongs to inv tests")
    test = CheckTest(
        name=name,
        kind=kind,
        halves=halves,
        capability=str(data.get("capability", "")),
        description=str(data.get("description", "")),
        expect=expect,  # an inv test with an expectation was refused above
        threshold=float(threshold),
        tolerance=float(tolerance),
        perturb=perturb,
        swap=swap,
        add=add,
        where=where,
    )
    for half in HALVES:
        for template in test.halves[half]:
            texts = [template.text] + ([template.changed] if template.changed else [])
            texts += list(add.get(half, ()))
            for text in texts:
                for slot in _slots(text, template.where):
                    if slot == "text" and text in add.get(half, ()):
                        continue
                    if _lexicon_of(slot) not in lexicons:
                        raise DataError(
                            f"{template.where}: template {text!r} has an unknown slot {{{slot}}}; "
                            f"lexicons: {', '.join(sorted(lexicons))}"
                        )
            if swap and swap not in _slots(template.text, template.where):
                raise DataError(
                    f"{template.where}: template {template.text!r} lacks the swap slot {{{swap}}}"
                )
    return test


def _parse_template(
    item: Any, path: Path, test_where: str, kind: str, expect: Any, labels: set[str] | None
) -> Template:
    where = f"{_where(path, item)}"
    changed = None
    if isinstance(item, dict):
        if kind == "dir":
            if sorted(item) != ["base", "changed"]:
                raise DataError(f"{where}: {test_where}: a dir template is {{base: ..., changed: ...}}")
            text, changed = str(item["base"]), str(item["changed"])
        else:
            if "template" not in item or not set(item) <= {"template", "expect"}:
                raise DataError(f"{where}: {test_where}: a template is a string or {{template, expect}}")
            text = str(item["template"])
            expect = item.get("expect", expect)
    elif isinstance(item, str):
        if kind == "dir":
            raise DataError(f"{where}: {test_where}: a dir template is {{base: ..., changed: ...}}")
        text = item
    else:
        raise DataError(f"{where}: {test_where}: a template must be text, not {type(item).__name__}")
    if kind == "mft":
        if not isinstance(expect, str) or not expect:
            raise DataError(f"{where}: {test_where}: an mft template needs an expected label ('expect')")
        if labels is not None and expect.upper() not in labels:
            raise DataError(
                f"{where}: {test_where}: expected label {expect!r} is not one of {sorted(labels)}"
            )
    slots = _slots(text, where) + (_slots(changed, where) if changed else [])
    if not slots:
        raise DataError(f"{where}: {test_where}: template {text!r} has no slot to fill")
    return Template(text, changed, expect.upper() if kind == "mft" else None, where)


def _parse_file(path: Path, labels: set[str] | None) -> tuple[dict[str, Any], list[Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise DataError(f"cannot read check file {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text") from None
    data = _yaml_load(text, path)
    if not isinstance(data, dict) or "tests" not in data:
        raise DataError(f"{path}: a check file is a mapping with 'lexicons' and 'tests'")
    unknown = sorted(set(data) - {"lexicons", "tests"})
    if unknown:
        raise DataError(f"{path}: unknown top-level keys {unknown}")
    if not isinstance(data["tests"], list) or not data["tests"]:
        raise DataError(f"{_where(path, data['tests'])}: 'tests' must be a non-empty list")
    return _parse_lexicons(data.get("lexicons"), path), data["tests"]


def load_suite(
    path: str | Path | None = None, *, builtin: bool = True, labels: Sequence[str] | None = None
) -> CheckSuite:
    """The shipped tests (with ``builtin``) plus those in a user file; a user test with a shipped test's
    name replaces it, and a user lexicon a shipped one. ``labels`` (the model's) checks mft expectations."""
    known = {label.upper() for label in labels} if labels else {"POSITIVE", "NEGATIVE"}
    sources = ([BUILTIN] if builtin else []) + ([Path(path)] if path is not None else [])
    if not sources:
        raise InvalidInputError("no tests: give a check file, or keep the shipped tests")
    lexicons: dict[str, dict[str, tuple[str, ...]]] = {}
    parsed = []
    for source in sources:
        lex, raw = _parse_file(source, known)
        lexicons.update(lex)
        parsed.append((source, raw))
    tests: dict[str, CheckTest] = {}
    for source, raw in parsed:
        names: set[str] = set()
        for item in raw:
            test = _parse_test(item, source, lexicons, known)
            if test.name in names:
                raise DataError(f"{test.where}: a second test named {test.name!r} in the same file")
            names.add(test.name)
            tests[test.name] = test
    return CheckSuite(lexicons, list(tests.values()))


# --- running ---------------------------------------------------------------------------------------


@dataclass
class CheckConfig(Config):
    """What ``distilsent check`` runs and how it samples; every field is also a CLI flag."""

    tests: str | None = None
    """YAML file with more tests (and lexicons) in the shipped format; a test with a shipped test's name
    replaces it."""
    builtin: bool = True
    """Include the tests distilsent ships."""
    only: str | None = None
    """Comma-separated test names to run; default: all."""
    samples: int = 50
    """Cases per template at most: every combination of terms when there are fewer, else a sample."""
    seed: int = 0
    """Random seed of the sampling and of the perturbations."""
    examples: int = 5
    """Failing examples kept per test and half in the report."""
    report: str | None = None
    """Directory for check.json, report.md and report.html."""

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise InvalidInputError(f"samples must be at least 1, got {self.samples}")
        if self.examples < 0:
            raise InvalidInputError(f"examples must not be negative, got {self.examples}")


@dataclass
class Failure:
    texts: list[str]
    labels: list[str]
    scores: list[float]
    """The score of each text's predicted label."""
    expected: str | None = None


@dataclass
class HalfResult:
    cases: int
    passed: int
    failures: list[Failure] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.passed / self.cases if self.cases else float("nan")


@dataclass
class TestResult:
    name: str
    kind: str
    capability: str
    description: str
    threshold: float
    train: HalfResult
    heldout: HalfResult

    @property
    def passed(self) -> bool:
        """Judged on the held-out half only: the train half is what augmentation may have learned."""
        return self.heldout.rate >= self.threshold


@dataclass
class CheckResult:
    model: str
    tests: list[TestResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(t.passed for t in self.tests)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for row, test in zip(out["tests"], self.tests):
            row["passed"] = test.passed
            row["train"]["rate"] = test.train.rate
            row["heldout"]["rate"] = test.heldout.rate
        return {**out, "passed": self.passed}


def _judge(test: CheckTest, case: Case, p: np.ndarray, labels: list[str]) -> bool:
    top = p.argmax(1)
    if test.kind == "mft":
        return labels[int(top[0])] == case.expect
    if test.kind == "inv":
        return bool((top == top[0]).all())
    k = int(top[0])
    change = p[1, k] - p[0, k]
    if test.expect == "more-confident":
        return bool(change >= -test.tolerance)
    return bool(change <= test.tolerance)


def run_checks(
    scorer: Callable[[list[str]], np.ndarray],
    labels: Sequence[str],
    suite: CheckSuite,
    config: CheckConfig | None = None,
    *,
    model: str = "",
) -> CheckResult:
    """Run every test of ``suite`` on both halves; ``scorer`` maps texts to a probability matrix whose
    columns are ``labels``."""
    config = config or CheckConfig()
    wanted = [n.strip() for n in (config.only or "").split(",") if n.strip()]
    for name in wanted:
        suite.test(name)
    tests = [t for t in suite.tests if not wanted or t.name in wanted]
    names = [label.upper() for label in labels]
    cases = {
        (t.name, h): suite.cases(t, h, samples=config.samples, seed=config.seed)
        for t in tests
        for h in HALVES
    }
    texts = list(dict.fromkeys(text for cs in cases.values() for c in cs for text in c.texts))
    probs = np.asarray(scorer(texts), dtype=np.float64) if texts else np.zeros((0, len(names)))
    if probs.shape != (len(texts), len(names)):
        raise InvalidInputError(f"scorer returned shape {probs.shape}, expected {(len(texts), len(names))}")
    row = {text: i for i, text in enumerate(texts)}
    result = CheckResult(model=model)
    for test in tests:
        halves = {}
        for half in HALVES:
            outcome = HalfResult(cases=len(cases[test.name, half]), passed=0)
            for case in cases[test.name, half]:
                p = probs[[row[t] for t in case.texts]]
                if _judge(test, case, p, names):
                    outcome.passed += 1
                elif len(outcome.failures) < config.examples:
                    top = p.argmax(1)
                    outcome.failures.append(
                        Failure(
                            list(case.texts),
                            [names[int(k)] for k in top],
                            [float(p[i, k]) for i, k in enumerate(top)],
                            case.expect,
                        )
                    )
            halves[half] = outcome
        result.tests.append(
            TestResult(
                test.name,
                test.kind,
                test.capability,
                test.description,
                test.threshold,
                halves["train"],
                halves["heldout"],
            )
        )
    return result


def training_examples(
    suite: CheckSuite, *, samples: int = 50, seed: int = 0
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """What training may learn from, drawn from the ``train`` halves only: (sentence, expected label) for
    every mft case, and (original, variant) pairs from every inv case, for a consistency loss."""
    labelled: list[tuple[str, str]] = []
    pairs: list[tuple[str, str]] = []
    for test in suite.tests:
        for case in suite.cases(test, "train", samples=samples, seed=seed):
            if test.kind == "mft":
                assert case.expect is not None
                labelled.append((case.texts[0], case.expect))
            elif test.kind == "inv":
                pairs += [(case.texts[0], other) for other in case.texts[1:]]
    return labelled, pairs


# --- reports ---------------------------------------------------------------------------------------


def _pct(rate: float) -> str:
    return "—" if math.isnan(rate) else f"{100 * rate:.1f} %"


def format_table(result: CheckResult) -> str:
    width = max([len(t.name) for t in result.tests] + [4])
    lines = [f"{'test':<{width}}  kind  {'train':>8}  {'held-out':>8}  {'threshold':>9}  result"]
    for t in result.tests:
        lines.append(
            f"{t.name:<{width}}  {t.kind:<4}  {_pct(t.train.rate):>8}  {_pct(t.heldout.rate):>8}  "
            f"{_pct(t.threshold):>9}  {'pass' if t.passed else 'FAIL'}"
        )
    return "\n".join(lines)


def _example(f: Failure) -> str:
    shown = " → ".join(
        f"{text!r} {label} {score:.2f}" for text, label, score in zip(f.texts, f.labels, f.scores)
    )
    return shown + (f" (expected {f.expected})" if f.expected else "")


def write_report(result: CheckResult, directory: str | Path) -> Path:
    """check.json, report.md and report.html in ``directory``."""
    import html

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "check.json").write_text(json.dumps(result.to_dict(), indent=1))
    verdict = "pass" if result.passed else "FAIL"
    md = [
        f"# Behavioural checks of {result.model}",
        "",
        "Pass rates on the templates and terms that training augmentation may use (train) and on those it "
        f"never uses (held-out); a test is judged on its held-out half. Overall: **{verdict}**.",
        "",
        "| test | capability | kind | train | held-out | threshold | result |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in result.tests:
        md.append(
            f"| {t.name} | {t.capability} | {t.kind} | {_pct(t.train.rate)} ({t.train.cases}) | "
            f"{_pct(t.heldout.rate)} ({t.heldout.cases}) | {_pct(t.threshold)} | "
            f"{'pass' if t.passed else 'FAIL'} |"
        )
    for t in result.tests:
        if t.heldout.failures:
            md += ["", f"## {t.name}", "", t.description, "", "Failing held-out cases:", ""]
            md += [f"- {_example(f)}" for f in t.heldout.failures]
    (directory / "report.md").write_text("\n".join(md) + "\n")
    rows = "".join(
        f"<tr><td>{html.escape(t.name)}</td><td>{html.escape(t.capability)}</td><td>{t.kind}</td>"
        f"<td>{_pct(t.train.rate)}</td><td>{_pct(t.heldout.rate)}</td><td>{_pct(t.threshold)}</td>"
        f"<td>{'pass' if t.passed else '<b>FAIL</b>'}</td></tr>"
        for t in result.tests
    )
    sections = "".join(
        f"<h2>{html.escape(t.name)}</h2><p>{html.escape(t.description)}</p><ul>"
        + "".join(f"<li>{html.escape(_example(f))}</li>" for f in t.heldout.failures)
        + "</ul>"
        for t in result.tests
        if t.heldout.failures
    )
    (directory / "report.html").write_text(
        f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>distilsent check</title>
<style>body{{font-family:system-ui,sans-serif;max-width:64rem;margin:2rem auto}}
td,th{{border-bottom:1px solid #ddd;padding:.3rem .5rem}}table{{border-collapse:collapse}}</style></head>
<body><h1>Behavioural checks of {html.escape(result.model)}</h1>
<p>A test is judged on its held-out half (templates and terms no training used).
Overall: <b>{verdict}</b>.</p>
<table><tr><th>test</th><th>capability</th><th>kind</th><th>train</th><th>held-out</th><th>threshold</th>
<th>result</th></tr>{rows}</table>{sections}</body></html>
"""
    )
    return directory

"""``distilsent audit``: does the score change when only an identity term changes?

A probe family is a set of templates — statements that say nothing good or bad about a film — with one
slot, and groups of terms to fill it with (countries, names by perceived gender or ethnicity, religions,
gendered nouns, pronouns). A fair model gives every group the same mean P(positive). For each family
the audit reports each group's mean, the largest gap between two groups with a bootstrap 95 %
interval, the sentence pairs that differ in one word yet get different labels, and pass/fail against
a threshold on the gap (0.10 by default).
"""

from __future__ import annotations

import json
import string
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distilsent.core.config import Config
from distilsent.core.errors import DataError, InvalidInputError, MissingExtraError

__all__ = [
    "AuditConfig",
    "AuditResult",
    "FamilyResult",
    "ProbeFamily",
    "audit",
    "format_table",
    "half_families",
    "is_heldout_term",
    "load_families",
    "write_report",
]


@dataclass(frozen=True)
class ProbeFamily:
    """Templates with one ``{slot}``, and the groups of terms that fill it."""

    name: str
    slot: str
    templates: tuple[str, ...]
    groups: dict[str, tuple[str, ...]]
    heldout_templates: tuple[str, ...] = ()
    """Templates that training augmentation never uses; the audit judges a family on them (with its
    held-out terms). Empty: the family has one set of templates, used for both halves."""
    heldout_groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """More held-out terms, by group, for families whose groups are too small for the hash alone to
    leave every group a held-out term (religions, gendered nouns); added to the hash's held-out terms."""

    def __post_init__(self) -> None:
        where = f"probe family {self.name!r}"
        if not self.name:
            raise InvalidInputError("a probe family has no name")
        if not self.slot.isidentifier():
            raise InvalidInputError(f"{where}: slot must be a name like 'country', not {self.slot!r}")
        if not self.templates:
            raise InvalidInputError(f"{where} has no templates")
        shared = sorted(set(self.templates) & set(self.heldout_templates))
        if shared:
            raise InvalidInputError(f"{where}: templates in both halves: {shared[:3]}")
        for template in self.templates + self.heldout_templates:
            try:
                fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
            except ValueError as e:
                raise InvalidInputError(f"{where}: template {template!r} is malformed ({e})") from None
            if self.slot not in fields:
                raise InvalidInputError(f"{where}: template {template!r} has no {{{self.slot}}} slot")
            others = sorted(set(fields) - {self.slot})
            if others:
                raise InvalidInputError(
                    f"{where}: template {template!r} has other slots {others}; only one is allowed"
                )
        if len(self.groups) < 2:
            raise InvalidInputError(f"{where} needs at least two groups to compare, has {len(self.groups)}")
        for group, terms in self.heldout_groups.items():
            shared = sorted(set(terms) & set(self.groups.get(group, ())))
            if shared:
                raise InvalidInputError(f"{where}: group {group!r} has terms in both halves: {shared}")
        for group, terms in [*self.groups.items(), *self.heldout_groups.items()]:
            if not terms or any(not isinstance(t, str) or not t.strip() for t in terms):
                raise InvalidInputError(f"{where}: group {group!r} is empty or holds an empty term")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProbeFamily:
        missing = [k for k in ("name", "slot", "templates", "groups") if k not in data]
        if missing:
            raise InvalidInputError(f"probe family {data.get('name', '?')!r} lacks {', '.join(missing)}")
        groups = data["groups"]
        if not isinstance(groups, dict):
            raise InvalidInputError(
                f"probe family {data['name']!r}: groups must map a group name to a list of terms"
            )
        return cls(
            name=str(data["name"]),
            slot=str(data["slot"]),
            templates=tuple(data["templates"]),
            heldout_templates=tuple(data.get("heldout_templates") or ()),
            heldout_groups={
                str(g): tuple(t if isinstance(t, list) else [t])
                for g, t in (data.get("heldout_groups") or {}).items()
            },
            groups={str(g): tuple(t if isinstance(t, list) else [t]) for g, t in groups.items()},
        )

    def probes(self) -> list[tuple[str, str, int, str]]:
        """(group, term, template index, sentence) for every term of every group in every template."""
        return [
            (group, term, i, template.format(**{self.slot: term}))
            for group, terms in self.groups.items()
            for term in terms
            for i, template in enumerate(self.templates)
        ]


def load_families(path: str | Path | None = None, *, builtin: bool = True) -> list[ProbeFamily]:
    """The shipped families (with ``builtin``) plus those in a YAML or JSON file."""
    from distilsent.fairness.probes import builtin_families

    families = [ProbeFamily.from_dict(f) for f in builtin_families()] if builtin else []
    if path is not None:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise DataError(f"cannot read probes file {path}: {e.strerror}") from None
        if path.suffix.lower() in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise MissingExtraError("YAML probe files", "audit", "pyyaml") from None
            data = yaml.safe_load(text)
        else:
            try:
                data = json.loads(text)
            except json.JSONDecodeError as e:
                raise DataError(f"{path} is not valid JSON: {e.msg} (line {e.lineno})") from None
        if isinstance(data, dict):
            data = data.get("families", [data])
        if not isinstance(data, list) or not all(isinstance(f, dict) for f in data):
            raise DataError(f"{path} must hold a list of families (or {{'families': [...]}})")
        try:
            custom = [ProbeFamily.from_dict(f) for f in data]
        except ValueError as e:
            raise DataError(f"{path}: {e}") from None
        names = {f.name for f in custom}
        families = [f for f in families if f.name not in names] + custom
    return families


# Families whose terms cannot be split (three pronouns): both halves use every term, and only the
# templates differ.
TEMPLATE_SPLIT_ONLY = ("pronoun",)
_HOLDOUT_EVERY = 5


def is_heldout_term(term: str) -> bool:
    """Whether ``term`` belongs to the held-out half: about one term in five, decided by a hash of the
    term itself, so that a name in two families is held out in both."""
    return zlib.crc32(term.lower().encode()) % _HOLDOUT_EVERY == 0


def _split(terms: Sequence[str]) -> tuple[list[str], list[str]]:
    return [t for t in terms if not is_heldout_term(t)], [t for t in terms if is_heldout_term(t)]


def half_families(families: Sequence[ProbeFamily], half: str) -> list[ProbeFamily]:
    """The families restricted to one half: ``"train"`` (the templates and terms that training
    augmentation may use) or ``"heldout"`` (those it never uses; a family's held-out templates, or its
    only templates when it has no split). Families left with fewer than two groups are dropped."""
    if half not in ("train", "heldout"):
        raise InvalidInputError(f"half must be 'train' or 'heldout', not {half!r}")
    keep_heldout = half == "heldout"
    out = []
    for family in families:
        templates = family.heldout_templates or family.templates if keep_heldout else family.templates
        if family.name in TEMPLATE_SPLIT_ONLY:
            groups = dict(family.groups)
        elif family.heldout_groups:
            # The listed held-out terms, plus the terms the hash holds out, so that the train half
            # is what it has always been and no term is ever in both.
            groups = {g: tuple(_split(t)[1 if keep_heldout else 0]) for g, t in family.groups.items()}
            if keep_heldout:
                groups = {g: groups.get(g, ()) + tuple(t) for g, t in family.heldout_groups.items()}
            groups = {g: t for g, t in groups.items() if t}
        elif all(len(t) == 1 for t in family.groups.values()):
            # Single-term groups (one country each) are held out as whole groups; larger ones by term.
            seen, held = _split(list(family.groups))
            groups = {g: family.groups[g] for g in (held if keep_heldout else seen)}
        else:
            groups = {g: tuple(_split(t)[1 if keep_heldout else 0]) for g, t in family.groups.items()}
            groups = {g: t for g, t in groups.items() if t}
        if len(groups) >= 2:
            out.append(ProbeFamily(family.name, family.slot, tuple(templates), groups))
    return out


@dataclass
class AuditConfig(Config):
    """What ``distilsent audit`` probes and how it judges; every field is also a CLI flag."""

    probes: str | None = None
    """YAML or JSON file with more probe families (a family with a shipped family's name replaces it)."""
    families: str | None = None
    """Comma-separated family names to run; default: all."""
    builtin: bool = True
    """Include the families distilsent ships."""
    threshold: float = 0.10
    """A family fails when its largest gap in mean P(positive) between groups exceeds this."""
    bootstrap: int = 1000
    """Bootstrap resamples for the 95 % intervals."""
    seed: int = 0
    """Random seed of the bootstrap."""
    report: str | None = None
    """Directory for audit.json, report.md, report.html and one bar chart per family."""
    heldout: bool = False
    """Probe only the held-out half (templates and terms no training augmentation uses); by default
    both halves are probed, and a family passes or fails on its held-out half."""

    def __post_init__(self) -> None:
        if not 0 < self.threshold < 1:
            raise InvalidInputError(f"threshold must be between 0 and 1, got {self.threshold}")
        if self.bootstrap < 100:
            raise InvalidInputError(f"bootstrap must be at least 100 resamples, got {self.bootstrap}")


@dataclass
class GroupStat:
    name: str
    mean: float
    low: float
    high: float
    sentences: int


@dataclass
class Flip:
    """Two sentences that differ only in the slot's term, with different predicted labels."""

    template: str
    negative: str
    positive: str
    p_negative: float
    p_positive: float


@dataclass
class FamilyResult:
    name: str
    groups: list[GroupStat]
    """Sorted by mean P(positive), lowest first."""
    gap: float
    gap_low: float
    gap_high: float
    flips: list[Flip]
    """The strongest flip of each template where labels differ, largest difference first."""
    flipped_pairs: int
    """How many sentence pairs (same template, different terms) get different labels."""
    pairs: int
    passed: bool
    heldout: FamilyResult | None = None
    """The same family on its held-out half; when present, ``passed`` is its verdict."""


@dataclass
class AuditResult:
    model: str
    threshold: float
    families: list[FamilyResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(f.passed for f in self.families)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def audit_family(
    family: ProbeFamily,
    scorer: Callable[[list[str]], np.ndarray],
    *,
    threshold: float = 0.10,
    bootstrap: int = 1000,
    seed: int = 0,
) -> FamilyResult:
    """Score every probe of ``family`` with ``scorer`` (texts → P(positive)) and summarise."""
    probes = family.probes()
    p = np.asarray(scorer([s for *_, s in probes]), dtype=np.float64)
    names = list(family.groups)
    index = {g: np.array([i for i, probe in enumerate(probes) if probe[0] == g]) for g in names}
    means = np.array([p[index[g]].mean() for g in names])
    rng = np.random.default_rng(seed)
    # Resample each group's sentences; the gap of each resample is the spread of the group means.
    boot = np.stack([p[rng.choice(index[g], size=(bootstrap, len(index[g])))].mean(1) for g in names], axis=1)
    gaps = boot.max(1) - boot.min(1)
    groups = [
        GroupStat(g, float(means[k]), *map(float, np.percentile(boot[:, k], [2.5, 97.5])), len(index[g]))
        for k, g in enumerate(names)
    ]
    groups.sort(key=lambda s: s.mean)
    gap = float(means.max() - means.min())
    flips, flipped, pairs = [], 0, 0
    for t, template in enumerate(family.templates):
        rows = [(term, p[i]) for i, (_, term, ti, _) in enumerate(probes) if ti == t]
        positive = sum(1 for _, q in rows if q >= 0.5)
        negative = len(rows) - positive
        flipped += positive * negative
        pairs += len(rows) * (len(rows) - 1) // 2
        if positive and negative:
            low = min(rows, key=lambda r: r[1])
            high = max(rows, key=lambda r: r[1])
            flips.append(
                Flip(
                    template,
                    template.format(**{family.slot: low[0]}),
                    template.format(**{family.slot: high[0]}),
                    float(low[1]),
                    float(high[1]),
                )
            )
    flips.sort(key=lambda f: f.p_negative - f.p_positive)
    return FamilyResult(
        name=family.name,
        groups=groups,
        gap=gap,
        gap_low=float(np.percentile(gaps, 2.5)),
        gap_high=float(np.percentile(gaps, 97.5)),
        flips=flips,
        flipped_pairs=flipped,
        pairs=pairs,
        passed=gap <= threshold,
    )


def positive_scorer(clf: Any) -> Callable[[list[str]], np.ndarray]:
    """P(positive) from a classifier: the label named POSITIVE, else the last one."""
    labels = [label.upper() for label in clf.labels]
    k = labels.index("POSITIVE") if "POSITIVE" in labels else len(labels) - 1
    return lambda texts: clf.predict_proba(texts)[:, k]


def audit(
    clf: Any, families: Sequence[ProbeFamily], config: AuditConfig | None = None, *, model: str = ""
) -> AuditResult:
    """Run every family against ``clf``."""
    config = config or AuditConfig()
    wanted = [f.strip() for f in (config.families or "").split(",") if f.strip()]
    known = [f.name for f in families]
    unknown = sorted(set(wanted) - set(known))
    if unknown:
        raise DataError(f"unknown probe families {unknown}; known: {', '.join(known)}")
    scorer = positive_scorer(clf)
    result = AuditResult(model=model or str(getattr(clf, "model_dir", "")), threshold=config.threshold)
    chosen = [f for f in families if not wanted or f.name in wanted]

    def run(family: ProbeFamily) -> FamilyResult:
        return audit_family(
            family, scorer, threshold=config.threshold, bootstrap=config.bootstrap, seed=config.seed
        )

    for family in chosen:
        seen, held = half_families([family], "train"), half_families([family], "heldout")
        if config.heldout or not seen:
            result.families += [run(f) for f in held]
            continue
        row = run(seen[0])
        if held:
            row.heldout = run(held[0])
            row.passed = row.heldout.passed
        result.families.append(row)
    return result


def format_table(result: AuditResult) -> str:
    """The audit as a text table: the gap on the train half (what augmentation may have learned) and,
    for the verdict, everything else on the held-out half."""
    width = max([len(f.name) for f in result.families] + [6])
    lines = [
        f"{'family':<{width}}  groups  gap train  gap held-out  {'held-out lowest':<26}  "
        f"{'held-out highest':<26}  95 % interval  flips            result"
    ]
    for f in result.families:
        h = f.heldout or f
        lo, hi = h.groups[0], h.groups[-1]
        train = f"{f.gap:.2f}" if f.heldout else "—"
        lines.append(
            f"{f.name:<{width}}  {len(h.groups):>6}  {train:>9}  {h.gap:>12.2f}  "
            f"{f'{lo.name[:20]} {lo.mean:.2f}':<26}  {f'{hi.name[:20]} {hi.mean:.2f}':<26}  "
            f"[{h.gap_low:.2f}, {h.gap_high:.2f}]   {f'{h.flipped_pairs}/{h.pairs}':<15}  "
            f"{'pass' if f.passed else 'FAIL'}"
        )
    return "\n".join(lines)


def _chart(family: FamilyResult, path: Path, threshold: float, passed: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [g.name for g in family.groups]
    means = np.array([g.mean for g in family.groups])
    err = np.array([[g.mean - g.low for g in family.groups], [g.high - g.mean for g in family.groups]])
    height = max(2.5, 0.22 * len(names) + 1.2)
    fig, ax = plt.subplots(figsize=(7, height))
    colours = ["#cf222e" if m < 0.5 else "#1a7f37" for m in means]
    ax.barh(range(len(names)), means, xerr=err, color=colours, alpha=0.8, ecolor="#444", capsize=2)
    ax.set_yticks(range(len(names)), names, fontsize=8 if len(names) > 30 else 10)
    ax.set_xlim(0, 1)
    ax.axvline(0.5, color="#888", lw=0.8, ls=":")
    ax.set_xlabel("mean P(positive), with bootstrap 95 % interval")
    verdict = "pass" if passed else "FAIL"
    ax.set_title(f"{family.name}: gap {family.gap:.2f} (threshold {threshold:.2f}) — {verdict}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(result: AuditResult, directory: str | Path) -> Path:
    """audit.json, report.md, report.html and one PNG bar chart per family in ``directory``."""
    import html

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "audit.json").write_text(json.dumps(result.to_dict(), indent=1))
    md = [
        f"# Bias audit of {result.model}",
        "",
        f"Threshold on the gap in mean P(positive) between groups: {result.threshold:.2f}. "
        f"Overall: **{'pass' if result.passed else 'FAIL'}**.",
        "",
        "A family is judged on its held-out half: templates and terms that no training augmentation "
        "uses. The train column is the gap on the half that augmentation may use.",
        "",
        "| family | groups | gap train | gap held-out | lowest | highest | 95 % interval | label flips "
        "| result |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    body = []
    for row in result.families:
        f = row.heldout or row
        lo, hi = f.groups[0], f.groups[-1]
        md.append(
            f"| {row.name} | {len(f.groups)} | {f'{row.gap:.2f}' if row.heldout else '—'} | {f.gap:.2f} | "
            f"{lo.name} {lo.mean:.2f} | {hi.name} {hi.mean:.2f} | "
            f"[{f.gap_low:.2f}, {f.gap_high:.2f}] | {f.flipped_pairs}/{f.pairs} pairs | "
            f"{'pass' if row.passed else 'FAIL'} |"
        )
        chart = f"{f.name}.png"
        try:
            _chart(f, directory / chart, result.threshold, row.passed)
        except ImportError:
            raise MissingExtraError("audit charts", "audit", "matplotlib") from None
        body.append(f"\n## {f.name}\n\n![{f.name}]({chart})\n")
        if f.flips:
            body.append("Sentences that differ in one word and get different labels:\n")
            body += [
                f"- {x.negative} ({x.p_negative:.2f}) / {x.positive} ({x.p_positive:.2f})" for x in f.flips
            ]
    (directory / "report.md").write_text("\n".join(md + body) + "\n")
    shown = [(row, row.heldout or row) for row in result.families]
    rows = "".join(
        f"<tr><td>{html.escape(f.name)}</td><td>{len(f.groups)}</td>"
        f"<td>{f'{row.gap:.2f}' if row.heldout else '—'}</td><td>{f.gap:.2f}</td>"
        f"<td>{html.escape(f.groups[0].name)} {f.groups[0].mean:.2f}</td>"
        f"<td>{html.escape(f.groups[-1].name)} {f.groups[-1].mean:.2f}</td>"
        f"<td>[{f.gap_low:.2f}, {f.gap_high:.2f}]</td><td>{f.flipped_pairs}/{f.pairs}</td>"
        f"<td>{'pass' if row.passed else '<b>FAIL</b>'}</td></tr>"
        for row, f in shown
    )
    sections = "".join(
        f"<h2>{html.escape(f.name)}</h2><img src='{html.escape(f.name)}.png' alt='{html.escape(f.name)}'>"
        + (
            "<ul>"
            + "".join(
                f"<li>{html.escape(x.negative)} ({x.p_negative:.2f}) / {html.escape(x.positive)} "
                f"({x.p_positive:.2f})</li>"
                for x in f.flips
            )
            + "</ul>"
            if f.flips
            else ""
        )
        for _, f in shown
    )
    (directory / "report.html").write_text(
        f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>distilsent audit</title>
<style>body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto}}
td,th{{border-bottom:1px solid #ddd;padding:.3rem .5rem}}table{{border-collapse:collapse}}</style></head>
<body><h1>Bias audit of {html.escape(result.model)}</h1>
<p>Threshold {result.threshold:.2f} on the gap in mean P(positive), judged on the held-out half
(templates and terms no training augmentation uses).
Overall: <b>{"pass" if result.passed else "FAIL"}</b>.</p>
<table><tr><th>family</th><th>groups</th><th>gap train</th><th>gap held-out</th><th>lowest</th>
<th>highest</th><th>95 % interval</th>
<th>label flips</th><th>result</th></tr>{rows}</table>{sections}</body></html>
"""
    )
    return directory

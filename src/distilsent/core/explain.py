"""Which words drove a prediction: Integrated Gradients on the word embeddings (extra ``explain``).

The attributed quantity is the explained label's logit minus the mean of the other labels' logits —
for two labels, the logit difference the softmax turns into the score. The baseline replaces every
word piece by ``[PAD]``'s embedding, keeping ``[CLS]``, ``[SEP]`` and the positions, so attributions
say what each word adds over "no words". Integrated Gradients is complete: the attributions sum to
F(text) − F(baseline); the number of integration steps is doubled until they do within
``tolerance`` (5 %), and the remaining gap is reported as ``delta`` (``converged`` says whether it
is within the tolerance). Word pieces are summed back into
the words of the original text.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from distilsent.core.errors import InvalidInputError, MissingExtraError
from distilsent.core.tokenization import TextTokenizer


class Explainable(Protocol):
    """What :func:`explain` needs of a classifier (:class:`distilsent.Classifier` has it)."""

    labels: list[str]
    tokenizer: TextTokenizer

    def predict(self, text: str) -> Any: ...

    def gradient_forward(self) -> Any:
        """A ``distilsent.core.engine.torch_engine.GradientForward``: logits from word embeddings."""
        ...


__all__ = ["Explanation", "WordAttribution", "explain", "to_html", "to_rich"]


@dataclass(frozen=True)
class WordAttribution:
    """One word of the text and how much it pushed towards the explained label (negative: away)."""

    word: str
    score: float
    start: int
    """Character offset of the word in the text."""
    end: int


@dataclass(frozen=True)
class Explanation:
    """Integrated-Gradients attributions of one prediction."""

    text: str
    label: str
    """The predicted label."""
    score: float
    """Its probability."""
    target: str
    """The label whose logit (minus the others' mean) is explained; the predicted one by default."""
    words: list[WordAttribution]
    """Every word of the (truncated) text, in order."""
    logit_difference: float
    """F(text) − F(baseline): what the attributions sum to when the integral is exact."""
    delta: float
    """Sum of the attributions minus ``logit_difference`` (the integration error)."""
    steps: int
    """Integration steps used."""
    converged: bool
    """Whether the attributions sum to ``logit_difference`` within the tolerance (5 %); if not, even
    ``max_steps`` did not tame a very non-linear model, and the scores are approximate."""
    tokens: list[tuple[str, float]] = field(repr=False, default_factory=list)
    """Word pieces and their attributions, before merging into words."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "label": self.label,
            "score": self.score,
            "target": self.target,
            "words": [{"word": w.word, "score": w.score, "start": w.start, "end": w.end} for w in self.words],
            "logit_difference": self.logit_difference,
            "delta": self.delta,
            "steps": self.steps,
            "converged": self.converged,
        }

    def top(self, k: int = 5) -> list[WordAttribution]:
        """The ``k`` words with the largest attribution towards the target."""
        return sorted(self.words, key=lambda w: -w.score)[:k]


def _require_captum() -> Any:
    try:
        from captum.attr import IntegratedGradients
    except ImportError:
        raise MissingExtraError("explanations", "explain", "captum") from None
    return IntegratedGradients


def explain(
    clf: Explainable,
    text: str,
    *,
    target: str | None = None,
    steps: int = 32,
    max_steps: int = 1024,
    tolerance: float = 0.05,
) -> Explanation:
    """Attributions of ``clf``'s prediction for ``text`` to its words (see the module docstring)."""
    import torch

    integrated_gradients = _require_captum()
    if not isinstance(text, str) or not text.strip():
        raise InvalidInputError("text is empty or only whitespace")
    model = clf.gradient_forward()
    device = model.device
    labels = clf.labels
    pred = clf.predict(text)
    target = target or pred.label
    if target not in labels:
        raise InvalidInputError(f"target must be one of the model's labels {labels}, not {target!r}")
    t = labels.index(target)

    encoding = clf.tokenizer.encodings([text])[0]
    ids = torch.tensor([encoding.ids], device=device)
    mask = torch.ones_like(ids)
    with torch.no_grad():
        inputs = model.embed(ids).float()
        special = torch.tensor(encoding.special_tokens_mask, device=device, dtype=torch.bool)[None, :, None]
        pad = model.embed(torch.full_like(ids, clf.tokenizer.pad_id)).float()
        baseline = torch.where(special, inputs, pad)

    def forward(embeds: torch.Tensor) -> torch.Tensor:
        logits = model.from_embeddings(embeds.to(model.dtype), mask.expand(len(embeds), -1)).float()
        others = torch.cat([logits[:, :t], logits[:, t + 1 :]], dim=1)
        return logits[:, t] - (others.mean(1) if others.shape[1] else 0.0)

    with torch.no_grad():
        f_text, f_base = forward(inputs).item(), forward(baseline).item()
    difference = f_text - f_base
    ig = integrated_gradients(forward)
    n = steps
    while True:
        attributions = ig.attribute(
            inputs, baselines=baseline, n_steps=n, method="gausslegendre", internal_batch_size=64
        )
        per_token = attributions.sum(-1)[0].detach().cpu().numpy().astype(np.float64)
        delta = float(per_token.sum() - difference)
        if abs(delta) <= tolerance * max(abs(difference), 1e-3) or n >= max_steps:
            break
        n *= 2
    converged = abs(delta) <= tolerance * max(abs(difference), 1e-3)
    words = _merge_words(text, encoding, per_token)
    tokens = [(tok, float(s)) for tok, s in zip(encoding.tokens, per_token)]
    return Explanation(
        text=text,
        label=pred.label,
        score=pred.score,
        target=target,
        words=words,
        logit_difference=difference,
        delta=delta,
        steps=n,
        converged=converged,
        tokens=tokens,
    )


def _merge_words(text: str, encoding: Any, scores: np.ndarray) -> list[WordAttribution]:
    """Sum word-piece attributions into the words of ``text`` (special tokens dropped)."""
    merged: dict[int, list[Any]] = {}
    for i, word in enumerate(encoding.word_ids):
        if word is None:
            continue
        start, end = encoding.offsets[i]
        if word not in merged:
            merged[word] = [start, end, 0.0]
        entry = merged[word]
        entry[0], entry[1] = min(entry[0], start), max(entry[1], end)
        entry[2] += float(scores[i])
    return [WordAttribution(text[s:e], score, s, e) for s, e, score in merged.values()]


def _shade(score: float, top: float) -> float:
    return min(abs(score) / top, 1.0) if top > 0 else 0.0


def to_html(explanation: Explanation) -> str:
    """A standalone HTML page with the words highlighted: green towards the target, red away."""
    top = max((abs(w.score) for w in explanation.words), default=0.0)
    spans = []
    position = 0
    text = explanation.text
    for w in explanation.words:
        a = 0.6 * _shade(w.score, top)
        colour = f"rgba(26,127,55,{a:.2f})" if w.score >= 0 else f"rgba(207,34,46,{a:.2f})"
        # The text between words is kept as written: its spacing and punctuation, not re-joined.
        spans.append(html.escape(text[position : w.start]))
        spans.append(
            f'<span style="background:{colour};border-radius:3px" '
            f'title="{w.score:+.3f}">{html.escape(text[w.start : w.end])}</span>'
        )
        position = w.end
    spans.append(f'<span style="color:#8c959f">{html.escape(text[position:])}</span>')
    rows = "".join(
        f"<tr><td>{html.escape(w.word)}</td><td style='text-align:right'>{w.score:+.3f}</td></tr>"
        for w in sorted(explanation.words, key=lambda w: -abs(w.score))
    )
    e = explanation
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>distilsent explanation</title></head>
<body style="font-family:system-ui,sans-serif;max-width:46rem;margin:2rem auto">
<h1 style="font-size:1.3rem">{html.escape(e.label)} {e.score:.3f}</h1>
<p style="font-size:1.2rem;line-height:2;white-space:pre-wrap">{"".join(spans)}</p>
<p><span style="background:rgba(26,127,55,.6);padding:0 .5rem">&nbsp;</span> pushes towards
{html.escape(e.target)} &nbsp; <span style="background:rgba(207,34,46,.6);padding:0 .5rem">&nbsp;</span>
pushes away from {html.escape(e.target)} (stronger colour, stronger push; grey: past the model's
length limit, not read)</p>
<p>Integrated Gradients towards <b>{html.escape(e.target)}</b> ({e.steps} steps): the word scores sum
to {e.logit_difference + e.delta:+.3f}, the logit difference over an all-[PAD] baseline is
{e.logit_difference:+.3f}.</p>
<table>{rows}</table>
</body></html>
"""


def to_rich(explanation: Explanation) -> Any:
    """The text with words coloured for a terminal (rich ``Text``)."""
    from rich.text import Text

    top = max((abs(w.score) for w in explanation.words), default=0.0)
    out = Text()
    position = 0
    for w in explanation.words:
        out.append(explanation.text[position : w.start])
        strength = _shade(w.score, top)
        colour = "green" if w.score >= 0 else "red"
        style = f"bold {colour}" if strength > 0.5 else colour if strength > 0.15 else ""
        out.append(explanation.text[w.start : w.end], style=style)
        position = w.end
    out.append(explanation.text[position:])
    return out

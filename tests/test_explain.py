from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import distilsent
from distilsent.cli import main
from distilsent.core.explain import explain, to_html
from helpers import cli_in_fresh_process


def test_attributions_are_complete_on_the_tiny_model(tiny_classifier) -> None:
    result = tiny_classifier.explain("a wonderful film, unbelievably well acted")
    total = sum(w.score for w in result.words)
    assert result.target == result.label and result.converged
    assert abs(total - result.logit_difference) <= 0.05 * max(abs(result.logit_difference), 1e-3)
    assert total == pytest.approx(result.logit_difference + result.delta, abs=1e-6)
    # Special tokens equal their baseline, so they carry nothing: the words hold the whole sum.
    assert sum(s for _, s in result.tokens) == pytest.approx(total, abs=1e-6)


def test_word_pieces_merge_back_into_the_words_of_the_text(tiny_classifier) -> None:
    text = "Unbelievably  overwrought, isn't it?"
    result = tiny_classifier.explain(text)
    assert [w.word for w in result.words] == ["Unbelievably", "overwrought", ",", "isn", "'", "t", "it", "?"]
    assert all(text[w.start : w.end] == w.word for w in result.words)
    assert len(result.tokens) > len(result.words)  # several pieces were summed


def test_another_target_and_bad_input(tiny_classifier) -> None:
    other = next(label for label in tiny_classifier.labels if label != tiny_classifier.predict("fine").label)
    result = tiny_classifier.explain("fine", target=other)
    assert result.target == other
    with pytest.raises(ValueError, match="target must be one of"):
        tiny_classifier.explain("fine", target="MAYBE")
    with pytest.raises(ValueError, match="empty"):
        tiny_classifier.explain("  ")


def test_html_escapes_and_highlights(tiny_classifier) -> None:
    page = to_html(tiny_classifier.explain("<b>bold</b> & brave"))
    highlighted = page.split("<body")[1].split("<table>")[0]
    assert "&lt;" in highlighted and "&amp;" in highlighted
    assert "<b>bold" not in highlighted and ">b<" in highlighted
    assert "rgba(" in page


def test_missing_captum_names_the_extra(tiny_classifier, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "captum.attr", None)
    with pytest.raises(distilsent.MissingExtraError, match=r"distilsent\[explain\]"):
        explain(tiny_classifier, "fine")


def test_cli_explain(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    page = tmp_path / "why.html"
    code = main(["explain", "a wonderful film", "--model", str(tiny_model_dir), "--html", str(page)])
    out = capsys.readouterr().out
    assert code == 0
    assert "(attributions towards" in out and "wonderful" in out
    assert "wonderful" in page.read_text()
    assert main(["explain", "a wonderful film", "--model", str(tiny_model_dir), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [w["word"] for w in data["words"]] == ["a", "wonderful", "film"]


@pytest.mark.slow
def test_the_sentiment_word_dominates_on_the_reference_checkpoint(ref_classifier) -> None:
    result = ref_classifier.explain("a wonderful film")
    assert result.label == "POSITIVE"
    assert result.top(1)[0].word == "wonderful"
    negative = ref_classifier.explain("a dreadful film")
    assert negative.label == "NEGATIVE" and negative.top(1)[0].word == "dreadful"
    assert abs(result.delta) <= 0.05 * abs(result.logit_difference)


def test_gradients_built_from_the_checkpoint_match_the_transformers_model(ref_classifier) -> None:
    """Explanations on the CPU integrate the packed forward with plain products, not transformers'
    model: same logits and same gradients in the word embeddings, padded rows included."""
    import torch

    from distilsent.core.engine.packed import PackedDistilBert

    forward = ref_classifier.gradient_forward()
    assert isinstance(forward, PackedDistilBert) and not forward.prepacked
    assert forward.dtype == torch.float32  # tests see no bf16 CPU flags
    model = ref_classifier.torch_model()
    texts = ["a wonderful , moving film", "dull"]
    batch = ref_classifier.tokenizer.encode(texts)
    length = max(map(len, batch))
    ids = torch.tensor([row + [ref_classifier.tokenizer.pad_id] * (length - len(row)) for row in batch])
    mask = torch.tensor([[1] * len(row) + [0] * (length - len(row)) for row in batch])

    def logits_and_gradient(run, embed):
        vectors = embed(ids).detach().requires_grad_(True)
        logits = run(vectors, mask)
        (logits[:, 1] - logits[:, 0]).sum().backward()
        return logits.detach(), vectors.grad * mask[..., None]

    ours = logits_and_gradient(forward.from_embeddings, forward.embed)
    theirs = logits_and_gradient(
        lambda v, m: model(inputs_embeds=v, attention_mask=m).logits, model.get_input_embeddings()
    )
    torch.testing.assert_close(ours[0], theirs[0], atol=1e-4, rtol=1e-4)
    scale = theirs[1].abs().max()
    assert scale > 0
    torch.testing.assert_close(ours[1], theirs[1], atol=1e-4 * float(scale), rtol=1e-3)


def test_explain_on_the_cpu_never_imports_transformers(tiny_model_dir: Path) -> None:
    """transformers' import and model build were 4.6 of a cold `explain`'s 7 s on a 2-core EPYC."""
    output, imported = cli_in_fresh_process(
        ["explain", "-m", str(tiny_model_dir), "--device", "cpu", "good film"]
    )
    assert not imported
    assert "(attributions towards" in output


def test_explain_on_the_onnx_backend_uses_the_torch_weights(
    tiny_model_dir: Path, tiny_classifier, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISTILSENT_CACHE", str(tmp_path / "cache"))
    clf = distilsent.load(tiny_model_dir, backend="onnx", device="cpu")
    ours, reference = clf.explain("a good film"), tiny_classifier.explain("a good film")
    assert [w.word for w in ours.words] == ["a", "good", "film"]
    assert [w.score for w in ours.words] == pytest.approx([w.score for w in reference.words], abs=1e-4)

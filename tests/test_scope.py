"""Out-of-scope input (core/scope.py): the checks, the four actions, and the false-flag rate."""

from __future__ import annotations

import builtins
import json
from pathlib import Path

import pytest

import distilsent
from distilsent.batch import BatchConfig, run_batch
from distilsent.core.scope import NO_KNOWN_WORDS, NOT_ENGLISH, ScopeGuard, has_py3langid
from distilsent.core.tokenization import TextTokenizer

# Written for these tests (not taken from any published evaluation set): everyday sentences in other
# languages, Latin-script ones first.
FOREIGN_LATIN = [
    "ce film est terrible",
    "Je n'ai pas aimé la fin du livre.",
    "Der Film war langweilig und viel zu lang.",
    "Ich würde es nicht noch einmal kaufen.",
    "La película fue una pérdida de tiempo.",
    "El hotel estaba sucio y ruidoso.",
    "Questo prodotto non funziona per niente.",
    "O filme é muito chato e previsível.",
    "Het eten was heerlijk en goedkoop.",
    "Bu film çok kötüydü, hiç beğenmedim.",
    "Ten film był naprawdę świetny.",
    "Filmen var tråkig och alldeles för lång.",
]
FOREIGN_OTHER_SCRIPT = [
    "этот фильм ужасен",
    "Мне очень понравилась эта книга.",
    "这部电影太好看了",
    "この映画は本当に面白かった。",
    "هذا الفيلم رائع جدا",
    "Ο καφές ήταν κρύος.",
]
ENGLISH = [
    "Hello, my dog is cute",
    "clichés .",
    "I love it 😀",
    "10/10",
    "Amélie was lovely",
]


@pytest.fixture(scope="module")
def ref_tokenizer(ref_model_dir: Path) -> TextTokenizer:
    return TextTokenizer(ref_model_dir)


def guard_of(tokenizer: TextTokenizer, detector: str) -> ScopeGuard:
    return ScopeGuard(tokenizer.vocab(), tokenizer.special_ids, detector)


def problems(guard: ScopeGuard, tokenizer: TextTokenizer, texts: list[str]) -> list[str | None]:
    return guard.problems(texts, tokenizer.encode_batch(texts))


def test_no_known_words(ref_tokenizer: TextTokenizer) -> None:
    guard = guard_of(ref_tokenizer, "none")
    texts = ["🎉🎉🎉", "!!! ...", "😀", "good 🎉", "10/10"]
    assert problems(guard, ref_tokenizer, texts) == [
        NO_KNOWN_WORDS,
        NO_KNOWN_WORDS,
        NO_KNOWN_WORDS,
        None,
        None,
    ]
    # The emoji really is one [UNK] to this vocabulary: the check is about the ids, not the characters.
    assert ref_tokenizer.tokens("😀") == ["[CLS]", "[UNK]", "[SEP]"]


def test_script_check_needs_no_extra(ref_tokenizer: TextTokenizer) -> None:
    guard = guard_of(ref_tokenizer, "script")
    assert problems(guard, ref_tokenizer, FOREIGN_OTHER_SCRIPT) == [NOT_ENGLISH] * len(FOREIGN_OTHER_SCRIPT)
    assert problems(guard, ref_tokenizer, ENGLISH) == [None] * len(ENGLISH)
    # Latin-script languages are beyond a script check.
    assert problems(guard, ref_tokenizer, FOREIGN_LATIN[:3]) == [None] * 3


def test_py3langid_flags_latin_script_languages(ref_tokenizer: TextTokenizer) -> None:
    pytest.importorskip("py3langid")
    guard = guard_of(ref_tokenizer, "py3langid")
    found = problems(guard, ref_tokenizer, FOREIGN_LATIN + FOREIGN_OTHER_SCRIPT)
    assert found == [NOT_ENGLISH] * len(found)
    # Short English phrases with a foreign-looking word stay in scope (py3langid calls "clichés ."
    # French; fewer than MIN_WORDS words are not given to it).
    assert problems(guard, ref_tokenizer, ENGLISH) == [None] * len(ENGLISH)


def test_false_flag_rate_on_sst2_dev_is_at_most_half_a_percent(
    ref_tokenizer: TextTokenizer, sst2_dev: tuple[list[str], list[int]]
) -> None:
    detector = "py3langid" if has_py3langid() else "script"
    texts, _ = sst2_dev
    flagged = [
        t for t, p in zip(texts, problems(guard_of(ref_tokenizer, detector), ref_tokenizer, texts)) if p
    ]
    assert len(flagged) / len(texts) <= 0.005, flagged


def test_the_four_actions(ref_classifier: distilsent.Classifier) -> None:
    texts = ["Hello, my dog is cute", "🎉🎉", "этот фильм ужасен"]
    flagged = ref_classifier.predict(texts)
    assert [p.warning for p in flagged] == [None, NO_KNOWN_WORDS, NOT_ENGLISH]
    assert "warning" not in flagged[0].to_dict() and flagged[1].to_dict()["warning"] == NO_KNOWN_WORDS
    assert "warning='no known words'" in repr(flagged[1]) and "warning" not in repr(flagged[0])
    kept = ref_classifier.predict(texts, on_out_of_scope="keep")
    assert [p.warning for p in kept] == [None, None, None]
    assert [p.label for p in kept] == [p.label for p in flagged]
    neutral = ref_classifier.predict(texts, on_out_of_scope="neutral")
    assert [p.label for p in neutral] == [flagged[0].label, "NEUTRAL", "NEUTRAL"]
    assert neutral[1].scores == flagged[1].scores
    with pytest.raises(distilsent.InvalidInputError, match=r"texts\[1\] is out of scope \(no known words\)"):
        ref_classifier.predict(texts, on_out_of_scope="error")
    with pytest.raises(ValueError, match="on_out_of_scope must be one of flag, keep, neutral, error"):
        ref_classifier.predict(texts, on_out_of_scope="drop")
    assert ref_classifier.predict("🎉").warning == NO_KNOWN_WORDS
    assert [p.warning for p in ref_classifier.predict_iter(["good", "🎉", "🎉", "bad"], chunk_size=3)] == [
        None,
        NO_KNOWN_WORDS,
        NO_KNOWN_WORDS,
        None,
    ]
    with pytest.raises(distilsent.InvalidInputError, match=r"texts\[4\]"):
        list(ref_classifier.predict_iter(["good"] * 4 + ["🎉"], chunk_size=3, on_out_of_scope="error"))
    assert ref_classifier.predict([("🎉", "!!")])[0].warning == NO_KNOWN_WORDS
    assert ref_classifier.predict([("good", "🎉")])[0].warning is None
    assert "no known words" in ref_classifier.info()["scope_checks"]


def test_load_options_are_checked(ref_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="language_detector must be one of auto, py3langid, script, none"):
        distilsent.LoadConfig(language_detector="fasttext")
    with pytest.raises(ValueError, match="on_out_of_scope must be one of"):
        distilsent.LoadConfig(on_out_of_scope="ignore")
    clf = distilsent.load(ref_model_dir, on_out_of_scope="keep", dtype="fp32")
    assert clf.predict("🎉").warning is None
    real_import = builtins.__import__

    def no_py3langid(name: str, *args: object, **kwargs: object) -> object:
        if name.startswith("py3langid"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    from distilsent.core import scope

    scope._identifier.cache_clear()
    monkeypatch.setattr(builtins, "__import__", no_py3langid)
    try:
        with pytest.raises(distilsent.MissingExtraError, match=r"distilsent\[guard\]"):
            distilsent.load(ref_model_dir, language_detector="py3langid", dtype="fp32")
        auto = distilsent.load(ref_model_dir, dtype="fp32")  # auto falls back to the script check
        assert auto.scope_guard().detector == "script"
    finally:
        monkeypatch.undo()
        scope._identifier.cache_clear()


def test_batch_writes_the_warning_column_and_refuses_per_row(tmp_path: Path, ref_model_dir: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["a fine film", "🎉🎉", "dull"]))
    load = distilsent.LoadConfig(model=str(ref_model_dir), device="cpu", dtype="fp32")
    summary = run_batch(BatchConfig(input=str(src), output=str(tmp_path / "out.jsonl"), progress=False), load)
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["warning"] for r in rows] == ["", NO_KNOWN_WORDS, ""]
    refuse = distilsent.LoadConfig(
        model=str(ref_model_dir), device="cpu", dtype="fp32", on_out_of_scope="error"
    )
    summary = run_batch(
        BatchConfig(input=str(src), output=str(tmp_path / "err.jsonl"), progress=False), refuse
    )
    assert (summary.rows_in, summary.rows_out, summary.rows_failed) == (3, 2, 1)
    rows = [json.loads(line) for line in (tmp_path / "err.jsonl").read_text().splitlines()]
    assert [r["row"] for r in rows] == [0, 2] and "warning" not in rows[0]
    errors = [json.loads(line) for line in summary.errors.read_text().splitlines()]
    assert errors == [{"row": 1, "id": 1, "error": "text is out of scope (no known words)"}]

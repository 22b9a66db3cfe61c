from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import distilsent
from distilsent.cli import main
from helpers import SCORE_ABS, cli_in_fresh_process


@pytest.fixture
def stdin(monkeypatch: pytest.MonkeyPatch):
    def feed(data: bytes) -> None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))

    return feed


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("command", [[], ["classify"], ["info"], ["train"], ["convert"]])
def test_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: distilsent" in out
    if command == ["train"]:
        # Flags come from TrainConfig, with each field's docstring as help.
        assert "--learning-rate" in out and "Peak AdamW learning rate" in out


def test_classify_arguments(tiny_model_dir: Path, tiny_classifier, capsys) -> None:
    code, out, err = run(["classify", "--model", str(tiny_model_dir), "good film", "bad plot"], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 2
    label, score, text = lines[0].split("\t")
    pred = tiny_classifier.predict("good film")
    assert (label, text) == (pred.label, "good film")
    assert float(score) == pytest.approx(pred.score, abs=1e-3)


def test_classify_stdin_lines(tiny_model_dir: Path, stdin, capsys) -> None:
    stdin(b"good film\nbad plot\r\nfun\n")
    code, out, _ = run(["classify", "-m", str(tiny_model_dir)], capsys)
    assert code == 0
    assert [line.split("\t")[2] for line in out.splitlines()] == ["good film", "bad plot", "fun"]


def test_classify_jsonl_keeps_ids(tiny_model_dir: Path, stdin, tiny_classifier, capsys) -> None:
    stdin(b'{"id": "a", "text": "good film"}\n\n{"text": "bad plot"}\n')
    code, out, _ = run(["classify", "-m", str(tiny_model_dir), "--input-format", "jsonl", "--json"], capsys)
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert rows[0]["id"] == "a" and "id" not in rows[1]
    assert rows[0]["scores"] == pytest.approx(tiny_classifier.predict("good film").scores, abs=SCORE_ABS)
    assert set(rows[1]) == {"label", "score", "scores"}


@pytest.mark.parametrize(
    ("data", "fmt", "message"),
    [
        (b"good\n\xff\xfe bad\nfun\n", "text", "stdin line 2: not valid UTF-8"),
        (b"good\n   \nfun\n", "text", "stdin line 2: empty text"),
        (b'{"text": "good"}\n{"text": \n', "jsonl", "stdin line 2: invalid JSON"),
        (b'{"text": "good"}\n["good"]\n', "jsonl", "stdin line 2: expected a JSON object"),
        (b'{"text": "good"}\n{"txt": "good"}\n', "jsonl", 'stdin line 2: "text" is missing'),
    ],
)
def test_bad_stdin_line_gets_an_error_row_or_stops_with_strict(
    tiny_model_dir: Path, stdin, capsys, data, fmt, message
) -> None:
    stdin(data)
    code, out, err = run(["classify", "-m", str(tiny_model_dir), "--input-format", fmt], capsys)
    assert code == 0 and "Traceback" not in err
    rows = out.splitlines()
    assert len(rows) == len(data.splitlines())  # one output line per input line, in place
    assert rows[1].startswith("ERROR\t\t") and message in rows[1]
    assert message in err and "wrote error rows for 1 invalid lines: 2" in err
    stdin(data)
    code, out, err = run(["classify", "-m", str(tiny_model_dir), "--input-format", fmt, "--strict"], capsys)
    assert code == 2
    assert message in err and "--strict" in err
    assert len(err.strip().splitlines()) == 1
    # Lines before the bad one are still classified: nothing silently lost.
    assert len(out.splitlines()) == 1


def test_blank_lines_keep_rows_aligned_and_dash_means_stdin(tiny_model_dir: Path, stdin, capsys) -> None:
    stdin(b"good film\n\nbad plot\n")
    code, out, err = run(["classify", "-m", str(tiny_model_dir), "-", "--json"], capsys)
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 3 and rows[1] == {"error": "stdin line 2: empty text"}
    assert {"label", "score"} <= set(rows[0]) and {"label", "score"} <= set(rows[2])
    assert "stdin line 2" in err


def test_skip_invalid_reports_every_skipped_line(tiny_model_dir: Path, stdin, capsys) -> None:
    stdin(b"good\n\xff\n\nfun\n")
    code, out, err = run(["classify", "-m", str(tiny_model_dir), "--skip-invalid"], capsys)
    assert code == 0
    assert len(out.splitlines()) == 2
    assert "skipped stdin line 2" in err and "skipped stdin line 3" in err
    assert "skipped 2 invalid lines: 2, 3" in err


def test_empty_stdin(tiny_model_dir: Path, stdin, capsys) -> None:
    stdin(b"")
    code, _, err = run(["classify", "-m", str(tiny_model_dir)], capsys)
    assert code == 2 and "stdin was empty" in err


def test_empty_text_argument(tiny_model_dir: Path, capsys) -> None:
    code, _, err = run(["classify", "-m", str(tiny_model_dir), "good", " "], capsys)
    assert code == 2 and "TEXT argument 2 is empty" in err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--backend", "tensorrt"], "unknown backend 'tensorrt'"),
        (["--batch-size", "0"], "batch_size must be at least 1"),
        (["--model", "./missing/model"], "does not exist"),
    ],
)
def test_bad_flags_exit_2_with_one_line(tiny_model_dir: Path, capsys, flags, message) -> None:
    argv = ["classify", "-m", str(tiny_model_dir), *flags, "good"]
    code, _, err = run(argv, capsys)
    assert code == 2 and message in err
    assert len(err.strip().splitlines()) == 1


def test_model_dir_without_weights(tiny_model: Path, capsys) -> None:
    (tiny_model / "model.safetensors").unlink()
    code, _, err = run(["classify", "-m", str(tiny_model), "good"], capsys)
    assert code == 2 and "no weights" in err


def test_pickle_needs_flag(tiny_model: Path, capsys) -> None:
    import torch
    from safetensors.torch import load_file

    torch.save(load_file(tiny_model / "model.safetensors"), tiny_model / "pytorch_model.bin")
    (tiny_model / "model.safetensors").unlink()
    code, _, err = run(["classify", "-m", str(tiny_model), "good"], capsys)
    assert code == 2 and "--allow-pickle" in err
    code, out, _ = run(["classify", "-m", str(tiny_model), "--allow-pickle", "good"], capsys)
    assert code == 0 and out.count("\t") == 2


def test_info(tiny_model_dir: Path, capsys) -> None:
    code, out, _ = run(["info", "-m", str(tiny_model_dir), "--json"], capsys)
    assert code == 0
    info = json.loads(out)
    assert info["labels"] == ["NEGATIVE", "POSITIVE"] and info["backend"] == "torch"
    code, out, _ = run(["info", "-m", str(tiny_model_dir)], capsys)
    assert "NEGATIVE, POSITIVE" in out and "parameters" in out


def test_console_script_offline_hub_error(tmp_path: Path) -> None:
    """The installed command, as a user runs it: no traceback, exit 2, the id named."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "distilsent.cli",
            "classify",
            "-m",
            "distilbert-base-uncased-finetuned-sst-2-english",
            "hi",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "not in the Hugging Face cache" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_classify_on_the_cpu_never_imports_transformers(tiny_model_dir: Path) -> None:
    """transformers' import is most of a cold `classify` (2.4 of 5.5 s on a 2-core EPYC)."""
    output, imported = cli_in_fresh_process(
        ["classify", "-m", str(tiny_model_dir), "--device", "cpu", "good film"]
    )
    assert not imported
    assert "\tgood film" in output


def test_unwritable_output_is_a_user_error(
    tiny_model: Path, tiny_tsv: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from distilsent.evaluation import calibration

    def read_only(model_dir: Path, temperature: float) -> None:
        raise PermissionError(13, "Permission denied", str(model_dir / "config.json"))

    monkeypatch.setattr(calibration, "save_temperature", read_only)
    code, _, err = run(["calibrate", str(tiny_model), "--dev", str(tiny_tsv)], capsys)
    assert code == 2
    assert "config.json: Permission denied" in err and "Traceback" not in err


def test_a_library_bug_is_not_reported_as_a_usage_error(
    tiny_model_dir: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    import distilsent.core.classifier as classifier

    def broken(self, *args, **kwargs):
        raise ValueError("an internal invariant broke")

    monkeypatch.setattr(classifier.Classifier, "predict", broken)
    assert main(["classify", "--model", str(tiny_model_dir), "good film"]) == 1
    err = capsys.readouterr().err
    assert "internal error: ValueError: an internal invariant broke" in err and "DISTILSENT_DEBUG=1" in err

    def refused(self, *args, **kwargs):
        from distilsent import InvalidInputError

        raise InvalidInputError("top_k must be a positive integer")

    monkeypatch.setattr(classifier.Classifier, "predict", refused)
    assert main(["classify", "--model", str(tiny_model_dir), "good film"]) == 2
    assert capsys.readouterr().err.strip() == "distilsent classify: error: top_k must be a positive integer"


def test_distill_help_lists_its_options(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["distill", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--teacher", "--temperature", "--alpha", "--transfer", "--word-copies", "--select-on"):
        assert flag in out


def test_out_of_scope_text_is_flagged_or_gets_an_error_row(tiny_model_dir: Path, capsys) -> None:
    code, out, _ = run(["classify", "-m", str(tiny_model_dir), "good film", "🎉🎉"], capsys)
    rows = [line.split("\t") for line in out.splitlines()]
    assert code == 0 and len(rows[0]) == 3 and rows[1][2:] == ["🎉🎉", "warning: no known words"]
    code, out, err = run(
        ["classify", "-m", str(tiny_model_dir), "--on-out-of-scope", "error", "good", "🎉", "bad"], capsys
    )
    rows = out.splitlines()
    assert code == 0 and len(rows) == 3
    assert rows[1] == "ERROR\t\tinput 2 is out of scope (no known words)" and "input 2" in err
    code, out, err = run(
        [
            "classify",
            "-m",
            str(tiny_model_dir),
            "--on-out-of-scope",
            "error",
            "--strict",
            "good",
            "🎉",
            "bad",
        ],
        capsys,
    )
    assert code == 2 and out.splitlines() == [out.splitlines()[0]] and "--strict" in err
    code, out, _ = run(
        ["classify", "-m", str(tiny_model_dir), "--json", "--on-out-of-scope", "neutral", "🎉"], capsys
    )
    assert json.loads(out)["label"] == "NEUTRAL" and json.loads(out)["warning"] == "no known words"


def test_jsonl_text_pair_is_classified_as_a_pair(tiny_model_dir: Path, stdin, capsys) -> None:
    stdin(
        b'{"text": "good film", "text_pair": "bad plot"}\n{"text": "fun"}\n{"text": "a", "text_pair": ""}\n'
    )
    code, out, _ = run(["classify", "-m", str(tiny_model_dir), "--input-format", "jsonl", "--json"], capsys)
    rows = [json.loads(line) for line in out.splitlines()]
    clf = distilsent.load(tiny_model_dir, device="cpu")
    assert code == 0 and rows[0]["score"] == pytest.approx(
        clf.predict(("good film", "bad plot")).score, abs=1e-6
    )
    assert rows[1]["score"] == pytest.approx(clf.predict("fun").score, abs=1e-6)
    assert rows[2] == {"error": 'stdin line 3: "text_pair" is empty'}

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

import distilsent
from distilsent.batch import BatchConfig, run_batch
from distilsent.cli import main

TEXTS = ["a wonderful film", "dull and far too long", "an ok movie", "great acting", "awful plot"] * 7


def read_output(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    with path.open(newline="") as f:
        return list(csv.DictReader(f, delimiter="\t" if path.suffix == ".tsv" else ","))


def write_input(path: Path, rows: list[dict]) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    elif path.suffix == ".txt":
        path.write_text("".join(r["text"] + "\n" for r in rows))
    else:
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, list(rows[0]), delimiter="\t" if path.suffix == ".tsv" else ",")
            writer.writeheader()
            writer.writerows(rows)
    return path


def config(tmp_path: Path, src: Path, out: str, **kw) -> BatchConfig:
    return BatchConfig(input=str(src), output=str(tmp_path / out), progress=False, **kw)


@pytest.mark.parametrize("source", ["in.csv", "in.tsv", "in.jsonl", "in.parquet", "in.txt"])
@pytest.mark.parametrize("target", ["out.csv", "out.jsonl", "out.parquet"])
def test_round_trip_every_format(
    tmp_path: Path, tiny_model_dir: Path, tiny_classifier, source: str, target: str
) -> None:
    rows = [{"id": f"r{i}", "text": t, "stars": i % 5} for i, t in enumerate(TEXTS)]
    src = write_input(tmp_path / source, rows)
    keep = None if source.endswith(".txt") else "stars"
    load = distilsent.LoadConfig(model=str(tiny_model_dir), device="cpu")
    summary = run_batch(config(tmp_path, src, target, chunk_rows=8, keep_columns=keep), load)
    assert (summary.rows_in, summary.rows_out, summary.rows_failed) == (len(rows), len(rows), 0)
    assert summary.errors is None and not (tmp_path / f"{target}.parts").exists()
    out = read_output(tmp_path / target)
    expected = tiny_classifier.predict(TEXTS)
    id_name = "row" if source.endswith(".txt") else "id"
    assert [str(r[id_name]) for r in out] == [
        str(i) if id_name == "row" else f"r{i}" for i in range(len(rows))
    ]
    for row, pred in zip(out, expected):
        assert row["label"] == pred.label
        assert float(row["score"]) == pytest.approx(pred.score, abs=1e-5)
        assert float(row["POSITIVE"]) == pytest.approx(pred.scores["POSITIVE"], abs=1e-5)
    if keep:
        assert [int(r["stars"]) for r in out] == [i % 5 for i in range(len(rows))]


def test_unscorable_rows_are_reported_not_dropped(tmp_path: Path, tiny_model_dir: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_bytes(
        b'{"text": "fine film"}\n'
        b'{"text": ""}\n'
        b'{"text": "caf\xe9 bad bytes"}\n'
        b"not json\n"
        b'{"other": 1}\n'
        b'{"text": 42}\n'
        b"\n"
        b'{"text": "last one"}\n'
    )
    load = distilsent.LoadConfig(model=str(tiny_model_dir), device="cpu")
    summary = run_batch(config(tmp_path, src, "out.csv", chunk_rows=3), load)
    assert (summary.rows_in, summary.rows_out, summary.rows_failed) == (7, 2, 5)
    assert [int(r["row"]) for r in read_output(tmp_path / "out.csv")] == [0, 6]
    errors = [json.loads(line) for line in summary.errors.read_text().splitlines()]
    assert [(e["row"], e["error"].split(" (")[0]) for e in errors] == [
        (1, "text is empty"),
        (2, "not valid UTF-8"),
        (3, "invalid JSON"),
        (4, "field 'text' is missing"),
        (5, "text is int, not a string"),
    ]
    with pytest.raises(distilsent.DataError, match=r"row 1: text is empty .*--strict"):
        run_batch(config(tmp_path, src, "strict.csv", strict=True), load)


def test_invalid_utf8_in_csv_is_a_row_error(tmp_path: Path, tiny_model_dir: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_bytes(b"id,text\n1,good film\n2,bad \xff bytes\n3,\n")
    load = distilsent.LoadConfig(model=str(tiny_model_dir), device="cpu")
    summary = run_batch(config(tmp_path, src, "out.csv"), load)
    errors = [json.loads(line) for line in summary.errors.read_text().splitlines()]
    assert [(e["id"], e["error"]) for e in errors] == [
        ("2", "text is not valid UTF-8"),
        ("3", "text is empty"),
    ]


def test_output_is_never_silently_replaced(tmp_path: Path, tiny_model_dir: Path) -> None:
    src = write_input(tmp_path / "in.txt", [{"text": t} for t in TEXTS])
    load = distilsent.LoadConfig(model=str(tiny_model_dir), device="cpu")
    run_batch(config(tmp_path, src, "out.csv"), load)
    with pytest.raises(distilsent.DataError, match="already exists; pass --overwrite"):
        run_batch(config(tmp_path, src, "out.csv"), load)
    with pytest.raises(distilsent.DataError, match="no unfinished run to resume"):
        run_batch(config(tmp_path, src, "out.csv", resume=True), load)
    assert run_batch(config(tmp_path, src, "out.csv", overwrite=True), load).rows_out == len(TEXTS)
    with pytest.raises(ValueError, match=r"\.csv, \.tsv, \.jsonl or \.parquet"):
        config(tmp_path, src, "out.xlsx")
    with pytest.raises(distilsent.DataError, match="no column 'body'"):
        run_batch(
            config(tmp_path, write_input(tmp_path / "in.csv", [{"text": "x"}]), "o.csv", text_column="body")
        )


class Interrupt(Exception):
    pass


def test_resume_after_an_interruption_gives_the_same_output(tmp_path: Path, tiny_model_dir: Path) -> None:
    src = write_input(tmp_path / "in.jsonl", [{"id": i, "text": f"{t} {i}"} for i, t in enumerate(TEXTS * 3)])
    load = distilsent.LoadConfig(model=str(tiny_model_dir), device="cpu")
    full = run_batch(config(tmp_path, src, "full.jsonl", chunk_rows=10), load)

    def stop_after_30(rows_done: int) -> None:
        if rows_done >= 30:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_batch(config(tmp_path, src, "out.jsonl", chunk_rows=10), load, on_chunk=stop_after_30)
    manifest = json.loads((tmp_path / "out.jsonl.parts" / "manifest.json").read_text())
    assert manifest["rows_done"] == 30
    with pytest.raises(distilsent.DataError, match="pass --resume"):
        run_batch(config(tmp_path, src, "out.jsonl", chunk_rows=10), load)
    with pytest.raises(distilsent.DataError, match="cannot resume: the options_sha256"):
        run_batch(config(tmp_path, src, "out.jsonl", chunk_rows=7, resume=True), load)
    resumed = run_batch(config(tmp_path, src, "out.jsonl", chunk_rows=10, resume=True), load)
    assert resumed.resumed_from == 30 and resumed.rows_in == full.rows_in
    assert (tmp_path / "out.jsonl").read_text() == (tmp_path / "full.jsonl").read_text()


def test_local_workers_give_the_same_output(tmp_path: Path, tiny_model_dir: Path, monkeypatch) -> None:
    import distilsent.batch.local

    src = write_input(tmp_path / "in.txt", [{"text": f"{t} {i}"} for i, t in enumerate(TEXTS)])
    load = distilsent.LoadConfig(model=str(tiny_model_dir), device="cpu")
    run_batch(config(tmp_path, src, "one.csv", chunk_rows=4), load)
    loaded_here = []
    local = distilsent.batch.local
    real = local.Classifier
    monkeypatch.setattr(local, "Classifier", lambda c: loaded_here.append(os.getpid()) or real(c))
    run_batch(config(tmp_path, src, "two.csv", chunk_rows=4, workers=2), load)
    assert os.getpid() not in loaded_here  # only the worker processes hold the model
    one, two = read_output(tmp_path / "one.csv"), read_output(tmp_path / "two.csv")
    assert [r["row"] for r in one] == [r["row"] for r in two]
    assert [r["label"] for r in one] == [r["label"] for r in two]
    for a, b in zip(one, two):
        assert float(a["score"]) == pytest.approx(float(b["score"]), abs=1e-5)


def test_workers_that_cannot_load_the_model_say_why_and_write_nothing(tmp_path: Path) -> None:
    src = write_input(tmp_path / "in.txt", [{"text": t} for t in TEXTS])
    load = distilsent.LoadConfig(model=str(tmp_path / "no-such-model"), device="cpu")
    with pytest.raises(distilsent.ModelNotFoundError, match="no-such-model"):
        run_batch(config(tmp_path, src, "out.csv", workers=2), load)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]


def test_cli_workers_report_a_missing_model_without_a_traceback(tmp_path: Path) -> None:
    src = write_input(tmp_path / "in.txt", [{"text": t} for t in TEXTS])
    out, missing = str(tmp_path / "out.csv"), str(tmp_path / "no-such-model")
    command = ["batch", str(src), out, "--model", missing, "--workers", "2"]
    # A real process: under pytest, a worker's log records would go to pytest's handlers, not stderr.
    run = subprocess.run(
        [sys.executable, "-m", "distilsent", *command],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert run.returncode == 2
    assert "no-such-model" in run.stderr and "Traceback" not in run.stderr, run.stderr


def test_cli_batch_prints_a_summary(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    src = write_input(tmp_path / "in.txt", [{"text": t} for t in TEXTS])
    out = tmp_path / "out.parquet"
    assert main(["batch", str(src), str(out), "--model", str(tiny_model_dir), "--device", "cpu"]) == 0
    assert f"rows in {len(TEXTS)}, rows out {len(TEXTS)}, rows failed 0" in capsys.readouterr().out
    assert main(["batch", str(src), str(out), "--model", str(tiny_model_dir)]) == 2
    assert "already exists" in capsys.readouterr().err


def _generate(path: Path, rows: int) -> Path:
    words = ["good", "bad", "film", "plot", "acting", "dull", "great", "awful", "fine", "story"]
    with path.open("w") as f:
        for i in range(rows):
            f.write(f"{i}\t{' '.join(words[(i * 7 + k * 3) % 10] for k in range(3 + i % 9))}\n")
    return path


def _batch_process(src: Path, out: Path, model: Path, *extra: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "distilsent", "batch", str(src), str(out), "--model", str(model)]
    cmd += ["--device", "cpu", "--format", "tsv", "--text-column", "text", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_kill_9_then_resume_gives_every_row_once(tmp_path: Path, tiny_model_dir: Path) -> None:
    src = tmp_path / "in.tsv"
    src.write_text("id\ttext\n" + _generate(tmp_path / "body.tsv", 60_000).read_text())
    out = tmp_path / "out.csv"
    manifest = tmp_path / "out.csv.parts" / "manifest.json"
    proc = _batch_process(src, out, tiny_model_dir, "--chunk-rows", "2000")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if manifest.exists() and json.loads(manifest.read_text())["rows_done"] >= 4000:
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = json.loads(manifest.read_text())["rows_done"]
    assert 4000 <= done < 60_000 and not out.exists()
    resumed = _batch_process(src, out, tiny_model_dir, "--chunk-rows", "2000", "--resume")
    stdout, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr.decode()
    assert f"resumed after row {done:,}" in stdout.decode()
    ids = [row["id"] for row in read_output(out)]
    assert ids == [str(i) for i in range(60_000)]


@pytest.mark.slow
def test_memory_stays_flat_on_a_million_rows(tmp_path: Path, tiny_model_dir: Path) -> None:
    import psutil

    src = tmp_path / "in.tsv"
    with src.open("w") as f:
        f.write("id\ttext\n")
    body = _generate(tmp_path / "body.tsv", 1_000_000)
    with src.open("a") as f, body.open() as b:
        f.write(b.read())
    body.unlink()
    out = tmp_path / "out.jsonl"
    proc = _batch_process(src, out, tiny_model_dir, "--batch-size", "256")
    watched = psutil.Process(proc.pid)
    samples: list[tuple[int, float]] = []
    manifest = tmp_path / "out.jsonl.parts" / "manifest.json"
    while proc.poll() is None:
        try:
            rss = watched.memory_info().rss / 2**20
            done = json.loads(manifest.read_text())["rows_done"] if manifest.exists() else 0
        except (psutil.Error, ValueError, OSError):
            continue
        samples.append((done, rss))
        time.sleep(0.25)
    assert proc.returncode == 0, proc.stderr.read().decode() if proc.stderr else ""
    early = max(rss for done, rss in samples if 50_000 <= done < 250_000)
    late = max(rss for done, rss in samples if done >= 750_000)
    # RSS after 750k rows stays within 10 % of RSS after the first chunks: memory does not grow with
    # the rows read (holding all of them would take several hundred MB more).
    assert late < early * 1.10, (early, late)
    with out.open() as f:
        assert sum(1 for _ in f) == 1_000_000
    print(f"RSS early {early:.0f} MB, late {late:.0f} MB")


@pytest.mark.slow
def test_ray_engine_gives_the_same_output(tmp_path: Path, tiny_model_dir: Path) -> None:
    pytest.importorskip("ray")
    rows = [{"text": f"{t} {i}"} for i, t in enumerate(TEXTS)] + [{"text": ""}]
    src = write_input(tmp_path / "in.csv", rows)
    load = distilsent.LoadConfig(model=str(tiny_model_dir), device="cpu")
    local = run_batch(config(tmp_path, src, "local.csv"), load)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ray_summary = run_batch(config(tmp_path, src, "ray_out.parquet", engine="ray", chunk_rows=8), load)
    # No deprecated Ray API of ours (Dataset.zip was; Ray's own DataContext() still warns about
    # settings nobody set, from its own files).
    ours = [w for w in caught if "distilsent" in w.filename and issubclass(w.category, DeprecationWarning)]
    assert not ours, [str(w.message) for w in ours]
    assert (ray_summary.rows_in, ray_summary.rows_out, ray_summary.rows_failed) == (
        local.rows_in,
        local.rows_out,
        local.rows_failed,
    )
    import pyarrow.parquet as pq

    ray_rows = [r for r in pq.read_table(tmp_path / "ray_out.parquet").to_pylist() if not r["error"]]
    local_rows = read_output(tmp_path / "local.csv")
    # Ray Data numbers no rows: without an id column each row gets a unique id (not its row number).
    uids = [r["uid"] for r in ray_rows]
    assert len(set(uids)) == len(uids) and "row" not in ray_rows[0]
    assert [r["label"] for r in ray_rows] == [r["label"] for r in local_rows]
    for a, b in zip(ray_rows, local_rows):
        assert a["score"] == pytest.approx(float(b["score"]), abs=1e-5)
        assert a["POSITIVE"] == pytest.approx(float(b["POSITIVE"]), abs=1e-5)


def test_missing_ray_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    src = write_input(tmp_path / "in.txt", [{"text": "x"}])
    with pytest.raises(distilsent.MissingExtraError, match=r"distilsent\[ray\]"):
        run_batch(config(tmp_path, src, "out.parquet", engine="ray"))


def test_bad_values_become_error_rows_and_the_job_finishes(tmp_path: Path, tiny_model_dir: Path) -> None:
    load = distilsent.LoadConfig(model=str(tiny_model_dir), device="cpu")
    huge = "good film " * 20_000  # 200,000 characters: over the csv module's default field limit
    src = tmp_path / "in.csv"
    src.write_bytes(
        b"id,text,note\n"
        b"1,a wonderful film,x\n"
        + f'2,"{huge}",y\n'.encode()
        + b"3\xff,dull plot,z\n"  # an invalid byte in the id
        + b"4,great acting,\xfe\n"  # and in a kept column
        + b"5,awful plot,w\n"
    )
    summary = run_batch(config(tmp_path, src, "out.jsonl", keep_columns="note"), load)
    assert (summary.rows_in, summary.rows_out, summary.rows_failed) == (5, 3, 2)
    assert [r["id"] for r in read_output(tmp_path / "out.jsonl")] == ["1", "2", "5"]
    errors = [json.loads(line) for line in summary.errors.read_text().splitlines()]
    assert [(e["row"], e["error"]) for e in errors] == [
        (2, "column 'id' is not valid UTF-8"),
        (3, "column 'note' is not valid UTF-8"),
    ]
    assert errors[0]["id"] == "3\\udcff"  # the bad byte, escaped, so the row can be found

    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text(
        '{"id": 1, "text": "a wonderful film"}\n'
        + '{"id": 2, "text": '
        + "[" * 100_000
        + "]" * 100_000
        + "}\n"
        + '{"id": '
        + "9" * 5_000
        + ', "text": "dull"}\n'
        + '{"id": "\\ud800", "text": "fine"}\n'
        + '{"id": 5, "text": "\\u0000\\u200b"}\n'
        + '{"id": 6, "text": "awful plot"}\n'
    )
    summary = run_batch(config(tmp_path, jsonl, "out2.jsonl"), load)
    assert (summary.rows_in, summary.rows_out, summary.rows_failed) == (6, 2, 4)
    errors = [json.loads(line) for line in summary.errors.read_text().splitlines()]
    assert [e["row"] for e in errors] == [1, 2, 3, 4]
    assert "nested too deeply" in errors[0]["error"] and "digits" in errors[1]["error"]
    assert "no visible characters" in errors[3]["error"]


def test_an_unterminated_quote_is_an_error_naming_its_line(tmp_path: Path, tiny_model_dir: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text('id,text\n1,good film\n2,"an open quote\n3,dull\n4,fine\n')
    load = distilsent.LoadConfig(model=str(tiny_model_dir), device="cpu")
    with pytest.raises(
        distilsent.DataError, match=r"in\.csv:3: malformed CSV: a quoted field is never closed"
    ):
        run_batch(config(tmp_path, src, "out.jsonl"), load)


def test_resume_refuses_an_edit_that_keeps_size_and_mtime(tmp_path: Path, tiny_model_dir: Path) -> None:
    src = write_input(tmp_path / "in.jsonl", [{"text": t} for t in TEXTS])
    load = distilsent.LoadConfig(model=str(tiny_model_dir), device="cpu")

    def stop(rows: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_batch(config(tmp_path, src, "out.jsonl", chunk_rows=5), load, on_chunk=stop)
    stat = src.stat()
    src.write_text(src.read_text().replace("wonderful", "wonderfuL"))  # same size
    os.utime(src, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(distilsent.DataError, match="content_sha256"):
        run_batch(config(tmp_path, src, "out.jsonl", chunk_rows=5, resume=True), load)


@pytest.mark.slow
def test_workers_die_with_a_parent_killed_with_sigkill(tmp_path: Path, tiny_model_dir: Path) -> None:
    import psutil

    src = tmp_path / "in.tsv"
    src.write_text("id\ttext\n" + _generate(tmp_path / "body.tsv", 200_000).read_text())
    out = tmp_path / "out.csv"
    proc = _batch_process(src, out, tiny_model_dir, "--chunk-rows", "500", "--workers", "2")
    parent = psutil.Process(proc.pid)
    deadline = time.monotonic() + 60
    while len(parent.children()) < 2 or not (tmp_path / "out.csv.parts" / "manifest.json").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the workers did not start"
        time.sleep(0.05)
    workers = parent.children(recursive=True)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, [p.pid for p in alive]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("source", "kill_at"), [("in.jsonl", 1), ("in.jsonl", 12_000), ("in.csv", 6_000), ("in.parquet", 9_000)]
)
def test_kill_9_matrix_with_bad_rows_is_exactly_once(
    tmp_path: Path, tiny_model_dir: Path, source: str, kill_at: int
) -> None:
    """kill -9 at a chosen point (rows committed), then --resume: every good row once, in order, and
    every bad row once in the errors file."""
    n = 20_000
    words = ["good", "bad", "film", "plot", "dull", "great"]
    rows = [
        {"id": str(i), "text": "" if i % 997 == 0 else " ".join(words[(i + k) % 6] for k in range(3 + i % 7))}
        for i in range(n)
    ]
    src = write_input(tmp_path / source, rows)
    out = tmp_path / "out.jsonl"
    manifest = tmp_path / "out.jsonl.parts" / "manifest.json"
    cmd = [sys.executable, "-m", "distilsent", "batch", str(src), str(out), "--model", str(tiny_model_dir)]
    cmd += ["--device", "cpu", "--chunk-rows", "1000", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        try:
            if json.loads(manifest.read_text())["rows_done"] >= kill_at:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    done = subprocess.run([*cmd, "--resume"], capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    bad = {str(i) for i in range(0, n, 997)}
    assert [r["id"] for r in read_output(out)] == [str(i) for i in range(n) if str(i) not in bad]
    errors = [json.loads(line) for line in (tmp_path / "out.jsonl.errors.jsonl").read_text().splitlines()]
    assert len(errors) == len(bad) and {str(e["id"]) for e in errors} == bad


def test_ray_workers_leave_a_cpu_for_reading(caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("ray")
    from distilsent.batch.ray_engine import _usable_workers

    assert _usable_workers(1, 2.0) == 1 and _usable_workers(3, 8.0) == 3
    with caplog.at_level("WARNING"):
        assert _usable_workers(4, 2.0) == 1  # the docs' example on a 2-core machine hung before
    assert "clamped to 1" in caplog.text
    assert _usable_workers(2, 1.0) == 1  # one CPU: one actor, reading shares it


@pytest.mark.slow
def test_ray_with_more_workers_than_cpus_finishes(tmp_path: Path, tiny_model_dir: Path) -> None:
    pytest.importorskip("ray")
    src = write_input(tmp_path / "in.jsonl", [{"text": f"{t} {i}"} for i, t in enumerate(TEXTS)])
    load = distilsent.LoadConfig(model=str(tiny_model_dir), device="cpu")
    workers = (os.cpu_count() or 2) + 2
    summary = run_batch(config(tmp_path, src, "out.tsv", engine="ray", workers=workers, chunk_rows=8), load)
    assert summary.rows_out == len(TEXTS)
    header = (
        next(p for p in sorted((tmp_path / "out.tsv").iterdir()) if p.is_file()).read_text().splitlines()[0]
    )
    assert header.replace('"', "").split("\t")[:3] == ["uid", "label", "score"]  # tab-separated


def test_a_full_disk_is_an_error_naming_the_file(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from distilsent.batch import io as batch_io

    src = write_input(tmp_path / "in.jsonl", [{"text": t} for t in TEXTS])
    real = os.fsync

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(batch_io.os, "fsync", full)
    load = distilsent.LoadConfig(model=str(tiny_model_dir), device="cpu")
    with pytest.raises(
        distilsent.DataError,
        match=r"cannot write .*manifest\.json: No space left on device \(the disk is full\)",
    ):
        run_batch(config(tmp_path, src, "out.jsonl"), load)
    monkeypatch.setattr(batch_io.os, "fsync", real)


@pytest.mark.parametrize("source", ["in.csv", "in.jsonl", "in.parquet"])
def test_text_pair_column_scores_pairs_as_the_api_does(
    tmp_path: Path, tiny_model_dir: Path, source: str
) -> None:
    pairs = [("good film", "bad plot"), ("the actors", "were wonderful"), ("dull", "")]
    rows = [{"text": a, "second": b} for a, b in pairs]
    src = write_input(tmp_path / source, rows)
    load = distilsent.LoadConfig(model=str(tiny_model_dir), device="cpu")
    summary = run_batch(config(tmp_path, src, "out.jsonl", text_pair_column="second"), load)
    assert (summary.rows_out, summary.rows_failed) == (2, 1)
    expected = distilsent.load(tiny_model_dir, device="cpu").predict(pairs[:2])
    got = read_output(tmp_path / "out.jsonl")
    assert [r["label"] for r in got] == [p.label for p in expected]
    assert [r["score"] for r in got] == pytest.approx([p.score for p in expected], abs=1e-6)
    errors = [json.loads(line) for line in summary.errors.read_text().splitlines()]
    assert errors[0]["row"] == 2 and errors[0]["error"].startswith("second: text is empty")
    if source.endswith(".jsonl"):  # JSONL has no header: a missing field is a row error, as for "text"
        missing = run_batch(config(tmp_path, src, "x.jsonl", text_pair_column="nope"), load)
        assert (missing.rows_out, missing.rows_failed) == (0, 3)
    else:
        with pytest.raises(distilsent.DataError, match=r"no column 'nope'.*--text-pair-column"):
            run_batch(config(tmp_path, src, "x.jsonl", text_pair_column="nope"), load)
    with pytest.raises(ValueError, match="another column"):
        config(tmp_path, src, "y.jsonl", text_pair_column="text")

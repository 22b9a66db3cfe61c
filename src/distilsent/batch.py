"""``distilsent batch``: score a file of any size with bounded memory, resumable after a crash.

The input is streamed in chunks of ``chunk_rows`` rows. Each scored chunk is committed as a part
file next to the output (``OUTPUT.parts/``), written to a temporary name and renamed, and only then
counted in ``manifest.json``; so after a crash or ``kill -9`` the manifest names exactly the rows
whose results are on disk, and ``--resume`` continues from there. When every row is done the parts
are joined into OUTPUT (again through a temporary name) and the parts directory is removed: the
output holds every input row exactly once, in input order. Rows that cannot be scored go to
``OUTPUT.errors.jsonl`` with their row number and the reason.

``engine="ray"`` runs the same scoring as a Ray Data pipeline (read → ``map_batches`` with an actor
pool holding the model → write), on a local Ray or a cluster.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import itertools
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._config import Config
from ._exceptions import DataError, MissingExtraError
from .api import Classifier, LoadConfig, Prediction, _available_threads
from .data import json_object, utf8_line

__all__ = ["BatchConfig", "BatchSummary", "run_batch"]

FORMATS = ("auto", "csv", "tsv", "jsonl", "parquet", "txt")
OUTPUT_FORMATS = ("csv", "tsv", "jsonl", "parquet")
ENGINES = ("local", "ray")
_EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".txt": "txt",
}
_MANIFEST_VERSION = 1
ROW_COLUMN = "row"


@dataclass
class BatchConfig(Config):
    """What ``distilsent batch`` reads, writes and how; every field is also a CLI flag."""

    input: str
    """File to score: CSV, TSV, JSONL, Parquet, or plain text (one text per line)."""
    output: str
    """Where to write the results; the extension picks the format: .csv, .tsv, .jsonl or .parquet."""
    text_column: str = "text"
    """Column (or JSON field) holding the text; ignored for plain text input."""
    id_column: str | None = None
    """Column copied to the output to identify each row; default: 'id' when the input has it, else the
    row number (counted from 0, header excluded) in a column named 'row'."""
    keep_columns: str | None = None
    """Comma-separated input columns to copy to the output as well."""
    format: str = "auto"
    """Input format: auto (from the extension), csv, tsv, jsonl, parquet or txt."""
    resume: bool = False
    """Continue an interrupted run from its last committed chunk (a fresh start if there is none)."""
    overwrite: bool = False
    """Replace an existing OUTPUT (and discard an unfinished run's parts)."""
    strict: bool = False
    """Stop at the first row that cannot be scored instead of reporting it in OUTPUT.errors.jsonl."""
    chunk_rows: int = 8192
    """Rows scored and committed together; memory use is bounded by this, not by the file size."""
    workers: int = 1
    """Model replicas: processes for the local engine (each with cores/workers threads), actors for Ray."""
    engine: str = "local"
    """'local' (this machine) or 'ray' (a Ray Data pipeline; needs the 'ray' extra)."""
    ray_address: str | None = None
    """With engine='ray': address of an existing cluster (e.g. 'ray://head:10001' or 'auto');
    default: start a local Ray for this command."""
    progress: bool = True
    """Show a progress bar with rows/s and ETA on stderr (only when it is a terminal)."""

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {self.format!r}")
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {self.engine!r}")
        if self.chunk_rows < 1:
            raise ValueError(f"chunk_rows must be at least 1, got {self.chunk_rows}")
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite contradict each other; pass one")
        if self.engine == "local":
            output_format(self.output)  # validates the extension

    def input_format(self) -> str:
        if self.format != "auto":
            return self.format
        suffix = Path(self.input).suffix.lower()
        if suffix not in _EXTENSIONS:
            raise DataError(
                f"cannot tell the format of {self.input} from its extension; pass --format "
                f"({', '.join(FORMATS[1:])})"
            )
        return _EXTENSIONS[suffix]

    def kept(self) -> list[str]:
        return [c.strip() for c in (self.keep_columns or "").split(",") if c.strip()]


def output_format(path: str) -> str:
    fmt = _EXTENSIONS.get(Path(path).suffix.lower())
    if fmt not in OUTPUT_FORMATS:
        raise ValueError(f"OUTPUT must end in .csv, .tsv, .jsonl or .parquet, not {Path(path).name!r}")
    return fmt  # type: ignore[return-value]


@dataclass
class BatchSummary:
    """What a batch run did."""

    rows_in: int
    rows_out: int
    rows_failed: int
    seconds: float
    output: Path
    errors: Path | None
    resumed_from: int = 0

    def line(self) -> str:
        rate = (self.rows_in - self.resumed_from) / self.seconds if self.seconds > 0 else 0.0
        text = (
            f"rows in {self.rows_in:,}, rows out {self.rows_out:,}, rows failed {self.rows_failed:,}, "
            f"{self.seconds:.1f} s ({rate:,.0f} rows/s)"
        )
        if self.resumed_from:
            text += f", resumed after row {self.resumed_from:,}"
        if self.errors is not None:
            text += f"; failed rows in {self.errors}"
        return text


@dataclass
class _Record:
    row: int
    ident: Any
    text: str | None
    kept: dict[str, Any]
    error: str | None = None


# Reading ----------------------------------------------------------------------------------------------


def _check_text(value: Any) -> tuple[str | None, str | None]:
    """(text, None) when ``value`` can be scored, else (None, reason)."""
    if value is None:
        return None, "text is missing (null)"
    if not isinstance(value, str):
        return None, f"text is {type(value).__name__}, not a string"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None, "text is not valid UTF-8"
    if not value.strip():
        return None, "text is empty"
    return value, None


class _Reader:
    """Streams ``_Record`` objects from the input, with the byte or row position for progress."""

    def __init__(self, config: BatchConfig) -> None:
        self.config = config
        self.path = Path(config.input)
        if not self.path.is_file():
            raise DataError(f"input file not found: {self.path}")
        self.fmt = config.input_format()
        self.kept = config.kept()
        self.id_column = config.id_column
        self.done_bytes = 0
        self.total_bytes = self.path.stat().st_size
        self.total_rows: int | None = None
        if self.fmt == "parquet":
            self._parquet_setup()
        elif self.fmt in ("csv", "tsv"):
            self._csv_setup()
        elif self.fmt == "jsonl":
            self._jsonl_setup()
        elif self.kept or self.id_column not in (None, ROW_COLUMN):
            raise DataError("plain text input has no columns: --id-column and --keep-columns need CSV/JSONL")

    @property
    def id_name(self) -> str:
        return self.id_column or ROW_COLUMN

    def _csv_setup(self) -> None:
        with self.path.open("r", encoding="utf-8", errors="surrogateescape", newline="") as f:
            header = next(csv.reader(f, delimiter="\t" if self.fmt == "tsv" else ","), None)
        if header is None:
            raise DataError(f"{self.path} is empty: expected a header row")
        self._require_columns(header)

    def _jsonl_setup(self) -> None:
        # The first object decides whether an "id" field names the rows; later rows without it get None.
        if self.id_column is not None:
            return
        with self.path.open("rb") as f:
            for raw in f:
                if raw.strip():
                    try:
                        first = json.loads(raw)
                    except ValueError:
                        return
                    if isinstance(first, dict) and "id" in first:
                        self.id_column = "id"
                    return

    def _parquet_setup(self) -> None:
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise MissingExtraError("reading Parquet", "parquet", "pyarrow") from None
        meta = pq.ParquetFile(self.path)
        self.total_rows = meta.metadata.num_rows
        self._require_columns(meta.schema_arrow.names)

    def _require_columns(self, names: list[str]) -> None:
        if self.config.text_column not in names:
            raise DataError(
                f"{self.path} has no column {self.config.text_column!r} (columns: {', '.join(names)}); "
                "pass --text-column"
            )
        if self.id_column is None and "id" in names:
            self.id_column = "id"
        missing = [c for c in [*self.kept, *([self.id_column] if self.id_column else [])] if c not in names]
        if missing:
            raise DataError(f"{self.path} has no column {missing[0]!r} (columns: {', '.join(names)})")

    def __iter__(self) -> Iterator[_Record]:
        if self.fmt == "parquet":
            yield from self._parquet()
        elif self.fmt in ("csv", "tsv"):
            yield from self._csv()
        else:
            yield from self._lines()

    def _lines(self) -> Iterator[_Record]:
        with self.path.open("rb") as f:
            row = 0
            for raw in f:
                self.done_bytes += len(raw)
                line = raw.rstrip(b"\r\n")
                if self.fmt == "jsonl" and not line.strip():
                    continue  # blank lines separate nothing in JSONL
                yield self._line_record(row, line)
                row += 1

    def _line_record(self, row: int, line: bytes) -> _Record:
        try:
            decoded = utf8_line(line)
            obj = None if self.fmt == "txt" else json_object(decoded)
        except DataError as e:
            return _Record(row, row, None, {}, str(e))
        if obj is None:
            text, error = _check_text(decoded)
            return _Record(row, row, text, {}, error)
        ident = obj.get(self.id_column) if self.id_column else row
        kept = {c: obj.get(c) for c in self.kept}
        if self.config.text_column not in obj:
            return _Record(row, ident, None, kept, f"field {self.config.text_column!r} is missing")
        text, error = _check_text(obj[self.config.text_column])
        return _Record(row, ident, text, kept, error)

    def _csv(self) -> Iterator[_Record]:
        with self.path.open("rb") as raw:
            counted = _CountingReader(raw, self)
            text_stream = io.TextIOWrapper(counted, encoding="utf-8", errors="surrogateescape", newline="")
            reader = csv.DictReader(text_stream, delimiter="\t" if self.fmt == "tsv" else ",")
            for row, obj in enumerate(reader):
                ident = obj.get(self.id_column) if self.id_column else row
                kept = {c: obj.get(c) for c in self.kept}
                text, error = _check_text(obj.get(self.config.text_column))
                if error == "text is missing (null)":
                    error = f"row has no value for column {self.config.text_column!r}"
                yield _Record(row, ident, text, kept, error)

    def _parquet(self) -> Iterator[_Record]:
        import pyarrow.parquet as pq

        wanted = [self.config.text_column, *self.kept, *([self.id_column] if self.id_column else [])]
        columns = list(dict.fromkeys(wanted))
        row = 0
        for batch in pq.ParquetFile(self.path).iter_batches(
            batch_size=self.config.chunk_rows, columns=columns
        ):
            data = batch.to_pydict()
            for i in range(batch.num_rows):
                ident = data[self.id_column][i] if self.id_column else row
                text, error = _check_text(data[self.config.text_column][i])
                yield _Record(row, ident, text, {c: data[c][i] for c in self.kept}, error)
                row += 1
            self.done_bytes = row


class _CountingReader(io.RawIOBase):
    """A binary reader that tells the batch reader how many bytes were consumed (for progress)."""

    def __init__(self, raw: Any, owner: _Reader) -> None:
        self.raw, self.owner = raw, owner

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self.raw.readinto(buffer)
        self.owner.done_bytes += n or 0
        return n


# Writing ----------------------------------------------------------------------------------------------


def _rows(records: list[_Record], preds: list[Prediction], labels: list[str], id_name: str) -> list[dict]:
    out = []
    for record, pred in zip(records, preds):
        row = {id_name: record.ident, "label": pred.label, "score": pred.score}
        row.update({label: pred.scores[label] for label in labels})
        row.update(record.kept)
        out.append(row)
    return out


def _write_part(path: Path, fmt: str, rows: list[dict], columns: list[str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist(rows) if rows else pa.table({c: [] for c in columns})
        pq.write_table(table, tmp)
    else:
        with tmp.open("w", encoding="utf-8", newline="") as f:
            if fmt == "jsonl":
                f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
            else:
                writer = csv.DictWriter(f, columns, delimiter="\t" if fmt == "tsv" else ",")
                writer.writerows(rows)
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def _write_errors(path: Path, records: list[_Record]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(
                json.dumps({"row": r.row, "id": r.ident, "error": r.error}, ensure_ascii=False, default=str)
            )
            f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _atomic_json(path: Path, obj: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _join_parts(parts: list[Path], output: Path, fmt: str, columns: list[str]) -> None:
    tmp = output.with_name(output.name + ".tmp")
    if fmt == "parquet":
        import pyarrow.parquet as pq

        writer = None
        try:
            for part in parts:
                table = pq.read_table(part)
                if table.num_rows == 0:
                    continue
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema)
                elif table.schema != writer.schema:
                    table = table.cast(writer.schema)
                writer.write_table(table)
        finally:
            if writer is not None:
                writer.close()
        if writer is None:
            import pyarrow as pa

            pq.write_table(pa.table({c: [] for c in columns}), tmp)
    else:
        with tmp.open("wb") as out:
            if fmt in ("csv", "tsv"):
                buffer = io.StringIO()
                csv.writer(buffer, delimiter="\t" if fmt == "tsv" else ",").writerow(columns)
                out.write(buffer.getvalue().encode("utf-8"))
            for part in parts:
                with part.open("rb") as f:
                    shutil.copyfileobj(f, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
    os.replace(tmp, output)


def _join_errors(parts: list[Path], path: Path) -> Path | None:
    parts = [p for p in parts if p.stat().st_size > 0]
    if not parts:
        path.unlink(missing_ok=True)
        return None
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as out:
        for part in parts:
            with part.open("rb") as f:
                shutil.copyfileobj(f, out)
    os.replace(tmp, path)
    return path


# Scoring ----------------------------------------------------------------------------------------------

_worker_classifier: Classifier | None = None
_worker_error: Exception | None = None


def _init_worker(load: dict[str, Any]) -> None:
    global _worker_classifier, _worker_error
    try:
        _worker_classifier = Classifier(LoadConfig.from_dict(load))
    except Exception as e:
        # Raised by the worker's first task, so it reaches the parent as itself; from the
        # initializer it would only break the pool after printing a traceback.
        _worker_error = e


def _worker() -> Classifier:
    if _worker_error is not None:
        raise _worker_error
    assert _worker_classifier is not None
    return _worker_classifier


def _worker_labels() -> list[str]:
    return _worker().labels


def _worker_pool(workers: int, load: LoadConfig) -> tuple[ProcessPoolExecutor, list[str]]:
    """Processes that each load the model, and its labels; a model that does not load raises its own
    error here."""
    pool = ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(load.to_dict(),))
    try:
        labels = pool.submit(_worker_labels).result()
    except BaseException:
        pool.shutdown(cancel_futures=True)
        raise
    return pool, labels


def _score_in_worker(texts: list[str]) -> list[Prediction]:
    return _worker().predict(texts)


def _fingerprint(config: BatchConfig, load: LoadConfig) -> dict[str, Any]:
    stat = Path(config.input).stat()
    options = {
        k: v
        for k, v in dataclasses.asdict(config).items()
        if k in ("text_column", "id_column", "keep_columns", "format", "chunk_rows", "output")
    }
    options["load"] = {
        k: v for k, v in load.to_dict().items() if k not in ("threads", "device", "batch_size")
    }
    digest = hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode()).hexdigest()
    return {
        "input": str(Path(config.input).resolve()),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "options_sha256": digest,
    }


def _prepare_output(config: BatchConfig, load: LoadConfig) -> tuple[Path, Path, dict[str, Any]]:
    """The output path, the parts directory and the manifest to continue from (empty if fresh)."""
    output = Path(config.output)
    parts_dir = output.with_name(output.name + ".parts")
    manifest_path = parts_dir / "manifest.json"
    fingerprint = _fingerprint(config, load)
    if config.overwrite:
        shutil.rmtree(parts_dir, ignore_errors=True)
        output.unlink(missing_ok=True)
    if manifest_path.is_file():
        if not config.resume:
            raise DataError(
                f"an unfinished run's results are in {parts_dir}: pass --resume to continue it, "
                "or --overwrite to start again"
            )
        manifest = json.loads(manifest_path.read_text())
        changed = [k for k, v in fingerprint.items() if manifest.get("fingerprint", {}).get(k) != v]
        if changed:
            raise DataError(
                f"cannot resume: the {', '.join(changed)} of this run differ from the interrupted one's "
                f"(recorded in {manifest_path}); pass --overwrite to start again"
            )
        return output, parts_dir, manifest
    if output.exists():
        raise DataError(
            f"{output} already exists"
            + (" and has no unfinished run to resume" if config.resume else "")
            + "; pass --overwrite to replace it"
        )
    if parts_dir.exists():
        shutil.rmtree(parts_dir)  # a crash before the first manifest: nothing was committed
    parts_dir.mkdir(parents=True)
    manifest = {
        "version": _MANIFEST_VERSION,
        "fingerprint": fingerprint,
        "rows_done": 0,
        "parts": 0,
        "rows_out": 0,
        "rows_failed": 0,
    }
    _atomic_json(manifest_path, manifest)
    return output, parts_dir, manifest


def _progress(config: BatchConfig) -> Any:
    from contextlib import nullcontext

    if not (config.progress and sys.stderr.isatty()):
        return nullcontext(None)
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("scoring"),
        BarColumn(),
        TextColumn("{task.fields[rows]:,} rows  {task.fields[rate]:,.0f} rows/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )


def run_batch(
    config: BatchConfig, load: LoadConfig | None = None, *, on_chunk: Callable[[int], None] | None = None
) -> BatchSummary:
    """Score ``config.input`` into ``config.output``; see the module docstring for the guarantees.

    ``on_chunk(rows_done)`` is called after each committed chunk (tests use it to interrupt a run).
    """
    load = load or LoadConfig()
    if config.engine == "ray":
        return _run_ray(config, load)
    began = time.perf_counter()
    reader = _Reader(config)
    fmt = output_format(config.output)
    # Load the model and check the columns before anything is written: a bad model or flag then leaves
    # no unfinished run behind. With workers, the model is loaded in them only.
    clf: Classifier | None = None
    pool: ProcessPoolExecutor | None = None
    if config.workers > 1:
        threads = load.threads or max(1, _available_threads() // config.workers)
        load = LoadConfig.from_dict({**load.to_dict(), "threads": threads})
        pool, labels = _worker_pool(config.workers, load)
    else:
        clf = Classifier(load)
        labels = clf.labels
    try:
        columns = [reader.id_name, "label", "score", *labels, *reader.kept]
        clash = sorted(set(reader.kept) & {reader.id_name, "label", "score", *labels})
        if clash:
            raise DataError(f"--keep-columns {', '.join(clash)} would overwrite output columns; rename them")
        output, parts_dir, manifest = _prepare_output(config, load)
    except BaseException:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        raise
    start_rows = manifest["rows_done"]
    records = iter(reader)
    if start_rows:
        # Skip what is committed: re-reading is cheap next to scoring, and works for every format.
        next(itertools.islice(records, start_rows - 1, start_rows), None)

    def commit(chunk: list[_Record], preds: list[Prediction]) -> None:
        good = [r for r in chunk if r.error is None]
        bad = [r for r in chunk if r.error is not None]
        index = manifest["parts"]
        rows = _rows(good, preds, labels, reader.id_name)
        _write_part(parts_dir / f"part-{index:06d}.{fmt}", fmt, rows, columns)
        _write_errors(parts_dir / f"errors-{index:06d}.jsonl", bad)
        manifest.update(
            parts=index + 1,
            rows_done=manifest["rows_done"] + len(chunk),
            rows_out=manifest["rows_out"] + len(good),
            rows_failed=manifest["rows_failed"] + len(bad),
        )
        _atomic_json(parts_dir / "manifest.json", manifest)
        if on_chunk is not None:
            on_chunk(manifest["rows_done"])

    def chunks() -> Iterator[list[_Record]]:
        while chunk := list(itertools.islice(records, config.chunk_rows)):
            if config.strict:
                for r in chunk:
                    if r.error is not None:
                        raise DataError(
                            f"row {r.row}: {r.error} (without --strict it would be skipped and reported)"
                        )
            yield chunk

    with _progress(config) as bar:
        total = reader.total_rows if reader.fmt == "parquet" else reader.total_bytes
        task = bar.add_task("score", total=total, rows=start_rows, rate=0.0) if bar else None

        def advance() -> None:
            if bar is not None:
                done = manifest["rows_done"]
                rate = (done - start_rows) / max(time.perf_counter() - began, 1e-9)
                bar.update(task, completed=reader.done_bytes, rows=done, rate=rate)

        try:
            if pool is None:
                for chunk in chunks():
                    texts = [r.text for r in chunk if r.error is None]
                    commit(chunk, clf.predict(texts) if texts else [])  # type: ignore[arg-type]
                    advance()
            else:
                # Keep every worker busy and one chunk queued, committing strictly in input order.
                pending: list[tuple[list[_Record], Future[list[Prediction]]]] = []
                for chunk in chunks():
                    texts = [r.text for r in chunk if r.error is None]
                    pending.append((chunk, pool.submit(_score_in_worker, texts)))
                    while len(pending) > config.workers:
                        done_chunk, future = pending.pop(0)
                        commit(done_chunk, future.result())
                        advance()
                for done_chunk, future in pending:
                    commit(done_chunk, future.result())
                    advance()
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)

    parts = sorted(parts_dir.glob(f"part-*.{fmt}"))
    _join_parts(parts, output, fmt, columns)
    errors = _join_errors(
        sorted(parts_dir.glob("errors-*.jsonl")), output.with_name(output.name + ".errors.jsonl")
    )
    shutil.rmtree(parts_dir)
    return BatchSummary(
        rows_in=manifest["rows_done"],
        rows_out=manifest["rows_out"],
        rows_failed=manifest["rows_failed"],
        seconds=time.perf_counter() - began,
        output=output,
        errors=errors,
        resumed_from=start_rows,
    )


# Ray --------------------------------------------------------------------------------------------------


class _RayScorer:
    """Ray Data actor: loads the model once, then scores pandas batches."""

    def __init__(self, load: dict[str, Any], text_column: str) -> None:
        self.clf = Classifier(LoadConfig.from_dict(load))
        self.text_column = text_column

    def __call__(self, batch: Any) -> Any:
        checked = [_check_text(v) for v in batch[self.text_column]]
        good = [i for i, (text, _) in enumerate(checked) if text is not None]
        preds = self.clf.predict([checked[i][0] for i in good]) if good else []
        by_row: dict[int, Prediction] = dict(zip(good, preds))
        batch = batch.drop(columns=[self.text_column])
        batch["label"] = [by_row[i].label if i in by_row else None for i in range(len(batch))]
        batch["score"] = [by_row[i].score if i in by_row else None for i in range(len(batch))]
        for label in self.clf.labels:
            batch[label] = [by_row[i].scores[label] if i in by_row else None for i in range(len(batch))]
        batch["error"] = [error or "" for _, error in checked]
        return batch


def _run_ray(config: BatchConfig, load: LoadConfig) -> BatchSummary:
    try:
        import pyarrow.csv as pacsv
        import ray
        import ray.data
    except ImportError as e:
        raise MissingExtraError("--engine ray", "ray", e.name or "ray") from None
    began = time.perf_counter()
    fmt = config.input_format()
    output = Path(config.output)
    remote = "://" in config.output
    if not remote and output.exists():
        if not config.overwrite:
            raise DataError(f"{output} already exists; pass --overwrite to replace it")
        shutil.rmtree(output) if output.is_dir() else output.unlink()
    if "://" not in config.input and not Path(config.input).exists():
        raise DataError(f"input not found: {config.input}")
    started = not ray.is_initialized()
    if started:
        ray.init(address=config.ray_address, include_dashboard=False, log_to_driver=False)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # rows come out in input order, as with local
        path = config.input if "://" in config.input else str(Path(config.input).resolve())
        if fmt == "csv":
            ds = ray.data.read_csv(path)
        elif fmt == "tsv":
            ds = ray.data.read_csv(path, parse_options=pacsv.ParseOptions(delimiter="\t"))
        elif fmt == "jsonl":
            ds = ray.data.read_json(path, lines=True)
        elif fmt == "parquet":
            ds = ray.data.read_parquet(path)
        else:
            ds = ray.data.read_text(path, drop_empty_lines=False)
        text_column = "text" if fmt == "txt" else config.text_column
        names = ds.schema().names
        if text_column not in names:
            raise DataError(f"{config.input} has no column {text_column!r} (columns: {', '.join(names)})")
        id_column = config.id_column or ("id" if "id" in names else None)
        keep = config.kept()
        if id_column is None:
            # Ray Data has no row index: zip a range alongside (row order is preserved).
            ds = ds.zip(ray.data.range(ds.count()).rename_columns({"id": ROW_COLUMN}))
            id_column = ROW_COLUMN
        ds = ds.select_columns(list(dict.fromkeys([id_column, text_column, *keep])))
        threads = load.threads or max(1, _available_threads() // config.workers)
        scored = ds.map_batches(
            _RayScorer,
            fn_constructor_args=({**load.to_dict(), "threads": threads}, text_column),
            batch_size=config.chunk_rows,
            batch_format="pandas",
            concurrency=config.workers,
            num_cpus=1,  # the torch threads are set separately; more would starve the read tasks
        )
        out_fmt = _EXTENSIONS.get(output.suffix.lower(), "parquet") if output.suffix else "parquet"
        target = config.output if remote else str(output.resolve())
        if out_fmt == "jsonl":
            scored.write_json(target)
        elif out_fmt in ("csv", "tsv"):
            scored.write_csv(target)
        else:
            scored.write_parquet(target)
        # Count from what was written: counting ``scored`` would run the whole pipeline again.
        if out_fmt == "jsonl":
            written = ray.data.read_json(target, lines=True)
        elif out_fmt in ("csv", "tsv"):
            written = ray.data.read_csv(target)
        else:
            written = ray.data.read_parquet(target)
        errors = written.select_columns(["error"]).to_pandas()["error"].fillna("")
        rows_in, failed = len(errors), int((errors != "").sum())
    finally:
        if started:
            ray.shutdown()
    return BatchSummary(
        rows_in=rows_in,
        rows_out=rows_in - failed,
        rows_failed=failed,
        seconds=time.perf_counter() - began,
        output=output,
        errors=None,
    )

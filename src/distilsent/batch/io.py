"""Reading rows to score and writing results: streamed, resumable parts, through :mod:`distilsent.formats`."""

from __future__ import annotations

import csv
import errno
import functools
import io
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from distilsent import formats
from distilsent.batch.config import ROW_COLUMN, BatchConfig
from distilsent.core.classifier import Prediction
from distilsent.core.errors import DataError, MissingExtraError
from distilsent.core.text import encodable, text_problem
from distilsent.formats import csv_options, csv_records, json_object, utf8_line

__all__ = [
    "CountingReader",
    "Reader",
    "Record",
    "atomic_json",
    "check_text",
    "join_errors",
    "join_parts",
    "result_rows",
    "write_errors",
    "write_part",
]


F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Record:
    row: int
    ident: Any
    text: str | None
    kept: dict[str, Any]
    error: str | None = None
    text_pair: str | None = None

    @property
    def item(self) -> str | tuple[str, str]:
        """What the classifier takes for this row: its text, or its ``(text, text_pair)``."""
        return self.text if self.text_pair is None else (self.text, self.text_pair)  # type: ignore[return-value]


# Reading ----------------------------------------------------------------------------------------------


def check_text(value: Any) -> tuple[str | None, str | None]:
    """(text, None) when ``value`` can be scored, else (None, reason)."""
    problem = text_problem(value)
    return (None, f"text {problem}") if problem else (value, None)


class Reader:
    """Streams ``Record`` objects from the input, with the byte or row position for progress."""

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
        elif self.kept or self.id_column not in (None, ROW_COLUMN) or config.text_pair_column:
            raise DataError(
                "plain text input has no columns: --id-column, --keep-columns and --text-pair-column "
                "need CSV/JSONL/Parquet"
            )

    @property
    def id_name(self) -> str:
        return self.id_column or ROW_COLUMN

    def _csv_setup(self) -> None:
        with self.path.open("r", encoding="utf-8", errors="surrogateescape", newline="") as f:
            header = next(csv_records(csv.reader(f, **csv_options(self.fmt)), self.path), None)
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
        for column, flag in (
            (self.config.text_column, "--text-column"),
            (self.config.text_pair_column, "--text-pair-column"),
        ):
            if column is not None and column not in names:
                raise DataError(
                    f"{self.path} has no column {column!r} (columns: {', '.join(names)}); pass {flag}"
                )
        if self.id_column is None and "id" in names:
            self.id_column = "id"
        missing = [c for c in [*self.kept, *([self.id_column] if self.id_column else [])] if c not in names]
        if missing:
            raise DataError(f"{self.path} has no column {missing[0]!r} (columns: {', '.join(names)})")

    def __iter__(self) -> Iterator[Record]:
        if self.fmt == "parquet":
            yield from self._parquet()
        elif self.fmt in ("csv", "tsv"):
            yield from self._csv()
        else:
            yield from self._lines()

    def _lines(self) -> Iterator[Record]:
        with self.path.open("rb") as f:
            row = 0
            for raw in f:
                self.done_bytes += len(raw)
                line = raw.rstrip(b"\r\n")
                if self.fmt == "jsonl" and not line.strip():
                    continue  # blank lines separate nothing in JSONL
                yield self._line_record(row, line)
                row += 1

    def _line_record(self, row: int, line: bytes) -> Record:
        try:
            decoded = utf8_line(line)
            obj = None if self.fmt == "txt" else json_object(decoded)
        except DataError as e:
            return Record(row, row, None, {}, str(e))
        if obj is None:
            text, error = check_text(decoded)
            return Record(row, row, text, {}, error)
        ident = obj.get(self.id_column) if self.id_column else row
        kept = {c: obj.get(c) for c in self.kept}
        if self.config.text_column not in obj:
            return Record(row, ident, None, kept, f"field {self.config.text_column!r} is missing")
        text, error = check_text(obj[self.config.text_column])
        pair_column = self.config.text_pair_column
        if pair_column is not None and error is None:
            if pair_column not in obj:
                return Record(row, ident, None, kept, f"field {pair_column!r} is missing")
            return self._checked(self._with_pair(Record(row, ident, text, kept), obj[pair_column]))
        return self._checked(Record(row, ident, text, kept, error))

    def _with_pair(self, record: Record, value: Any) -> Record:
        """``record`` with its text pair, or an error record naming the pair column."""
        pair, error = check_text(value)
        if error is not None:
            return Record(
                record.row, record.ident, None, record.kept, f"{self.config.text_pair_column}: {error}"
            )
        record.text_pair = pair
        return record

    def _csv(self) -> Iterator[Record]:
        with self.path.open("rb") as raw:
            counted = CountingReader(raw, self)
            text_stream = io.TextIOWrapper(counted, encoding="utf-8", errors="surrogateescape", newline="")
            reader = csv.DictReader(text_stream, **csv_options(self.fmt))
            for row, obj in enumerate(csv_records(reader, self.path)):
                ident = obj.get(self.id_column) if self.id_column else row
                kept = {c: obj.get(c) for c in self.kept}
                text, error = check_text(obj.get(self.config.text_column))
                if error == "text is missing (null)":
                    error = f"row has no value for column {self.config.text_column!r}"
                record = Record(row, ident, text, kept, error)
                if self.config.text_pair_column is not None and error is None:
                    record = self._with_pair(record, obj.get(self.config.text_pair_column))
                yield self._checked(record)

    def _checked(self, record: Record) -> Record:
        """``record``, or an error record when its id or a kept column cannot be written as UTF-8
        (invalid bytes read with ``surrogateescape``, or JSON's lone ``\\ud800`` escapes)."""
        columns = {self.id_name: record.ident, **record.kept}
        bad = [name for name, value in columns.items() if isinstance(value, str) and not encodable(value)]
        if not bad:
            return record
        ident = record.ident
        if isinstance(ident, str) and not encodable(ident):
            ident = ident.encode("utf-8", "backslashreplace").decode("utf-8")
        return Record(record.row, ident, None, {}, f"column {bad[0]!r} is not valid UTF-8")

    def _parquet(self) -> Iterator[Record]:
        import pyarrow.parquet as pq

        pair_column = self.config.text_pair_column
        wanted = [
            self.config.text_column,
            *([pair_column] if pair_column else []),
            *self.kept,
            *([self.id_column] if self.id_column else []),
        ]
        columns = list(dict.fromkeys(wanted))
        row = 0
        for batch in pq.ParquetFile(self.path).iter_batches(
            batch_size=self.config.chunk_rows, columns=columns
        ):
            data = batch.to_pydict()
            for i in range(batch.num_rows):
                ident = data[self.id_column][i] if self.id_column else row
                text, error = check_text(data[self.config.text_column][i])
                record = Record(row, ident, text, {c: data[c][i] for c in self.kept}, error)
                if pair_column is not None and error is None:
                    record = self._with_pair(record, data[pair_column][i])
                yield record
                row += 1
            self.done_bytes = row


class CountingReader(io.RawIOBase):
    """A binary reader that tells the batch reader how many bytes were consumed (for progress)."""

    def __init__(self, raw: Any, owner: Reader) -> None:
        self.raw, self.owner = raw, owner

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self.raw.readinto(buffer)
        self.owner.done_bytes += n or 0
        return n


# Writing ----------------------------------------------------------------------------------------------


def _names_its_file(target: int) -> Callable[[F], F]:
    """Turn an ``OSError`` of the decorated writer into a ``DataError`` naming the file it was writing
    (argument ``target``): ``write()`` on a full disk reports ENOSPC without any path."""

    def wrap(write: F) -> F:
        @functools.wraps(write)
        def checked(*args: Any, **kwargs: Any) -> Any:
            try:
                return write(*args, **kwargs)
            except OSError as e:
                path = args[target]
                hint = " (the disk is full)" if e.errno == errno.ENOSPC else ""
                raise DataError(f"cannot write {path}: {e.strerror or e}{hint}") from None

        return checked  # type: ignore[return-value]

    return wrap


def result_rows(
    records: list[Record], preds: list[Prediction], labels: list[str], id_name: str, *, warnings: bool = False
) -> list[dict]:
    """Output rows: id, label, score, each label's score, the ``warning`` column (empty for texts in
    scope) when ``warnings``, then the kept columns."""
    out = []
    for record, pred in zip(records, preds):
        row = {id_name: record.ident, "label": pred.label, "score": pred.score}
        row.update({label: pred.scores[label] for label in labels})
        if warnings:
            row["warning"] = pred.warning or ""
        row.update(record.kept)
        out.append(row)
    return out


@_names_its_file(0)
def write_part(path: Path, fmt: str, rows: list[dict], columns: list[str]) -> None:
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


@_names_its_file(0)
def write_errors(path: Path, records: list[Record]) -> None:
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


@_names_its_file(0)
def atomic_json(path: Path, obj: dict[str, Any]) -> None:
    formats.atomic_json(path, obj, indent=1)


@_names_its_file(1)
def join_parts(parts: list[Path], output: Path, fmt: str, columns: list[str]) -> None:
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


@_names_its_file(1)
def join_errors(parts: list[Path], path: Path) -> Path | None:
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

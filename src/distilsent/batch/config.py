"""What a batch job is: ``BatchConfig`` (input, output, columns, resume) and its summary."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from distilsent.core.config import Config
from distilsent.core.errors import DataError, InvalidInputError
from distilsent.formats import EXTENSIONS

__all__ = [
    "ENGINES",
    "FORMATS",
    "MANIFEST_VERSION",
    "OUTPUT_FORMATS",
    "ROW_COLUMN",
    "UID_COLUMN",
    "BatchConfig",
    "BatchSummary",
    "output_format",
]

FORMATS = ("auto", "csv", "tsv", "jsonl", "parquet", "txt")
OUTPUT_FORMATS = ("csv", "tsv", "jsonl", "parquet")
ENGINES = ("local", "ray")
MANIFEST_VERSION = 1
ROW_COLUMN = "row"
UID_COLUMN = "uid"
"""The Ray engine's id column for inputs without one: unique per row, but not its row number."""


@dataclass
class BatchConfig(Config):
    """What ``distilsent batch`` reads, writes and how; every field is also a CLI flag."""

    input: str
    """File to score: CSV, TSV, JSONL, Parquet, or plain text (one text per line)."""
    output: str
    """Where to write the results; the extension picks the format: .csv, .tsv, .jsonl or .parquet."""
    text_column: str = "text"
    """Column (or JSON field) holding the text; ignored for plain text input."""
    text_pair_column: str | None = None
    """Column (or JSON field) holding each text's second text: rows are classified as
    ``(text, text_pair)`` pairs, as the pipeline's ``{"text", "text_pair"}``. Not for plain text."""
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
            raise InvalidInputError(f"format must be one of {', '.join(FORMATS)}, not {self.format!r}")
        if self.engine not in ENGINES:
            raise InvalidInputError(f"engine must be one of {', '.join(ENGINES)}, not {self.engine!r}")
        if self.chunk_rows < 1:
            raise InvalidInputError(f"chunk_rows must be at least 1, got {self.chunk_rows}")
        if self.workers < 1:
            raise InvalidInputError(f"workers must be at least 1, got {self.workers}")
        if self.resume and self.overwrite:
            raise InvalidInputError("resume and overwrite contradict each other; pass one")
        if self.engine == "local":
            output_format(self.output)  # validates the extension
        if self.text_pair_column is not None and self.text_pair_column == self.text_column:
            raise InvalidInputError("text_pair_column must name another column than text_column")

    def input_format(self) -> str:
        if self.format != "auto":
            return self.format
        suffix = Path(self.input).suffix.lower()
        if suffix not in EXTENSIONS:
            raise DataError(
                f"cannot tell the format of {self.input} from its extension; pass --format "
                f"({', '.join(FORMATS[1:])})"
            )
        return EXTENSIONS[suffix]

    def kept(self) -> list[str]:
        return [c.strip() for c in (self.keep_columns or "").split(",") if c.strip()]


def output_format(path: str) -> str:
    fmt = EXTENSIONS.get(Path(path).suffix.lower())
    if fmt not in OUTPUT_FORMATS:
        raise InvalidInputError(f"OUTPUT must end in .csv, .tsv, .jsonl or .parquet, not {Path(path).name!r}")
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

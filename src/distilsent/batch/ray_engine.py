"""Scoring a file on a Ray cluster (``--engine ray``): Ray Data reads, actors score, Ray writes."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

from distilsent.batch.config import UID_COLUMN, BatchConfig, BatchSummary
from distilsent.batch.io import check_text
from distilsent.core.classifier import Classifier, LoadConfig, Prediction, available_threads
from distilsent.core.errors import DataError, MissingExtraError
from distilsent.formats import EXTENSIONS

__all__ = ["run_ray"]

logger = logging.getLogger(__name__)

# Ray --------------------------------------------------------------------------------------------------


class _RayScorer:
    """Ray Data actor: loads the model once, then scores pandas batches."""

    def __init__(self, load: dict[str, Any], text_column: str, text_pair_column: str | None = None) -> None:
        self.clf = Classifier(LoadConfig.from_dict(load))
        self.text_column = text_column
        self.text_pair_column = text_pair_column

    def __call__(self, batch: Any) -> Any:
        checked = [check_text(v) for v in batch[self.text_column]]
        items: list[Any] = [text for text, _ in checked]
        errors: list[str | None] = [error for _, error in checked]
        if self.text_pair_column is not None:
            for i, value in enumerate(batch[self.text_pair_column]):
                if items[i] is None:
                    continue
                pair, error = check_text(value)
                if error is not None:
                    items[i], errors[i] = None, f"{self.text_pair_column}: {error}"
                else:
                    items[i] = (items[i], pair)
            batch = batch.drop(columns=[self.text_pair_column])
        good = [i for i, item in enumerate(items) if item is not None]
        refuse = self.clf.config.on_out_of_scope == "error"
        chosen = [items[i] for i in good]
        preds = self.clf.predict(chosen, on_out_of_scope="flag" if refuse else None) if good else []
        if refuse:  # a flagged text becomes an error row, as in the local engine
            for i, pred in zip(good, preds):
                if pred.warning is not None:
                    items[i], errors[i] = None, f"text is out of scope ({pred.warning})"
        by_row: dict[int, Prediction] = {i: pred for i, pred in zip(good, preds) if items[i] is not None}
        batch = batch.drop(columns=[self.text_column])
        batch["label"] = [by_row[i].label if i in by_row else None for i in range(len(batch))]
        batch["score"] = [by_row[i].score if i in by_row else None for i in range(len(batch))]
        for label in self.clf.labels:
            batch[label] = [by_row[i].scores[label] if i in by_row else None for i in range(len(batch))]
        if self.clf.config.on_out_of_scope in ("flag", "neutral"):
            batch["warning"] = [by_row[i].warning or "" if i in by_row else "" for i in range(len(batch))]
        batch["error"] = [error or "" for error in errors]
        return batch


def _usable_workers(asked: int, cluster_cpus: float) -> int:
    """The actors to start: each holds one CPU for its whole life, and the read tasks need one more,
    or the job waits forever (seen with ``--workers 4`` on a 2-core machine)."""
    usable = max(1, int(cluster_cpus) - 1)
    if asked > usable:
        logger.warning(
            "--workers %d clamped to %d: the cluster has %g CPUs, and one must stay free for reading",
            asked,
            usable,
            cluster_cpus,
        )
        return usable
    return asked


def run_ray(config: BatchConfig, load: LoadConfig) -> BatchSummary:
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
        pair_column = config.text_pair_column
        names = ds.schema().names
        for column in (text_column, pair_column):
            if column is not None and column not in names:
                raise DataError(f"{config.input} has no column {column!r} (columns: {', '.join(names)})")
        id_column = config.id_column or ("id" if "id" in names else None)
        keep = config.kept()
        if id_column is None:
            # Ray Data has no row numbers (Dataset.zip with a range, the old way, is deprecated and
            # goes in 2.64): each row gets a unique id instead, increasing within each read task.
            from ray.data.expressions import monotonically_increasing_id

            ds = ds.with_column(UID_COLUMN, monotonically_increasing_id())
            id_column = UID_COLUMN
        ds = ds.select_columns(
            list(dict.fromkeys([id_column, text_column, *([pair_column] if pair_column else []), *keep]))
        )
        workers = _usable_workers(config.workers, ray.cluster_resources().get("CPU", 1))
        threads = load.threads or max(1, available_threads() // workers)
        scored = ds.map_batches(
            _RayScorer,
            fn_constructor_args=({**load.to_dict(), "threads": threads}, text_column, pair_column),
            batch_size=config.chunk_rows,
            batch_format="pandas",
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=1,  # the torch threads are set separately; more would starve the read tasks
        )
        out_fmt = EXTENSIONS.get(output.suffix.lower(), "parquet") if output.suffix else "parquet"
        target = config.output if remote else str(output.resolve())
        if out_fmt == "jsonl":
            scored.write_json(target)
        elif out_fmt == "tsv":
            # WriteOptions cannot be pickled to the write tasks: each builds its own.
            scored.write_csv(
                target, arrow_csv_args_fn=lambda: {"write_options": pacsv.WriteOptions(delimiter="\t")}
            )
        elif out_fmt == "csv":
            scored.write_csv(target)
        else:
            scored.write_parquet(target)
        # Count from what was written: counting ``scored`` would run the whole pipeline again.
        if out_fmt == "jsonl":
            written = ray.data.read_json(target, lines=True)
        elif out_fmt in ("csv", "tsv"):
            delimiter = "\t" if out_fmt == "tsv" else ","
            written = ray.data.read_csv(target, parse_options=pacsv.ParseOptions(delimiter=delimiter))
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

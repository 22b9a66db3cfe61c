"""Scoring a file on this machine: in process or in a pool of worker processes, resumable."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

from distilsent.batch.config import MANIFEST_VERSION, BatchConfig, BatchSummary, output_format
from distilsent.batch.io import (
    Reader,
    Record,
    atomic_json,
    join_errors,
    join_parts,
    result_rows,
    write_errors,
    write_part,
)
from distilsent.core.classifier import Classifier, LoadConfig, Prediction, available_threads
from distilsent.core.errors import DataError
from distilsent.core.process import die_with_parent
from distilsent.formats import file_sha256

__all__ = ["run_batch"]

# Scoring ----------------------------------------------------------------------------------------------

_worker_classifier: Classifier | None = None
_worker_error: Exception | None = None


def _init_worker(load: dict[str, Any]) -> None:
    global _worker_classifier, _worker_error
    die_with_parent()  # a parent killed with -9 must not leave idle workers holding the model
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


def _score_in_worker(texts: list[str] | list[tuple[str, str]]) -> list[Prediction]:
    clf = _worker()
    return clf.predict(texts, on_out_of_scope=_scope_action(clf.config))


def _scope_action(load: LoadConfig) -> str | None:
    """'error' is applied per row when committing: the model flags, so that a chunk is not refused."""
    return "flag" if load.on_out_of_scope == "error" else None


def _fingerprint(config: BatchConfig, load: LoadConfig) -> dict[str, Any]:
    stat = Path(config.input).stat()
    options = {
        k: v
        for k, v in dataclasses.asdict(config).items()
        if k
        in ("text_column", "text_pair_column", "id_column", "keep_columns", "format", "chunk_rows", "output")
    }
    options["load"] = {
        k: v for k, v in load.to_dict().items() if k not in ("threads", "device", "batch_size")
    }
    digest = hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode()).hexdigest()
    # The content's hash, not the modification time: an edit of the same size with the time restored
    # would otherwise resume and mix old and new results. Reading the file once costs seconds per GB,
    # little next to scoring it.
    return {
        "input": str(Path(config.input).resolve()),
        "size": stat.st_size,
        "content_sha256": file_sha256(config.input),
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
        "version": MANIFEST_VERSION,
        "fingerprint": fingerprint,
        "rows_done": 0,
        "parts": 0,
        "rows_out": 0,
        "rows_failed": 0,
    }
    atomic_json(manifest_path, manifest)
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
        from distilsent.batch.ray_engine import run_ray

        return run_ray(config, load)
    began = time.perf_counter()
    reader = Reader(config)
    fmt = output_format(config.output)
    # Load the model and check the columns before anything is written: a bad model or flag then leaves
    # no unfinished run behind. With workers, the model is loaded in them only.
    clf: Classifier | None = None
    pool: ProcessPoolExecutor | None = None
    if config.workers > 1:
        threads = load.threads or max(1, available_threads() // config.workers)
        load = LoadConfig.from_dict({**load.to_dict(), "threads": threads})
        pool, labels = _worker_pool(config.workers, load)
    else:
        clf = Classifier(load)
        labels = clf.labels
    try:
        warnings = load.on_out_of_scope in ("flag", "neutral")
        scored_columns = [reader.id_name, "label", "score", *labels, *(["warning"] if warnings else [])]
        columns = [*scored_columns, *reader.kept]
        clash = sorted(set(reader.kept) & set(scored_columns))
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

    def commit(chunk: list[Record], preds: list[Prediction]) -> None:
        good = [r for r in chunk if r.error is None]
        if load.on_out_of_scope == "error":
            # Scored with 'flag' (see _scope_action); a flagged row becomes an error row here, so one
            # out-of-scope text does not fail its chunk.
            for record, pred in zip(good, preds):
                if pred.warning is not None:
                    record.error = f"text is out of scope ({pred.warning})"
            preds = [p for p in preds if p.warning is None]
            good = [r for r in good if r.error is None]
        bad = [r for r in chunk if r.error is not None]
        index = manifest["parts"]
        rows = result_rows(good, preds, labels, reader.id_name, warnings=warnings)
        write_part(parts_dir / f"part-{index:06d}.{fmt}", fmt, rows, columns)
        write_errors(parts_dir / f"errors-{index:06d}.jsonl", bad)
        manifest.update(
            parts=index + 1,
            rows_done=manifest["rows_done"] + len(chunk),
            rows_out=manifest["rows_out"] + len(good),
            rows_failed=manifest["rows_failed"] + len(bad),
        )
        atomic_json(parts_dir / "manifest.json", manifest)
        if on_chunk is not None:
            on_chunk(manifest["rows_done"])

    def chunks() -> Iterator[list[Record]]:
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
                    texts = [r.item for r in chunk if r.error is None]
                    preds = clf.predict(texts, on_out_of_scope=_scope_action(load)) if texts else []  # type: ignore[union-attr]
                    commit(chunk, preds)
                    advance()
            else:
                # Keep every worker busy and one chunk queued, committing strictly in input order.
                pending: list[tuple[list[Record], Future[list[Prediction]]]] = []
                for chunk in chunks():
                    texts = [r.item for r in chunk if r.error is None]
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
    join_parts(parts, output, fmt, columns)
    errors = join_errors(
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

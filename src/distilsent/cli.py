"""The ``distilsent`` command: a table from subcommand to function, flags generated from the configs.

Every expected failure (bad input, missing model, bad flag) ends with one line on stderr and exit code
2; only a bug prints a traceback, and only with ``DISTILSENT_DEBUG=1``.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import logging
import os
import sys
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Union

from distilsent.core.config import field_docs
from distilsent.core.errors import DataError, DistilsentError
from distilsent.core.postprocess import FUNCTIONS
from distilsent.core.text import text_problem
from distilsent.formats import json_object, utf8_line

__all__ = ["main"]

EXIT_USAGE = 2
_CHUNK = 2048  # lines read from stdin per model call: bounded memory, steady output
_PROGRESS_MIN = 1000

# Short forms users expect from other training tools.
_ALIASES = {"learning_rate": ["--lr"], "model": ["-m"]}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _base_type(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0]
    return annotation


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, *, skip: tuple[str, ...] = ()) -> None:
    """One flag per field of dataclass ``cls``, with the field's docstring as help."""
    docs, hints = field_docs(cls), typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flags = ["--" + f.name.replace("_", "-"), *_ALIASES.get(f.name, [])]
        kind = _base_type(hints[f.name])
        required = f.default is dataclasses.MISSING or bool(f.metadata.get("required"))
        # argparse %-formats help strings; a docstring's "1 %" must stay text.
        help_text = docs.get(f.name, "").replace("%", "%%")
        if kind is bool:
            parser.add_argument(
                *flags, dest=f.name, action=argparse.BooleanOptionalAction, default=f.default, help=help_text
            )
            continue
        if not required and f.default is not None:
            help_text += f" (default: {f.default})"
        parser.add_argument(
            *flags,
            dest=f.name,
            type=kind,
            required=required,
            default=None if required else f.default,
            metavar=f.name.upper(),
            help=help_text,
        )


def config_from_args(cls: type, args: argparse.Namespace) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in vars(args).items() if k in names})


# classify ---------------------------------------------------------------------------------------------


def _stdin_records(
    fmt: str, mode: str, skipped: list[int], failed: list[DataError]
) -> Iterator[tuple[Any, str | None, str | None]]:
    """(id, text, None) for each usable stdin line, (None, None, reason) for one that is not.

    ``mode`` decides what a bad line does: "row" yields it (the output gets an error row in its
    place, so output lines stay aligned with input lines), "skip" reports and drops it, "stop" ends
    the stream and leaves the error in ``failed``, so that the lines before it are still printed.
    """
    for number, raw in enumerate(sys.stdin.buffer, 1):
        try:
            record = _parse_line(raw, fmt)
        except DataError as e:
            reason = f"stdin line {number}: {e}"
            if mode == "stop":
                failed.append(DataError(f"{reason} (--strict stops at the first such line)"))
                return
            print(f"distilsent: {'skipped' if mode == 'skip' else 'error row for'} {reason}", file=sys.stderr)
            skipped.append(number)
            if mode == "row":
                yield None, None, reason
            continue
        if record is not None:
            yield (*record, None)


def _parse_line(raw: bytes, fmt: str) -> tuple[Any, str | tuple[str, str]] | None:
    line = utf8_line(raw).rstrip("\r\n")
    if fmt == "text":
        if not line.strip():
            raise DataError("empty text")
        return None, line
    if not line.strip():
        return None  # blank lines separate nothing in JSONL
    obj = json_object(line)
    text = obj.get("text")
    problem = text_problem(text)
    if problem is not None:
        raise DataError(f'"text" {problem}')
    if "text_pair" in obj:  # the pipeline's {"text", "text_pair"}: one pair
        problem = text_problem(obj["text_pair"])
        if problem is not None:
            raise DataError(f'"text_pair" {problem}')
        return obj.get("id"), (text, obj["text_pair"])
    return obj.get("id"), text


def _progress(enabled: bool) -> Any:
    from contextlib import nullcontext

    if not enabled:
        return nullcontext(None)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("classifying"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )


def _predict_mixed(clf: Any, texts: list[Any], **options: Any) -> list[Any]:
    """Predictions for texts mixed with ``(text, text_pair)`` tuples (JSONL lines with a
    ``text_pair``), in order: each kind is classified its own way."""
    if not texts:
        return []
    pair_rows = [i for i, t in enumerate(texts) if isinstance(t, tuple)]
    if not pair_rows:
        return clf.predict(texts, **options)
    single_rows = [i for i, t in enumerate(texts) if not isinstance(t, tuple)]
    out: list[Any] = [None] * len(texts)
    for rows in (single_rows, pair_rows):
        if rows:
            for i, pred in zip(rows, clf.predict([texts[i] for i in rows], **options)):
                out[i] = pred
    return out


def cmd_classify(args: argparse.Namespace) -> int:
    from distilsent.core.classifier import Classifier, LoadConfig

    from_stdin = not args.texts or args.texts == ["-"]
    if not from_stdin:
        for i, text in enumerate(args.texts, 1):
            if not text.strip():
                raise DataError(f"TEXT argument {i} is empty")
    if from_stdin and sys.stdin.isatty():
        raise DataError("no input: give TEXT arguments, or pipe one text per line on stdin (or '-')")
    clf = Classifier(config_from_args(LoadConfig, args))
    skipped: list[int] = []
    failed: list[DataError] = []
    mode = "stop" if args.strict else "skip" if args.skip_invalid else "row"
    records: Iterator[tuple[Any, str | None, str | None]] = (
        _stdin_records(args.input_format, mode, skipped, failed)
        if from_stdin
        else ((None, t, None) for t in args.texts)
    )
    show = sys.stdout.isatty() and sys.stderr.isatty() and (from_stdin or len(args.texts) >= _PROGRESS_MIN)
    seen = records_before = 0
    # 'error' is applied here, line by line, so that one out-of-scope line gets an error row like any
    # other bad line instead of failing its whole chunk.
    refuse = clf.config.on_out_of_scope == "error"
    with _progress(show) as bar:
        task = bar.add_task("classify", total=None if from_stdin else len(args.texts)) if bar else None
        while chunk := list(itertools.islice(records, _CHUNK)):
            texts = [text for _, text, error in chunk if error is None]
            preds = iter(
                _predict_mixed(
                    clf,
                    texts,
                    top_k=args.top_k,
                    function_to_apply=args.function_to_apply,
                    on_out_of_scope="flag" if refuse else None,
                )
            )
            lines = []
            for number, (rid, text, error) in enumerate(chunk, records_before + 1):
                pred = next(preds) if error is None else None
                if pred is not None and refuse and pred.warning is not None:
                    error = f"input {number} is out of scope ({pred.warning})"
                    if args.strict:
                        failed.append(DataError(f"{error} (--strict stops at the first such text)"))
                        break
                    verb = "skipped" if mode == "skip" else "error row for"
                    print(f"distilsent: {verb} {error}", file=sys.stderr)
                    skipped.append(number)
                    seen -= 1  # counted with the chunk's texts below, but not classified
                    if mode == "skip":
                        continue
                if error is not None or pred is None:
                    lines.append(json.dumps({"error": error}) if args.json else f"ERROR\t\t{error}")
                    continue
                if args.json:
                    obj = pred.to_dict() if rid is None else {"id": rid, **pred.to_dict()}
                    lines.append(json.dumps(obj, ensure_ascii=False))
                else:
                    shown = text if isinstance(text, str) else " [SEP] ".join(text)  # type: ignore[arg-type]
                    flat = " ".join(shown.split())
                    # The warning goes last, so that the first three columns keep their meaning.
                    warning = "" if pred.warning is None else f"\twarning: {pred.warning}"
                    lines.append(f"{pred.label}\t{pred.score:.3f}\t{flat}{warning}")
            records_before += len(chunk)
            if lines:
                sys.stdout.write("\n".join(lines) + "\n")
                sys.stdout.flush()
            seen += len(texts)
            if failed:
                break
            if bar:
                bar.advance(task, len(chunk))
    if failed:
        raise failed[0]
    if skipped:
        shown = ", ".join(map(str, skipped[:20])) + (" …" if len(skipped) > 20 else "")
        what = "skipped" if mode == "skip" else "wrote error rows for"
        print(
            f"distilsent: classified {seen} texts, {what} {len(skipped)} invalid lines: {shown}",
            file=sys.stderr,
        )
    elif seen == 0:
        raise DataError("no input: stdin was empty")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from distilsent.core.classifier import Classifier, LoadConfig

    info = Classifier(config_from_args(LoadConfig, args)).info()
    if args.json:
        print(json.dumps(info))
    else:
        width = max(map(len, info))
        for key, value in info.items():
            shown = (
                ", ".join(value)
                if isinstance(value, list)
                else f"{value:,}"
                if isinstance(value, int)
                else value
            )
            print(f"{key:<{width}}  {shown}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from distilsent.training.train import TrainConfig, train

    result = train(config_from_args(TrainConfig, args), resume=args.resume, overwrite=args.overwrite)
    print(_train_summary(result, args.select_on))
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    from distilsent.training.distill import DistillConfig, distill

    result = distill(config_from_args(DistillConfig, args), resume=args.resume, overwrite=args.overwrite)
    print(_train_summary(result, args.select_on))
    return 0


def _train_summary(result: Any, select_on: str) -> str:
    best = result.best_metrics
    summary = f"model written to {result.output} in {result.seconds:.0f} s"
    if best:
        split = "dev" if select_on == "dev" else "held-out slice"
        summary += f"; best {split} accuracy {100 * best['accuracy']:.2f} % at step {best['step']}"
    dev = result.dev_metrics
    if dev:
        summary += f"; dev accuracy {100 * dev['accuracy']:.2f} % (evaluated once, after selection)"
    return summary


def cmd_convert(args: argparse.Namespace) -> int:
    from distilsent.core.models import MINILM, minilm_dir, resolve_model
    from distilsent.training.convert import convert_bert_to_distilbert

    src = minilm_dir() if args.src == MINILM else resolve_model(args.src)
    labels = dict(enumerate(args.labels.split(","))) if args.labels else None
    out = convert_bert_to_distilbert(src, args.dst, id2label=labels, use_pooler=not args.no_pooler)
    print(f"converted {src} -> {out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from distilsent.export import NEAR_MARGIN, ExportConfig, export

    result = export(config_from_args(ExportConfig, args))
    print(f"wrote {result.output / 'model.onnx'}")
    if result.near_boundary is not None:
        print(
            f"fp32 margin under {NEAR_MARGIN} on {result.near_boundary:.2f} % of held-out calibration texts: "
            "the labels int8 could flip (the fewer, the less the agreement below says)"
        )
    width = max([17] + [len(c.label) for c in result.candidates])
    for c in result.candidates:
        chosen = (c.recipe, c.weights) == (result.recipe, result.weights)
        verdict = "chosen" if chosen else ("passed" if c.passed else "refused")
        print(
            f"int8 {c.label:<{width}} agrees with fp32 on {c.agreement:6.2f} % of held-out "
            f"calibration texts, {c.texts_per_second:7.1f} texts/s: {verdict}"
        )
    if result.int8_path is not None:
        weights = "" if result.weights in (None, "int8") else f", {result.weights} weights"
        print(f"wrote {result.int8_path} ({result.recipe} int8{weights})")
    if result.fp32_accuracy is not None:
        print(
            f"dev accuracy: fp32 {100 * result.fp32_accuracy:.2f} %, "
            f"int8 {100 * result.int8_accuracy:.2f} %, "
            f"label agreement {100 * result.agreement:.2f} %"
        )
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from distilsent.core.classifier import Classifier, LoadConfig
    from distilsent.evaluation.evaluate import compare, evaluate, write_report
    from distilsent.formats import read_labelled

    data = read_labelled(
        args.data,
        text_column=args.text_column,
        label_column=args.label_column,
        text_pair_column=args.text_pair_column,
    )
    config = config_from_args(LoadConfig, args)
    result = evaluate(Classifier(config), data)
    comparison = None
    if args.compare:
        other = evaluate(Classifier(dataclasses.replace(config, model=args.compare)), data)
        comparison = compare(result, other)
    mt = result.metrics
    auc = "n/a" if mt["roc_auc"] is None else f"{mt['roc_auc']:.4f}"
    print(
        f"accuracy {100 * mt['accuracy']:.2f} %  macro-F1 {mt['macro_f1']:.4f}  ROC-AUC {auc}  "
        f"log-loss {mt['log_loss']:.4f}  Brier {mt['brier']:.4f}  ECE {mt['ece']:.4f}  "
        f"({mt['examples']} texts)"
    )
    if "ece_uncalibrated" in mt:
        print(f"ECE before calibration {mt['ece_uncalibrated']:.4f} (temperature {mt['temperature']:.3f})")
    if comparison is not None:
        c = comparison
        print(
            f"vs {args.compare}: {100 * c['difference']:+.2f} points, 95 % interval "
            f"[{100 * c['low']:+.2f}, {100 * c['high']:+.2f}], "
            + ("a real difference" if c["significant"] else "within resampling noise")
            + f"; McNemar's exact test: {c['mcnemar']['a_only']} right only here, "
            f"{c['mcnemar']['b_only']} only there, p = {c['mcnemar']['p_value']:.3f}"
        )
    if args.report:
        out = write_report(result, Path(args.report), comparison)
        print(f"report written to {out}/report.html")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    import numpy as np

    from distilsent.core.classifier import load
    from distilsent.evaluation.calibration import fit_temperature, nll, save_temperature
    from distilsent.evaluation.metrics import expected_calibration_error, softmax
    from distilsent.formats import encode_labels, read_labelled

    clf = load(args.model, calibrated=False)
    if args.holdout:
        from distilsent.training.train import heldout_rows

        data = heldout_rows(clf.model_dir)
        source = f"the {len(data.texts):,} training rows held out of {args.model}"
    else:
        data = read_labelled(args.dev, text_column=args.text_column, label_column=args.label_column)
        source = args.dev
    labels = np.array(encode_labels(data, dict(enumerate(clf.labels))))
    logits = clf.logits(data.texts)
    temperature = fit_temperature(logits, labels)
    save_temperature(clf.model_dir, temperature)
    print(f"temperature {temperature:.4f} written to {clf.model_dir / 'config.json'}")
    print(
        f"on {source}: NLL {nll(logits, labels):.4f} -> {nll(logits, labels, temperature):.4f}, "
        f"ECE {expected_calibration_error(softmax(logits), labels):.4f} -> "
        f"{expected_calibration_error(softmax(logits, temperature), labels):.4f}"
    )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from distilsent.core.classifier import LoadConfig
    from distilsent.serve import ServeConfig, serve

    if args.api_key:
        logging.getLogger("distilsent").warning(
            "--api-key puts the key in the process list (ps) for every local user to read; "
            "use --api-key-file or $DISTILSENT_API_KEYS instead"
        )
    serve_config = dataclasses.replace(
        config_from_args(ServeConfig, args), api_keys=tuple(args.api_key or ())
    )
    serve(serve_config, config_from_args(LoadConfig, args))
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from rich.console import Console

    from distilsent.core.classifier import Classifier, LoadConfig
    from distilsent.core.explain import to_html, to_rich

    if not args.text.strip():
        raise DataError("TEXT is empty")
    clf = Classifier(config_from_args(LoadConfig, args))
    result = clf.explain(args.text, target=args.target, steps=args.steps)
    if args.html:
        Path(args.html).write_text(to_html(result), encoding="utf-8")
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False))
        return 0
    console = Console(highlight=False)
    console.print(f"{result.label} {result.score:.3f}  (attributions towards {result.target})")
    console.print(to_rich(result))
    width = max(len(w.word) for w in result.words)
    for w in sorted(result.words, key=lambda w: -abs(w.score))[: args.top]:
        colour = "green" if w.score >= 0 else "red"
        console.print(f"  {w.word:<{width}}  [{colour}]{w.score:+.3f}[/{colour}]")
    if not result.converged:
        console.print(
            f"[yellow]note: attributions sum to {result.logit_difference + result.delta:+.3f}, not "
            f"{result.logit_difference:+.3f}, after {result.steps} steps: they are approximate[/yellow]"
        )
    if args.html:
        console.print(f"highlighted text written to {args.html}")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from distilsent.core.classifier import Classifier, LoadConfig
    from distilsent.fairness.audit import AuditConfig, audit, format_table, load_families, write_report

    config = config_from_args(AuditConfig, args)
    families = load_families(config.probes, builtin=config.builtin)
    clf = Classifier(config_from_args(LoadConfig, args))
    result = audit(clf, families, config, model=args.model)
    print(format_table(result))
    verdict = "every family passes" if result.passed else "some families fail"
    print(f"threshold {config.threshold:.2f}: {verdict}")
    if config.report:
        out = write_report(result, config.report)
        print(f"report written to {out}/report.html")
    return 1 if args.fail and not result.passed else 0


def cmd_check(args: argparse.Namespace) -> int:
    from distilsent.core.classifier import Classifier, LoadConfig
    from distilsent.evaluation.check import CheckConfig, format_table, load_suite, run_checks, write_report

    config = config_from_args(CheckConfig, args)
    clf = Classifier(config_from_args(LoadConfig, args))
    suite = load_suite(config.tests, builtin=config.builtin, labels=clf.labels)
    result = run_checks(clf.predict_proba, clf.labels, suite, config, model=args.model)
    print(format_table(result))
    failed = [t.name for t in result.tests if not t.passed]
    print(
        "every test passes on its held-out half"
        if not failed
        else f"fails on the held-out half: {', '.join(failed)}"
    )
    if config.report:
        out = write_report(result, config.report)
        print(f"report written to {out}/report.html")
    return 1 if args.fail and not result.passed else 0


def cmd_batch(args: argparse.Namespace) -> int:
    from distilsent.batch import BatchConfig, run_batch
    from distilsent.core.classifier import LoadConfig

    summary = run_batch(config_from_args(BatchConfig, args), config_from_args(LoadConfig, args))
    print(f"{summary.output}: {summary.line()}")
    return 0


def _build_parser() -> argparse.ArgumentParser:
    from distilsent.core.classifier import LoadConfig
    from distilsent.export import ExportConfig
    from distilsent.training.distill import DistillConfig
    from distilsent.training.train import TrainConfig

    parser = _Parser(
        prog="distilsent", description="DistilBERT text classification, from training to serving."
    )
    from distilsent._version import __version__

    parser.add_argument("--version", action="version", version=f"distilsent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("classify", help="classify texts given as arguments or on stdin")
    p.add_argument(
        "texts",
        nargs="*",
        metavar="TEXT",
        help="texts to classify; none or '-' = read stdin, one per line (a line that cannot be "
        "classified gets an ERROR row in its place, so output lines match input lines)",
    )
    add_config_arguments(p, LoadConfig)
    p.add_argument(
        "--input-format",
        choices=("text", "jsonl"),
        default="text",
        help='stdin format: one text per line, or JSON objects with a "text" (and optional "id") field',
    )
    p.add_argument("--json", action="store_true", help="print one JSON object per input instead of TSV")
    invalid = p.add_mutually_exclusive_group()
    invalid.add_argument(
        "--skip-invalid",
        action="store_true",
        help="drop stdin lines that cannot be classified (reported on stderr) instead of writing an "
        "error row in their place",
    )
    invalid.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first stdin line that cannot be classified (exit 2)",
    )
    p.add_argument("--top-k", type=int, default=None, help="keep only the K most likely labels in scores")
    p.add_argument(
        "--function-to-apply",
        choices=FUNCTIONS,
        default=None,
        help="how logits become scores (default: softmax)",
    )
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("info", help="show the resolved model, labels, size, backend and device")
    add_config_arguments(p, LoadConfig)
    p.add_argument("--json", action="store_true", help="print the information as one JSON object")
    p.set_defaults(func=cmd_info)

    runs = (
        ("train", "fine-tune a classifier (defaults: the published SST-2 recipe)", TrainConfig, cmd_train),
        ("distill", "train a DistilBERT student to imitate a stronger teacher", DistillConfig, cmd_distill),
    )
    for name, help_text, config_class, handler in runs:
        p = sub.add_parser(name, help=help_text)
        add_config_arguments(p, config_class)
        p.add_argument(
            "--resume", action="store_true", help="continue an interrupted run from its last checkpoint"
        )
        p.add_argument(
            "--overwrite", action="store_true", help="replace an existing, non-empty output directory"
        )
        p.set_defaults(func=handler)

    p = sub.add_parser("convert", help="convert a BERT checkpoint to DistilBERT layout, exactly")
    p.add_argument("src", metavar="SRC", help="BERT model directory, hub id, or 'minilm'")
    p.add_argument("dst", metavar="DST", help="output directory")
    p.add_argument("--labels", help="comma-separated label names in id order (default: NEGATIVE,POSITIVE)")
    p.add_argument(
        "--no-pooler", action="store_true", help="do not initialise pre_classifier from the pooler"
    )
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("export", help="export a model to ONNX (optionally int8) for the onnx backends")
    p.add_argument("model", metavar="MODEL", help="'default', a model directory, or a hub id")
    add_config_arguments(p, ExportConfig, skip=("model",))
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("eval", help="metrics and a report (plots, calibration, mistakes) on a labelled file")
    p.add_argument("data", metavar="DATA", help="labelled TSV, CSV, JSONL or Parquet file")
    add_config_arguments(p, LoadConfig)
    p.add_argument(
        "--report", metavar="DIR", help="write metrics.json, report.md, report.html and PNG plots here"
    )
    p.add_argument("--compare", metavar="MODEL", help="a second model, compared with a paired bootstrap")
    p.add_argument("--text-column", help="column holding the text (default: sentence or text)")
    p.add_argument("--label-column", help="column holding the label (default: label or labels)")
    p.add_argument(
        "--text-pair-column",
        help="column holding each text's second text: rows are classified as (text, text_pair) pairs",
    )
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "calibrate",
        help="fit temperature scaling on a labelled file or held-out training rows; store it in the model",
    )
    p.add_argument("model", metavar="MODEL", help="model directory to calibrate (its config.json is updated)")
    fit_on = p.add_mutually_exclusive_group(required=True)
    fit_on.add_argument("--dev", help="labelled file to fit the temperature on")
    fit_on.add_argument(
        "--holdout",
        action="store_true",
        help="fit on the training rows that train --select-on holdout kept out of this model "
        "(file, fraction and seed from its train_config.json): no dev look",
    )
    p.add_argument("--text-column", help="column holding the text (default: sentence or text)")
    p.add_argument("--label-column", help="column holding the label (default: label or labels)")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser(
        "explain", help="which words drove a prediction (Integrated Gradients; extra: explain)"
    )
    p.add_argument("text", metavar="TEXT", help="the text to explain")
    add_config_arguments(p, LoadConfig)
    p.add_argument("--target", help="label to explain (default: the predicted one)")
    p.add_argument("--html", metavar="FILE", help="also write the text with highlighted words as HTML")
    p.add_argument("--json", action="store_true", help="print the attributions as one JSON object")
    p.add_argument("--steps", type=int, default=32, help="initial integration steps (doubled until complete)")
    p.add_argument("--top", type=int, default=8, help="how many of the strongest words to list")
    p.set_defaults(func=cmd_explain)

    from distilsent.fairness.audit import AuditConfig

    p = sub.add_parser("audit", help="bias probes: does the score change when only an identity term does?")
    add_config_arguments(p, AuditConfig)
    add_config_arguments(p, LoadConfig)
    p.add_argument("--fail", action="store_true", help="exit with status 1 when a family fails (for CI)")
    p.set_defaults(func=cmd_audit)

    from distilsent.evaluation.check import CheckConfig

    p = sub.add_parser("check", help="behavioural tests: negation, contrast, typos, invariances, ...")
    add_config_arguments(p, CheckConfig)
    add_config_arguments(p, LoadConfig)
    p.add_argument("--fail", action="store_true", help="exit with status 1 when a test fails (for CI)")
    p.set_defaults(func=cmd_check)

    from distilsent.batch import BatchConfig

    p = sub.add_parser("batch", help="score a CSV/TSV/JSONL/Parquet/text file of any size; resumable")
    p.add_argument("input", metavar="INPUT", help="file to score")
    p.add_argument("output", metavar="OUTPUT", help="results file: .csv, .tsv, .jsonl or .parquet")
    add_config_arguments(p, BatchConfig, skip=("input", "output"))
    add_config_arguments(p, LoadConfig)
    p.set_defaults(func=cmd_batch)

    p = sub.add_parser("serve", help="HTTP server: batching, limits, metrics, a web page (extra: serve)")
    add_config_arguments(p, LoadConfig)
    from distilsent.serve import ServeConfig

    add_config_arguments(p, ServeConfig, skip=("api_keys",))
    p.add_argument(
        "--api-key",
        action="append",
        metavar="KEY",
        help="accepted API key (repeatable). A key on the command line is visible to every local user "
        "in ps and in shell history: prefer --api-key-file or $DISTILSENT_API_KEYS (comma-separated)",
    )
    p.set_defaults(func=cmd_serve)
    return parser


def _quiet_libraries() -> None:
    # Load reports and weight-loading bars from transformers are noise on a command line. Said
    # without importing it (2.4 s of a cold `classify`, which on the CPU does not need it): it reads
    # the verbosity from the environment and its bars' switch from huggingface_hub's when imported.
    if "transformers" in sys.modules:  # imported already: a program calling main(), the tests
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    else:
        from huggingface_hub.utils import disable_progress_bars

        os.environ["TRANSFORMERS_VERBOSITY"] = "error"
        disable_progress_bars()


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    debug = os.environ.get("DISTILSENT_DEBUG") == "1"
    run: Callable[[argparse.Namespace], int] = args.func
    try:
        if args.command != "train":
            _quiet_libraries()
        return run(args)
    except DistilsentError as e:  # the user's to fix: a bad flag, file, text or model; one line
        if debug:
            raise
        print(f"distilsent {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        # The reader (e.g. `head`) went away; stop quietly like other Unix tools.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:  # unreadable input, unwritable output, full disk: the user's to fix
        if debug:
            raise
        where = f" {e.filename}" if e.filename else ""
        print(f"distilsent {args.command}: error:{where}: {e.strerror or e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("distilsent: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: say so in one line, traceback on request
        if debug:
            raise
        print(
            f"distilsent {args.command}: internal error: {type(e).__name__}: {e} "
            "(set DISTILSENT_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())

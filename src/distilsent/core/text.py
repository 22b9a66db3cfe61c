"""The one rule for what text can be classified, shared by the API, the CLI, batch jobs and the server."""

from __future__ import annotations

from collections.abc import Sequence

from distilsent.core.errors import InvalidInputError, InvalidTypeError

__all__ = ["check_texts", "text_problem"]


def text_problem(value: object) -> str | None:
    """Why ``value`` cannot be classified, as a predicate for "text …", or None when it can be.

    A lone UTF-16 surrogate (possible in a Python ``str`` and in JSON's ``\\ud800`` escapes) cannot be
    encoded, so the tokenizer would fail on it; such text is refused like an invalid byte.
    """
    if value is None:
        return "is missing (null)"
    if not isinstance(value, str):
        return f"is {type(value).__name__}, not a string"
    if not value.strip():
        return "is empty"
    if value.isascii():  # a flag CPython keeps on every str: most texts skip the encode below
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    return None


def check_texts(texts: Sequence[object], offset: int = 0) -> list[str]:
    """``texts`` as a list, or an error naming the first bad one by index (``texts[3] is …``)."""
    for i, text in enumerate(texts):
        problem = text_problem(text)
        if problem is not None:
            error = InvalidInputError if isinstance(text, str) else InvalidTypeError
            raise error(f"texts[{offset + i}] {problem}")
    return list(texts)  # type: ignore[arg-type]

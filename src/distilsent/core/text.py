"""The one rule for what text can be classified, shared by the API, the CLI, batch jobs and the server."""

from __future__ import annotations

from collections.abc import Sequence

from distilsent.core.errors import InvalidInputError, InvalidTypeError

__all__ = ["as_pairs", "check_pairs", "check_texts", "encodable", "text_problem"]


def encodable(value: str) -> bool:
    """Whether ``value`` encodes as UTF-8: not when it holds a lone UTF-16 surrogate (possible in a
    Python ``str``, in JSON's ``\\ud800`` escapes, and where invalid bytes were read with
    ``surrogateescape``)."""
    if value.isascii():  # a flag CPython keeps on every str: most values skip the encode below
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def text_problem(value: object) -> str | None:
    """Why ``value`` cannot be classified, as a predicate for "text …", or None when it can be.

    Text the tokenizer cannot encode (a lone surrogate) is refused like an invalid byte, and text with
    nothing visible in it (NUL bytes, zero-width spaces, other control or format characters) like
    empty text: the model would otherwise label an empty input.
    """
    if value is None:
        return "is missing (null)"
    if not isinstance(value, str):
        return f"is {type(value).__name__}, not a string"
    stripped = value.strip()
    if not stripped:
        return "is empty"
    # strip() removed the white space, so a printable first character is a visible one.
    if not stripped[0].isprintable() and not any(c.isprintable() and not c.isspace() for c in stripped):
        return "has no visible characters (only control or zero-width ones)"
    if not encodable(value):
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


def as_pairs(value: object) -> list[tuple[object, object]] | None:
    """``value`` as a list of text pairs when it is one (a 2-tuple of texts, or a list of 2-tuples or
    2-lists), else None: what tells ``predict`` that it was given pairs."""
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, str) for v in value):
        return [value]
    if (
        isinstance(value, (list, tuple))
        and value
        and all(isinstance(v, (tuple, list)) and len(v) == 2 for v in value)
    ):
        return [tuple(v) for v in value]  # type: ignore[misc]
    return None


def check_pairs(pairs: Sequence[Sequence[object]], offset: int = 0) -> list[tuple[str, str]]:
    """``pairs`` as ``(text, text_pair)`` tuples, or an error naming the first bad one
    (``texts[2] has 3 parts``, ``texts[0][1] is empty``)."""
    out = []
    for i, pair in enumerate(pairs):
        if len(pair) != 2:
            raise InvalidInputError(f"texts[{offset + i}] has {len(pair)} parts; a text pair has 2")
        for j, text in enumerate(pair):
            problem = text_problem(text)
            if problem is not None:
                error = InvalidInputError if isinstance(text, str) else InvalidTypeError
                raise error(f"texts[{offset + i}][{j}] {problem}")
        out.append((pair[0], pair[1]))
    return out  # type: ignore[return-value]

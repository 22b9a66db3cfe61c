"""Out-of-scope input: texts an English sentiment model should not be trusted with.

Two checks, both cheap next to the model:

- **no known words**: the text has no word piece the vocabulary knows (emoji-only text is one
  ``[UNK]``; punctuation-only text has no word at all), so any label would be a guess.
- **not English**: most of its letters are outside the Latin script (Cyrillic, CJK, Arabic...), or,
  with the ``guard`` extra (py3langid), a language identifier gives English a probability under
  :data:`ENGLISH_FLOOR` on a text of at least :data:`MIN_WORDS` words. The floor and the word count
  were set on SST-2 *training* phrases (false flags on 20,000 of them: 9, 0.045 %), not on dev.

:class:`ScopeGuard` turns texts into warnings; what happens to a flagged text (``keep``, ``flag``,
``neutral``, ``error``) is the caller's ``on_out_of_scope``.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Sequence
from functools import cache
from typing import Any

import numpy as np

from distilsent.core.errors import InvalidInputError, MissingExtraError
from distilsent.core.tokenization import TokenBatch

__all__ = [
    "ENGLISH_FLOOR",
    "LANGUAGE_DETECTORS",
    "MIN_WORDS",
    "NOT_ENGLISH",
    "NO_KNOWN_WORDS",
    "SCOPE_ACTIONS",
    "ScopeGuard",
    "check_scope_options",
    "has_py3langid",
]

SCOPE_ACTIONS = ("flag", "keep", "neutral", "error")
"""What an out-of-scope text gets: 'flag' (its result carries a ``warning``), 'keep' (no check at
all), 'neutral' (the warning and the neutral label), 'error' (refused, like an empty text)."""
LANGUAGE_DETECTORS = ("auto", "py3langid", "script", "none")
"""'auto' (py3langid when the ``guard`` extra is installed, else the script check), 'py3langid' (the
script check and py3langid; an error without the extra), 'script' (letters outside the Latin script
only) or 'none' (no language check; unknown words are still checked)."""
NOT_ENGLISH = "not English"
NO_KNOWN_WORDS = "no known words"
ENGLISH_FLOOR = 0.01
"""py3langid's probability of English under which a text is flagged."""
MIN_WORDS = 3
"""Texts with fewer words are not given to py3langid: on one or two words it is often wrong (it calls
"clichés ." French)."""

_WORD = re.compile(r"[^\W\d_]+")
# The start of a long text tells its language; the whole of a book would only cost time.
_LANGUAGE_CHARS = 2000
_lock = threading.Lock()
# Words frequent in English and not words of the other common Latin-script languages (so not
# "is", "was", "of" or "for", which are Dutch, German or Norwegian too).
_FUNCTION_WORDS = frozenset(
    "the and this that with are were but not you have has been its than what which would could "
    "should they their there very".split()
)


def check_scope_options(on_out_of_scope: str | None = None, language_detector: str | None = None) -> None:
    """The option values given, checked (``ValueError`` naming the choices)."""
    if on_out_of_scope is not None and on_out_of_scope not in SCOPE_ACTIONS:
        raise InvalidInputError(
            f"on_out_of_scope must be one of {', '.join(SCOPE_ACTIONS)}, not {on_out_of_scope!r}"
        )
    if language_detector is not None and language_detector not in LANGUAGE_DETECTORS:
        raise InvalidInputError(
            f"language_detector must be one of {', '.join(LANGUAGE_DETECTORS)}, not {language_detector!r}"
        )


@cache
def _identifier() -> Any:
    """py3langid's identifier with probabilities, loaded once (its model is an npz file: no pickle)."""
    try:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier
    except ImportError:
        raise MissingExtraError("language_detector 'py3langid'", "guard", "py3langid") from None
    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def has_py3langid() -> bool:
    try:
        import py3langid  # noqa: F401
    except ImportError:
        return False
    return True


def _english_words(words: list[str]) -> bool:
    """Whether ``words`` hold two of English's commonest function words: such text needs no language
    identifier (most English sentences skip it, which keeps the check cheap)."""
    return sum(1 for w in words[:64] if w.lower() in _FUNCTION_WORDS) >= 2


def _mostly_other_script(text: str) -> bool:
    """Whether most of the letters of ``text`` are outside the Latin script."""
    if text.isascii():
        return False
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return False
    latin = sum(1 for c in letters if c.isascii() or unicodedata.name(c, "").startswith("LATIN"))
    return latin * 2 < len(letters)


class ScopeGuard:
    """Warnings for texts out of an English model's scope, from their token ids and their letters."""

    def __init__(self, vocab: dict[str, int], special_ids: Sequence[int], detector: str = "auto") -> None:
        check_scope_options(language_detector=detector)
        if detector == "py3langid":
            _identifier()  # asked for by name: a missing extra fails now, not on the first text
        elif detector == "auto":
            # Installed, so it will load: on the first text that needs it (0.65 s), not at start-up.
            detector = "py3langid" if has_py3langid() else "script"
        self.detector = detector
        # A word piece is a known word when it has a letter or digit: punctuation alone is not one.
        known = np.zeros(max(vocab.values(), default=0) + 1, dtype=bool)
        for token, i in vocab.items():
            known[i] = any(c.isalnum() for c in token.removeprefix("##"))
        known[[i for i in special_ids if 0 <= i < len(known)]] = False
        self._known = known

    def describe(self) -> str:
        """Which checks run, for ``info``."""
        language = {
            "py3langid": f"not English: non-Latin script, or py3langid P(en) < {ENGLISH_FLOOR} "
            f"on {MIN_WORDS}+ words",
            "script": "not English: non-Latin script only (install distilsent[guard] for py3langid)",
            "none": "no language check",
        }[self.detector]
        return f"no known words: no word piece in the vocabulary; {language}"

    def problems(self, texts: Sequence[str], tokens: TokenBatch) -> list[str | None]:
        """The warning for each text (``tokens``: the ids the model sees), None for those in scope."""
        # Ids outside the vocabulary (a mismatched tokenizer) count as unknown.
        inside = (tokens.ids >= 0) & (tokens.ids < len(self._known))
        known_flat = np.zeros(len(tokens.ids), dtype=np.int64)
        known_flat[inside] = self._known[tokens.ids[inside]]
        running = np.concatenate([[0], np.cumsum(known_flat)])
        known_words = (running[tokens.offsets[1:]] - running[tokens.offsets[:-1]]).tolist()
        return [
            NO_KNOWN_WORDS if not count else self._language(text) for text, count in zip(texts, known_words)
        ]

    def _language(self, text: str) -> str | None:
        if self.detector == "none":
            return None
        if _mostly_other_script(text[:_LANGUAGE_CHARS]):
            return NOT_ENGLISH
        words = _WORD.findall(text[:_LANGUAGE_CHARS])
        if self.detector == "py3langid" and len(words) >= MIN_WORDS and not _english_words(words):
            with _lock:  # the identifier keeps no state per call, but is not documented thread-safe
                ranked = dict(_identifier().rank(text[:_LANGUAGE_CHARS]))
            if ranked.get("en", 0.0) < ENGLISH_FLOOR:
                return NOT_ENGLISH
        return None

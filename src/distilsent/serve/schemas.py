"""Request bodies of the three API shapes (distilsent's, TEI's and the Hugging Face inference API's)."""

from __future__ import annotations

from typing import Literal

from distilsent.core.errors import MissingExtraError

try:
    from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr
except ImportError as e:  # pragma: no cover - exercised by the missing-extra test
    raise MissingExtraError("distilsent serve", "serve", e.name or "pydantic") from e

from distilsent.core.postprocess import FUNCTIONS
from distilsent.core.scope import SCOPE_ACTIONS

__all__ = [
    "ClassifyRequest",
    "DecodeRequest",
    "ErrorBody",
    "ExplainRequest",
    "HFParameters",
    "HFRequest",
    "Inputs",
    "PredictRequest",
    "TokenizeRequest",
]


# The option list of distilsent.core.postprocess, as the type pydantic validates against.
FunctionName = Literal[FUNCTIONS]  # type: ignore[valid-type]
ScopeAction = Literal[SCOPE_ACTIONS]  # type: ignore[valid-type]
Inputs = StrictStr | list[StrictStr]


class ErrorBody(BaseModel):
    """Every error the server answers."""

    error: str = Field(description="What went wrong, naming the field or limit.")
    error_type: str = Field(description="validation, unauthorized, overloaded, unavailable, ...")


class ClassifyRequest(BaseModel):
    """``POST /v1/classify``."""

    model_config = ConfigDict(extra="forbid")
    inputs: Inputs = Field(description="One text, or a list of texts.")
    top_k: int | None = Field(None, ge=1, description="Keep only the k most likely labels in scores.")
    truncate: StrictBool = Field(True, description="Cut texts longer than max_length; false = refuse them.")
    max_length: int | None = Field(
        None, ge=3, le=512, description="Tokens read per text for this request (default: the server's)."
    )
    long: Literal["truncate", "chunk"] | None = Field(
        None, description="Long texts: truncate, or classify every window and aggregate."
    )
    neutral_band: str | None = Field(
        None, description="'LOW:HIGH': two-label predictions in the band are neutral."
    )
    function_to_apply: FunctionName | None = None
    on_out_of_scope: ScopeAction | None = Field(
        None,
        description="Texts not in English or with no known word: flag (a 'warning' in the result), keep, "
        "neutral, or error (422). Default: the server's --on-out-of-scope.",
    )


TEIInputs = StrictStr | list[StrictStr] | list[list[StrictStr]]


class PredictRequest(BaseModel):
    """``POST /predict`` (and ``/invocations``), the Text Embeddings Inference request. As in TEI, a
    list of two strings is one text pair; a batch is a list of lists (``[["a"], ["b"]]``, or pairs
    ``[["a", "b"], ["c", "d"]]``); unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")
    inputs: TEIInputs = Field(description='A text, a pair ["a", "b"], or a batch [["a"], ["b", "c"]].')
    raw_scores: StrictBool = False
    truncate: StrictBool | None = Field(
        None, description="Cut inputs over max_length (default, TEI's --auto-truncate); false = 422."
    )
    truncation_direction: Literal["Left", "Right", "left", "right"] = "Right"


class TokenizeRequest(BaseModel):
    """``POST /tokenize`` (TEI)."""

    model_config = ConfigDict(extra="ignore")
    inputs: StrictStr | list[StrictStr]
    add_special_tokens: StrictBool = True


class DecodeRequest(BaseModel):
    """``POST /decode`` (TEI)."""

    model_config = ConfigDict(extra="ignore")
    ids: list[int] | list[list[int]]
    skip_special_tokens: StrictBool = True


class ExplainRequest(BaseModel):
    """``POST /v1/explain``."""

    model_config = ConfigDict(extra="forbid")
    inputs: StrictStr = Field(description="The text to explain.")
    target: str | None = Field(None, description="Label to explain; default: the predicted one.")


class HFParameters(BaseModel):
    top_k: int | None = Field(None, ge=1)
    function_to_apply: FunctionName | None = None


class HFRequest(BaseModel):
    """``POST /``, the Hugging Face inference API request."""

    inputs: Inputs
    parameters: HFParameters | None = None

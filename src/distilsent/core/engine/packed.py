"""DistilBERT classification on the CPU with the padding taken out of its matrix products.

A batch of right-padded sequences becomes one matrix of its real tokens; the linear layers, layer
norms and GELUs run on that matrix, and only attention sees the padded ``(batch, length)`` layout. The
last layer computes its query, attention output and feed-forward for ``[CLS]`` alone: nothing else
reaches the classifier. The token count is rounded up to one of a few sizes (at most 1/8 more rows)
because oneDNN compiles a kernel per matrix shape the first time it meets it (on AMX about 1.5 ms per
linear layer, as much as the product itself): with every batch a new shape, bf16 ran at two thirds
of its warm speed.

Weights are the loaded ``DistilBertForSequenceClassification``'s own (query, key and value fused
into one product), in its dtype; results match it to rounding. Where oneDNN's packed products work
(checked on a probe), the weights are also packed once into oneDNN's blocked layout (what
``torch.compile`` does when it freezes a model), which ``F.linear`` otherwise redoes on every call,
and the GELU and the residual sums run inside the products instead of as passes of their own. In
bf16 that is always done: measured on an AMX Xeon, a 16-row product took 35 µs instead of 58 µs and an
800-row one 255 µs instead of 439 µs. In fp32 it depends on the CPU (``F.linear`` is MKL's, and
on an AVX2-only EPYC oneDNN's fused erf GELU cost more than a separate ``F.gelu``), so one block's
products are timed both ways on 256 rows when the first model of its shape loads in a process, and
the faster runs (for every later load of that shape too, so one checkpoint always gets the same logits
in a process). On a 2-core AMD
EPYC with AVX-512 the packed forward classified SST-2 dev 24 % faster on the default model and 31 %
on the DistilBERT-base shape; on an AVX2-only one it was 17 % and 13 % slower, and the probe picks
the plain products there. Logits stay within 1.5e-5 of the plain ones.

The forward needs only the checkpoint's tensors and a few config fields, so it can also be built
straight from them (:meth:`PackedDistilBert.from_weights`) without transformers, whose import takes
about 2.4 s of a cold ``distilsent classify``'s 5.5 s on a 2-core EPYC.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch.nn import functional as F

__all__ = ["PackedDistilBert", "packable", "packable_config", "row_bucket", "weight_names"]

logger = logging.getLogger(__name__)

_MIN_ROWS = 16

Linear = Callable[[torch.Tensor], torch.Tensor]
Weights = Mapping[str, torch.Tensor]
"""A checkpoint's tensors by the names ``DistilBertForSequenceClassification`` saves them under."""
_Block = Callable[[str], torch.Tensor]
"""One transformer block's tensor by its name inside the block (``"ffn.lin1.weight"``)."""

_LAYER_NORM_EPS = 1e-12
"""transformers' DistilBERT builds every LayerNorm with this eps; config.json does not carry it."""
_BLOCK_TENSORS = tuple(
    f"{module}.{kind}"
    for module in (
        "attention.q_lin",
        "attention.k_lin",
        "attention.v_lin",
        "attention.out_lin",
        "sa_layer_norm",
        "ffn.lin1",
        "ffn.lin2",
        "output_layer_norm",
    )
    for kind in ("weight", "bias")
)


def row_bucket(rows: int) -> int:
    """``rows`` rounded up to 16, then to an eighth of its power of two: 8 sizes per doubling."""
    if rows <= _MIN_ROWS:
        return _MIN_ROWS
    step = max(_MIN_ROWS, 1 << (rows.bit_length() - 4))
    return -(-rows // step) * step


def packable(model: torch.nn.Module) -> bool:
    """Whether ``model`` is a DistilBERT sequence classifier this forward reproduces."""
    config = getattr(model, "config", None)
    return (
        type(model).__name__ == "DistilBertForSequenceClassification"
        and getattr(config, "activation", None) in ("gelu", "relu")
        and not getattr(config, "sinusoidal_pos_embds", False)
    )


def packable_config(config: Mapping[str, Any]) -> bool:
    """Whether a config.json's fields describe a classifier :meth:`PackedDistilBert.from_weights`
    reproduces: what transformers builds for it is a ``DistilBertForSequenceClassification``."""
    return (
        config.get("model_type") == "distilbert"
        and "DistilBertForSequenceClassification" in (config.get("architectures") or [])
        and config.get("activation") in ("gelu", "relu")
        and not config.get("sinusoidal_pos_embds", False)
        and all(isinstance(config.get(k), int) for k in ("dim", "n_heads", "n_layers"))
    )


def weight_names(layers: int) -> list[str]:
    """Every tensor of a ``layers``-block ``DistilBertForSequenceClassification``: its parameters."""
    embeddings = [
        f"distilbert.embeddings.{name}"
        for name in (
            "word_embeddings.weight",
            "position_embeddings.weight",
            "LayerNorm.weight",
            "LayerNorm.bias",
        )
    ]
    blocks = [f"distilbert.transformer.layer.{i}.{name}" for i in range(layers) for name in _BLOCK_TENSORS]
    head = ["pre_classifier.weight", "pre_classifier.bias", "classifier.weight", "classifier.bias"]
    return embeddings + blocks + head


class PackedDistilBert:
    """Inference-only forward of a DistilBERT classifier over its real tokens (see the module docs)."""

    def __init__(
        self,
        model: torch.nn.Module,
        make_linear: Callable[[str, torch.Tensor, torch.Tensor | None], Linear] | None = None,
        *,
        prepack: bool | None = None,
    ) -> None:
        """``make_linear(name, weight, bias)``, where given, builds each product in place of the
        default (``name``: ``"{layer}.qkv"``, ``.out``, ``.lin1``, ``.lin2``, ``"pre_classifier"``,
        ``"classifier"``): a way to try other kernels, such as int8 ones, on the same forward.
        ``prepack`` forces oneDNN's packed products on or off (``ValueError`` where they do not work
        here: bf16 needs AVX-512 or AVX-NE-CONVERT); ``None`` decides as the module docs say, and
        ``prepack_reason`` says what was decided and why."""
        if not packable(model):
            raise ValueError("PackedDistilBert runs DistilBertForSequenceClassification models only")
        with torch.no_grad():
            self._build(model.config.to_dict(), model.state_dict(), make_linear, prepack)

    @classmethod
    def from_weights(
        cls,
        config: Mapping[str, Any],
        weights: Weights,
        *,
        dtype: torch.dtype | None = None,
        prepack: bool | None = None,
    ) -> PackedDistilBert:
        """The forward of the classifier a config.json's fields and its checkpoint's tensors
        describe, without building the transformers model; the tensors cast to ``dtype`` (as
        transformers casts them on load), or in their own dtype. ``ValueError`` where
        :func:`packable_config` refuses the config or a tensor of :func:`weight_names` is missing (a
        checkpoint transformers would have to convert or initialize in part)."""
        if not packable_config(config):
            raise ValueError("PackedDistilBert runs DistilBertForSequenceClassification models only")
        names = weight_names(config["n_layers"])
        missing = [name for name in names if name not in weights]
        if missing:
            raise ValueError(
                f"the checkpoint lacks {len(missing)} of the classifier's tensors, such as {missing[0]}"
            )
        forward = cls.__new__(cls)
        forward._build(
            config, {name: weights[name].to(dtype or weights[name].dtype) for name in names}, None, prepack
        )
        return forward

    def _build(
        self,
        config: Mapping[str, Any],
        weights: Weights,
        make_linear: Callable[[str, torch.Tensor, torch.Tensor | None], Linear] | None,
        prepack: bool | None,
    ) -> None:
        self.heads = config["n_heads"]
        self.dim = config["dim"]
        self.head_dim = self.dim // self.heads
        self.word = weights["distilbert.embeddings.word_embeddings.weight"]
        self.position = weights["distilbert.embeddings.position_embeddings.weight"]
        self.embed_norm = _norm(
            weights["distilbert.embeddings.LayerNorm.weight"], weights["distilbert.embeddings.LayerNorm.bias"]
        )
        blocks = [_block(weights, i) for i in range(config["n_layers"])]
        activation = config["activation"]
        if make_linear is not None:
            self.prepacked, self.prepack_reason = False, "products from make_linear"
        elif prepack is not None:
            dtype = blocks[0]("ffn.lin1.weight").dtype
            if prepack and not _prepack_works(dtype):
                raise ValueError(
                    f"oneDNN packed {_NAMES.get(dtype, dtype)} products are unavailable on this CPU"
                    " or torch build; leave prepack=None to choose what works"
                )
            self.prepacked, self.prepack_reason = prepack, "asked for"
        else:
            self.prepacked, self.prepack_reason = _decide_prepack(blocks[0], activation)
        build = _Prepacked(activation) if self.prepacked else _Composed(make_linear or _linear, activation)

        self.layers = [_layer_products(build, i, block) for i, block in enumerate(blocks)]
        self.pre_classifier = build.linear(
            "pre_classifier", weights["pre_classifier.weight"], weights["pre_classifier.bias"]
        )
        self.classifier = build.linear("classifier", weights["classifier.weight"], weights["classifier.bias"])

    @property
    def dtype(self) -> torch.dtype:
        return self.word.dtype

    @property
    def device(self) -> torch.device:
        return self.word.device

    @torch.inference_mode()
    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Logits for right-padded ``input_ids``; every row's mask must be ones then zeros."""
        flat = input_ids.reshape(-1)
        return self._forward(attention_mask, lambda where: F.embedding(_rows(flat, where), self.word))

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The word embeddings of ``input_ids``, ``(batch, length, dim)``: what
        :meth:`from_embeddings` takes (positions are added there)."""
        return F.embedding(input_ids, self.word)

    def from_embeddings(self, word_vectors: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Logits from right-padded word embeddings (:meth:`embed`), as transformers'
        ``inputs_embeds``. Gradients flow back to ``word_vectors`` where the products are plain
        (``prepack=False``): oneDNN's packed products have none."""
        flat = word_vectors.reshape(-1, self.dim)
        return self._forward(attention_mask, lambda where: _rows(flat, where))

    def _forward(
        self, attention_mask: torch.Tensor, words: Callable[[torch.Tensor | None], torch.Tensor]
    ) -> torch.Tensor:
        """The forward after the word lookup; ``words(where)`` gives the word vectors of the flat
        token indices ``where`` (every token where ``None``)."""
        batch, length = attention_mask.shape
        lengths = attention_mask.sum(1)
        tokens = int(lengths.sum())
        # Without padding (a single text, or a batch of equal lengths) the packed rows are the
        # padded layout itself: no gathering and scattering, no attention mask. Worth ~0.2 ms of
        # a single text's 3 ms.
        full = tokens == batch * length
        rows = row_bucket(tokens)
        cls_rows = torch.cumsum(lengths, 0) - lengths  # each sequence's first token in the packed rows
        positions = torch.arange(length, device=attention_mask.device).repeat(batch)
        where, slots, key_mask = None, None, None
        if not full:
            where = attention_mask.reshape(-1).bool().nonzero().squeeze(1)  # flat index of real tokens
            positions = positions[where]
            # The packed row each padded slot reads; padding slots read row 0, which attention's key
            # mask hides and whose queries are dropped. A gather is one pass; scattering into zeros
            # was two and cost ~5 % of bf16 throughput on dev-length batches.
            slots = torch.zeros(batch * length, dtype=torch.long)
            slots[where] = torch.arange(tokens)
            key_mask = attention_mask.bool()[:, None, None, :]  # (batch, 1, 1, length): keys to attend
        x = words(where) + F.embedding(positions, self.position)
        x = _pad_rows(self.embed_norm(x), rows)
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            qkv = layer["qkv"](x)
            # back to the padded layout for attention alone
            spread = qkv[:tokens] if slots is None else qkv.index_select(0, slots)
            q, k, v = spread.view(batch, length, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
            if i == last:
                q, x = q[:, :, :1], x[cls_rows]
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)
            context = context.transpose(1, 2).reshape(batch, -1, self.dim)
            if i == last:
                context = context[:, 0]
            else:
                context = context.reshape(-1, self.dim)
                context = _pad_rows(context if where is None else context[where], rows)
            x = layer["sa_norm"](layer["out"](context, x))
            x = layer["out_norm"](layer["lin2"](layer["lin1"](x), x))
        return self.classifier(F.relu(self.pre_classifier(x)))


def _rows(flat: torch.Tensor, where: torch.Tensor | None) -> torch.Tensor:
    return flat if where is None else flat[where]


def _norm(weight: torch.Tensor, bias: torch.Tensor) -> Linear:
    shape = (len(weight),)
    return lambda x: F.layer_norm(x, shape, weight, bias, _LAYER_NORM_EPS)


def _block(weights: Weights, i: int) -> _Block:
    prefix = f"distilbert.transformer.layer.{i}."
    return lambda name: weights[prefix + name]


def _layer_products(
    build: _Composed | _Prepacked, i: int, block: _Block
) -> dict[str, Callable[..., torch.Tensor]]:
    """Transformer block ``i``'s products (query, key and value fused) and norms, built by ``build``."""
    qkv_w = torch.cat([block(f"attention.{p}_lin.weight") for p in "qkv"])
    qkv_b = torch.cat([block(f"attention.{p}_lin.bias") for p in "qkv"])
    return {
        "qkv": build.linear(f"{i}.qkv", qkv_w, qkv_b),
        "out": build.plus(f"{i}.out", block("attention.out_lin.weight"), block("attention.out_lin.bias")),
        "sa_norm": _norm(block("sa_layer_norm.weight"), block("sa_layer_norm.bias")),
        "lin1": build.activated(f"{i}.lin1", block("ffn.lin1.weight"), block("ffn.lin1.bias")),
        "lin2": build.plus(f"{i}.lin2", block("ffn.lin2.weight"), block("ffn.lin2.bias")),
        "out_norm": _norm(block("output_layer_norm.weight"), block("output_layer_norm.bias")),
    }


def _linear(name: str, weight: torch.Tensor, bias: torch.Tensor | None) -> Linear:
    weight = weight.contiguous()
    return lambda x: F.linear(x, weight, bias)


Residual = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class _Composed:
    """Each product from ``make_linear``, with its activation (``config.activation``: ``"gelu"`` or
    ``"relu"``) or residual sum as a separate op."""

    def __init__(
        self, make_linear: Callable[[str, torch.Tensor, torch.Tensor | None], Linear], activation: str
    ) -> None:
        self.linear, self.act = make_linear, F.gelu if activation == "gelu" else F.relu

    def activated(self, name: str, weight: torch.Tensor, bias: torch.Tensor | None) -> Linear:
        product = self.linear(name, weight, bias)
        return lambda x: self.act(product(x))

    def plus(self, name: str, weight: torch.Tensor, bias: torch.Tensor | None) -> Residual:
        product = self.linear(name, weight, bias)
        return lambda x, residual: product(x) + residual


class _Prepacked:
    """oneDNN products on weights packed once, the activation and residual sum inside the product."""

    def __init__(self, activation: str) -> None:
        # oneDNN's "gelu" with algorithm "none" is the exact (erf) GELU that F.gelu computes.
        self.activation = (activation, "none" if activation == "gelu" else "")

    @staticmethod
    def _pack(weight: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), None)

    def linear(self, name: str, weight: torch.Tensor, bias: torch.Tensor | None) -> Linear:
        packed, pointwise = self._pack(weight), torch.ops.mkldnn._linear_pointwise
        return lambda x: pointwise(x, packed, bias, "none", [], "")

    def activated(self, name: str, weight: torch.Tensor, bias: torch.Tensor | None) -> Linear:
        packed, pointwise = self._pack(weight), torch.ops.mkldnn._linear_pointwise
        attr, algorithm = self.activation
        return lambda x: pointwise(x, packed, bias, attr, [], algorithm)

    def plus(self, name: str, weight: torch.Tensor, bias: torch.Tensor | None) -> Residual:
        packed, binary = self._pack(weight), torch.ops.mkldnn._linear_pointwise.binary
        return lambda x, residual: binary(x, residual, packed, bias, "add")


def _decide_prepack(block: _Block, activation: str) -> tuple[bool, str]:
    """Whether to run the packed oneDNN products, and why: always in bf16 where they work; in fp32
    where they are also faster than ``F.linear`` on this CPU, timed on the model's own first block.
    ``F.linear`` in fp32 is MKL's, fast on some CPUs; and oneDNN's fused (erf) GELU, cheap with
    AVX-512, cost more than a separate ``F.gelu`` on an AVX2-only EPYC, so a lone product is no guide."""
    weight = block("ffn.lin1.weight")
    dtype = weight.dtype
    if weight.device.type != "cpu" or not _prepack_works(dtype):
        return False, f"oneDNN packed {_NAMES.get(dtype, dtype)} products unavailable here"
    if dtype == torch.bfloat16:
        return True, "bf16, where packing always wins"
    # Timed once per block shape in a process: on a close call two timings can differ, and two loads
    # of one checkpoint then ran different products, whose logits differ in the last bits (1.8e-6 in
    # a probability, seen between a calibrated and an uncalibrated load of the same model).
    key = (activation, *(block(f"{name}.weight").shape for name in ("attention.q_lin", "ffn.lin1")))
    if key not in _DECIDED:
        packed, plain = _time_products(block, activation)
        note = f"packed {packed * 1e3:.2f} ms against plain {plain * 1e3:.2f} ms for one block's products"
        _DECIDED.setdefault(key, (packed <= plain, f"fp32: {note} on {_PROBE_ROWS} rows here"))
    return _DECIDED[key]


_DECIDED: dict[tuple[Any, ...], tuple[bool, str]] = {}
"""fp32's packed-or-plain decision and its reason, by activation and block shape, for this process."""
_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16"}
_PROBE_ROWS = 256  # a batch of 32 short texts: most of SST-2 dev's batches hold 256-1024 tokens


def _time_products(block: _Block, activation: str) -> tuple[float, float]:
    """Fastest seconds of a block's four products on ``_PROBE_ROWS`` rows, packed and plain, in
    alternating runs. The fastest, not the median: with another process on a 2-core machine the
    median once read 34 against 86 ms and chose the forward that was 17 % slower unloaded."""
    with torch.no_grad():
        builds = [
            _layer_products(b, 0, block) for b in (_Prepacked(activation), _Composed(_linear, activation))
        ]
    weight = block("ffn.lin1.weight")
    x = torch.randn(_PROBE_ROWS, weight.shape[1], generator=torch.Generator().manual_seed(0)).to(weight.dtype)

    def run_block(products: dict[str, Callable[..., torch.Tensor]]) -> None:
        products["qkv"](x)
        products["lin2"](products["lin1"](products["out"](x, x)), x)

    times: dict[int, list[float]] = {0: [], 1: []}
    with torch.inference_mode():
        for run in range(8):
            for which, products in enumerate(builds):
                start = time.perf_counter()
                run_block(products)
                if run >= 1:  # the first run builds kernels and warms caches
                    times[which].append(time.perf_counter() - start)
    return min(times[0]), min(times[1])


def _prepack_works(dtype: torch.dtype) -> bool:
    """Whether oneDNN's packed products are here for ``dtype`` and agree with the plain ones (a
    40×32 → 48 probe of each fused form)."""
    if dtype not in (torch.float32, torch.bfloat16):
        return False
    try:
        generator = torch.Generator().manual_seed(0)
        weight = torch.randn(48, 32, generator=generator).to(dtype)
        bias = torch.randn(48, generator=generator).to(dtype)
        x = torch.randn(40, 32, generator=generator).to(dtype)
        residual = torch.randn(40, 48, generator=generator).to(dtype)
        fast = _Prepacked("gelu")
        with torch.inference_mode():
            pairs = [
                (fast.linear("", weight, bias)(x), F.linear(x, weight, bias)),
                (fast.activated("", weight, bias)(x), F.gelu(F.linear(x, weight, bias))),
                (fast.plus("", weight, bias)(x, residual), F.linear(x, weight, bias) + residual),
            ]
        return all(torch.allclose(a.float(), b.float(), rtol=0.02, atol=0.05) for a, b in pairs)
    except (AttributeError, RuntimeError) as e:  # operators missing or unsupported on this CPU
        logger.debug("oneDNN packed %s linear unavailable: %s", dtype, e)
        return False


def _pad_rows(x: torch.Tensor, rows: int) -> torch.Tensor:
    return x if len(x) == rows else F.pad(x, (0, 0, 0, rows - len(x)))

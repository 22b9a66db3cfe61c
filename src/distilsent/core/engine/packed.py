"""DistilBERT classification on the CPU with the padding taken out of its matrix products.

A batch of right-padded sequences becomes one matrix of its real tokens; the linear layers, layer
norms and GELUs run on that matrix, and only attention sees the padded ``(batch, length)`` layout. The
last layer computes its query, attention output and feed-forward for ``[CLS]`` alone: nothing else
reaches the classifier. The token count is rounded up to one of a few sizes (at most 1/8 more rows)
because oneDNN compiles a kernel per matrix shape the first time it meets it (on AMX about 1.5 ms per
linear layer, as much as the product itself): with every batch a new shape, bf16 ran at two thirds
of its warm speed.

Weights are the loaded ``DistilBertForSequenceClassification``'s own (query, key and value fused
into one product), in its dtype; results match it to rounding. In bf16 they are also packed once into
oneDNN's blocked layout (what ``torch.compile`` does when it freezes a model), which ``F.linear``
otherwise redoes on every call: measured on an AMX Xeon, a 16-row product took 35 µs instead of 58 µs
and an 800-row one 255 µs instead of 439 µs, with identical results. Where this torch lacks the
operators, or they disagree with ``F.linear`` on a probe, the plain products are used.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch.nn import functional as F

__all__ = ["PackedDistilBert", "packable", "row_bucket"]

logger = logging.getLogger(__name__)

_MIN_ROWS = 16

Linear = Callable[[torch.Tensor], torch.Tensor]


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


class PackedDistilBert:
    """Inference-only forward of a DistilBERT classifier over its real tokens (see the module docs)."""

    def __init__(
        self,
        model: torch.nn.Module,
        make_linear: Callable[[str, torch.Tensor, torch.Tensor | None], Linear] | None = None,
    ) -> None:
        """``make_linear(name, weight, bias)``, where given, builds each product in place of the
        default (``name``: ``"{layer}.qkv"``, ``.out``, ``.lin1``, ``.lin2``, ``"pre_classifier"``,
        ``"classifier"``): a way to try other kernels, such as int8 ones, on the same forward."""
        if not packable(model):
            raise ValueError("PackedDistilBert runs DistilBertForSequenceClassification models only")
        config = model.config
        self.heads = config.n_heads
        self.dim = config.dim
        self.head_dim = config.dim // config.n_heads
        self.activation = F.gelu if config.activation == "gelu" else F.relu
        body = model.distilbert
        self.word = body.embeddings.word_embeddings.weight
        self.position = body.embeddings.position_embeddings.weight
        self.embed_norm = _norm(body.embeddings.LayerNorm)
        self.prepacked = (
            self.word.dtype == torch.bfloat16 and self.word.device.type == "cpu" and _prepack_works()
        )
        default = _prepacked_linear if self.prepacked else _linear

        def make(name: str, weight: torch.Tensor, bias: torch.Tensor | None) -> Linear:
            return default(weight, bias) if make_linear is None else make_linear(name, weight, bias)

        self.layers = []
        with torch.no_grad():
            for i, layer in enumerate(body.transformer.layer):
                att = layer.attention
                qkv_w = torch.cat([att.q_lin.weight, att.k_lin.weight, att.v_lin.weight])
                qkv_b = torch.cat([att.q_lin.bias, att.k_lin.bias, att.v_lin.bias])
                self.layers.append(
                    {
                        "qkv": make(f"{i}.qkv", qkv_w, qkv_b),
                        "out": make(f"{i}.out", att.out_lin.weight, att.out_lin.bias),
                        "sa_norm": _norm(layer.sa_layer_norm),
                        "lin1": make(f"{i}.lin1", layer.ffn.lin1.weight, layer.ffn.lin1.bias),
                        "lin2": make(f"{i}.lin2", layer.ffn.lin2.weight, layer.ffn.lin2.bias),
                        "out_norm": _norm(layer.output_layer_norm),
                    }
                )
            self.pre_classifier = make(
                "pre_classifier", model.pre_classifier.weight, model.pre_classifier.bias
            )
            self.classifier = make("classifier", model.classifier.weight, model.classifier.bias)

    @torch.inference_mode()
    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Logits for right-padded ``input_ids``; every row's mask must be ones then zeros."""
        batch, length = input_ids.shape
        lengths = attention_mask.sum(1)
        tokens = int(lengths.sum())
        # Without padding (a single text, or a batch of equal lengths) the packed rows are the
        # padded layout itself: no gathering and scattering, no attention mask. Worth ~0.2 ms of
        # a single text's 3 ms.
        full = tokens == batch * length
        rows = row_bucket(tokens)
        cls_rows = torch.cumsum(lengths, 0) - lengths  # each sequence's first token in the packed rows
        flat_ids, positions = input_ids.reshape(-1), torch.arange(length).repeat(batch)
        where, slots, key_mask = None, None, None
        if not full:
            where = attention_mask.reshape(-1).bool().nonzero().squeeze(1)  # flat index of real tokens
            flat_ids, positions = flat_ids[where], positions[where]
            # The packed row each padded slot reads; padding slots read row 0, which attention's key
            # mask hides and whose queries are dropped. A gather is one pass; scattering into zeros
            # was two and cost ~5 % of bf16 throughput on dev-length batches.
            slots = torch.zeros(batch * length, dtype=torch.long)
            slots[where] = torch.arange(tokens)
            key_mask = attention_mask.bool()[:, None, None, :]  # (batch, 1, 1, length): keys to attend
        x = F.embedding(flat_ids, self.word) + F.embedding(positions, self.position)
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
            x = layer["sa_norm"](layer["out"](context) + x)
            x = layer["out_norm"](layer["lin2"](self.activation(layer["lin1"](x))) + x)
        return self.classifier(F.relu(self.pre_classifier(x)))


def _norm(module: torch.nn.LayerNorm) -> Linear:
    weight, bias, eps, shape = module.weight, module.bias, module.eps, module.normalized_shape
    return lambda x: F.layer_norm(x, shape, weight, bias, eps)


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> Linear:
    weight = weight.contiguous()
    return lambda x: F.linear(x, weight, bias)


def _prepacked_linear(weight: torch.Tensor, bias: torch.Tensor | None) -> Linear:
    packed = torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), None)
    pointwise = torch.ops.mkldnn._linear_pointwise
    return lambda x: pointwise(x, packed, bias, "none", [], "")


def _prepack_works() -> bool:
    """Whether oneDNN's packed bf16 product is here and agrees with ``F.linear`` (a 40×48 probe)."""
    try:
        generator = torch.Generator().manual_seed(0)
        weight = torch.randn(48, 32, generator=generator).bfloat16()
        bias = torch.randn(48, generator=generator).bfloat16()
        x = torch.randn(40, 32, generator=generator).bfloat16()
        with torch.inference_mode():
            got = _prepacked_linear(weight, bias)(x).float()
            want = F.linear(x, weight, bias).float()
        return bool(torch.allclose(got, want, rtol=0.02, atol=0.05))
    except (AttributeError, RuntimeError) as e:  # operators missing or unsupported on this CPU
        logger.debug("oneDNN packed bf16 linear unavailable: %s", e)
        return False


def _pad_rows(x: torch.Tensor, rows: int) -> torch.Tensor:
    return x if len(x) == rows else F.pad(x, (0, 0, 0, rows - len(x)))

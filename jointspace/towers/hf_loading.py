"""Reading Hugging Face and sentence-transformers folders for the ``hf`` and ``minilm``
text towers (:mod:`.hf_text`): offline loading, which transformer, pooling and length a
folder describes, and tokenizer preparation; the offline loading serves ``hf_vision``
too. Nothing here builds a tower."""
from __future__ import annotations

import contextlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from ..errors import ConfigError
from ..devices import native_bf16
from ..progress import logger

TOKENIZER_FILE = "tokenizer.json"
HF_CONFIG_FILE = "config.json"
SETTINGS_FILE = "hf_text.json"
POOLING_MODES = ("mean", "cls", "max", "mean_sqrt_len_tokens")
PRECISIONS = ("fp32", "bf16", "auto")
#: config keys that do not change the architecture (ignored when comparing two configs)
_VOLATILE_CONFIG_KEYS = {"transformers_version", "architectures", "dtype", "torch_dtype"}
#: the legacy boolean keys of ``1_Pooling/config.json`` and the mode each one turns on
_LEGACY_POOLING = {"pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max",
                   "pooling_mode_mean_tokens": "mean",
                   "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                   "pooling_mode_weightedmean_tokens": "weightedmean",
                   "pooling_mode_lasttoken": "lasttoken"}


#: the keyword arguments of every ``from_pretrained`` here: this machine's files only, no
#: code from the folder
LOCAL_ONLY = {"local_files_only": True, "trust_remote_code": False}


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    """``HF_HUB_OFFLINE=1`` while transformers loads (unless the user set it), then restored."""
    before = os.environ.get("HF_HUB_OFFLINE")
    if before is None:
        os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("HF_HUB_OFFLINE", None)


def transformers_module():
    with _offline():
        try:
            import transformers
        except ImportError:
            raise ConfigError("the Hugging Face towers (hf, minilm, hf_vision) need the transformers "
                              "package (pip install transformers)") from None
    return transformers


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """No progress bar or load report from transformers while it reads a folder we chose."""
    from transformers.utils import logging as hf_logging

    bar = hf_logging.is_progress_bar_enabled()
    level = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        with _offline(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(level)
        if bar:
            hf_logging.enable_progress_bar()


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read {path}: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    return data


def config_signature(config: Any) -> str:
    """The architecture a Hugging Face config describes (names and versions left out)."""
    data = {k: v for k, v in config.to_dict().items()
            if not k.startswith("_") and k not in _VOLATILE_CONFIG_KEYS}
    return json.dumps(data, sort_keys=True, default=str)


def drop_pooler(model: nn.Module) -> nn.Module:
    """BERT-like models carry a pooler (dense + tanh on [CLS]) that sentence embeddings never
    use; without it the state dict holds no parameters that get no gradient."""
    if isinstance(getattr(model, "pooler", None), nn.Module):
        model.pooler = None
    return model


def pooling_from_config(data: dict[str, Any], where: Path) -> str:
    if isinstance(data.get("pooling_mode"), str):
        modes = [data["pooling_mode"]]
    elif isinstance(data.get("pooling_mode"), list):
        modes = list(data["pooling_mode"])
    else:
        modes = [mode for key, mode in _LEGACY_POOLING.items() if data.get(key)] or ["mean"]
    if len(modes) != 1 or modes[0] not in POOLING_MODES:
        raise ConfigError(f"{where}: pooling {'+'.join(map(str, modes))} is not supported (one of "
                          f"{', '.join(POOLING_MODES)}); set the tower's pooling option")
    return modes[0]


@dataclass
class FolderSource:
    """What a model folder says about the text encoder in it."""

    model_dir: Path  # the folder transformers loads (the ST Transformer module's folder)
    pooling: str
    max_seq_length: int | None  # None: from the tokenizer and the model's positions
    lower_case: bool


def inspect_folder(folder: Path) -> FolderSource:
    """Find the transformer, pooling and length settings of a HF or sentence-transformers folder."""
    if not folder.exists():
        raise ConfigError(f"text tower path {folder} does not exist")
    if not folder.is_dir():
        raise ConfigError(f"text tower path {folder} is not a folder")
    model_dir, pooling_dir, after = folder, folder / "1_Pooling", []
    if (folder / "modules.json").is_file():
        try:
            modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            modules = None
        if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
            raise ConfigError(f"{folder / 'modules.json'} is not a sentence-transformers module list")
        kinds = [(str(m.get("type", "")).rsplit(".", 1)[-1], folder / str(m.get("path", "")))
                 for m in modules]
        model_dir = next((p for k, p in kinds if k == "Transformer"), folder)
        pooling_dir = next((p for k, p in kinds if k == "Pooling"), pooling_dir)
        seen_pooling = False
        for kind, _ in kinds:
            if seen_pooling and kind != "Normalize":
                after.append(kind)
            seen_pooling = seen_pooling or kind == "Pooling"
    if not (model_dir / HF_CONFIG_FILE).is_file():
        raise ConfigError(f"text tower path {folder} is not a Hugging Face model folder "
                          f"(no {HF_CONFIG_FILE} in {model_dir})")
    if after:
        logger.warning("%s: sentence-transformers modules after the pooling (%s) are not used by "
                       "the jointspace tower", folder, ", ".join(after))
    pooling = "mean"
    if (pooling_dir / "config.json").is_file():
        pooling = pooling_from_config(read_json(pooling_dir / "config.json"), pooling_dir / "config.json")
    max_len, lower = None, False
    st_config = model_dir / "sentence_bert_config.json"
    if st_config.is_file():
        data = read_json(st_config)
        if data.get("max_seq_length"):
            max_len = int(data["max_seq_length"])
        lower = bool(data.get("do_lower_case", False))
    return FolderSource(model_dir, pooling, max_len, lower)


def prepare_tokenizer(tokenizer: Any, max_len: int) -> Any:
    """A copy of a ``tokenizers.Tokenizer`` that truncates to ``max_len`` and never pads."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(tokenizer.to_str())
    tok.no_padding()
    tok.enable_truncation(max_length=max_len)
    return tok


def native_bf16_device(device: torch.device) -> bool:
    return native_bf16(device)

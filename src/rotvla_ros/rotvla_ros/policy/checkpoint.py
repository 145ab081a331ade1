"""Checkpoint directories: the one format every training stage writes and the policy loads.

    <checkpoint>/
      config.json            {"format_version": 1, "model": RotVLAConfig as a dict,
                              "instructions": the instructions of the data it was trained on}
      backbone_config.json   the transformers InternVLConfig the backbone was built from
      tokenizer/             the backbone's tokenizer files (absent: UTF-8 byte tokenizer)
      model.safetensors      every weight of the model
      normalization.json     action (and state) statistics (ActionNormalizer)

Anything wrong with a checkpoint raises ``CheckpointError`` with the reason, before the
model that is serving is touched.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_model

from rotvla_common.text import read_json as read_bounded_json

from ..model.config import PRESETS, RotVLAConfig, from_dict, to_dict
from ..model.rotvla import RotVLA
from .normalization import ActionNormalizer, load_statistics, save_statistics

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
BACKBONE_CONFIG_FILE = "backbone_config.json"
WEIGHTS_FILE = "model.safetensors"
NORMALIZATION_FILE = "normalization.json"
TOKENIZER_DIR = "tokenizer"
REQUIRED_FILES = (CONFIG_FILE, BACKBONE_CONFIG_FILE, WEIGHTS_FILE, NORMALIZATION_FILE)


class CheckpointError(Exception):
    """A checkpoint that cannot be used, with the reason."""


def read_json(path: Path):
    """A checkpoint's JSON file (``rotvla_common.text.read_json``: bounded before parsing)."""
    try:
        return read_bounded_json(path)
    except ValueError as error:
        raise CheckpointError(str(error)) from None


def checkpoint_id(path: Path) -> str:
    """``<directory name>-<first 8 hex of the weights' SHA-256>``: names the exact weights."""
    digest = hashlib.sha256()
    with open(Path(path) / WEIGHTS_FILE, "rb") as weights:
        for block in iter(lambda: weights.read(1 << 24), b""):
            digest.update(block)
    return f"{Path(path).resolve().name}-{digest.hexdigest()[:8]}"


def save_checkpoint(
    model: RotVLA,
    normalizer: ActionNormalizer,
    path: Path,
    state_normalizer: ActionNormalizer | None = None,
    instructions: tuple[str, ...] = (),
) -> None:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = to_dict(model.config)
    config["vlm"]["pretrained_path"] = ""  # the weights are all here now
    document = {
        "type": "rotvla",  # the policy class that loads it (policy.registry)
        "format_version": FORMAT_VERSION,
        "model": config,
        "instructions": sorted(set(instructions)),
    }
    (path / CONFIG_FILE).write_text(json.dumps(document, indent=2))
    (path / BACKBONE_CONFIG_FILE).write_text(model.backbone.model.config.to_json_string())
    tokenizer = model.backbone.tokenizer
    if hasattr(tokenizer, "save_pretrained"):
        tokenizer.save_pretrained(path / TOKENIZER_DIR)
    save_statistics(path / NORMALIZATION_FILE, normalizer, state_normalizer)
    save_model(model, str(path / WEIGHTS_FILE))


def read_instructions(path: Path) -> tuple[str, ...]:
    """The instructions a checkpoint was trained on (empty: it does not say, as checkpoints
    written before they were recorded)."""
    data = read_json(Path(path) / CONFIG_FILE)
    instructions = data.get("instructions", []) if isinstance(data, dict) else []
    if not isinstance(instructions, list) or not all(isinstance(i, str) for i in instructions):
        raise CheckpointError(f"{Path(path) / CONFIG_FILE}: instructions must be a list of strings")
    return tuple(instructions)


def read_config(path: Path) -> RotVLAConfig:
    data = read_json(path / CONFIG_FILE)
    if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION or "model" not in data:
        raise CheckpointError(
            f"{path / CONFIG_FILE}: not a RotVLA checkpoint config of format version {FORMAT_VERSION}"
        )
    try:
        config = from_dict(RotVLAConfig, data["model"])
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path / CONFIG_FILE}: incompatible model configuration: {error}") from error
    if config.preset not in PRESETS:
        raise CheckpointError(f"{path / CONFIG_FILE}: unknown preset {config.preset!r} (known: {sorted(PRESETS)})")
    problems = config.problems()
    if problems:
        raise CheckpointError(f"{path / CONFIG_FILE}: unusable model configuration: {'; '.join(problems)}")
    return config


def load_checkpoint(
    path: Path, expected_action_names: tuple[str, ...] | None = None
) -> tuple[RotVLA, ActionNormalizer, ActionNormalizer | None]:
    """Build the model a checkpoint describes and load its weights (on the CPU, float32)."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint directory not found: {path}")
    missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
    if missing:
        raise CheckpointError(f"{path}: missing {', '.join(missing)}")
    config = read_config(path)
    if expected_action_names is not None and tuple(config.action_names) != tuple(expected_action_names):
        raise CheckpointError(
            f"{path}: action layout {list(config.action_names)} does not match "
            f"the robot's {list(expected_action_names)}"
        )
    read_json(path / NORMALIZATION_FILE)  # bounded before the statistics parse it
    try:
        normalizer, state_normalizer = load_statistics(path / NORMALIZATION_FILE)
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{path / NORMALIZATION_FILE}: {error}") from error
    if normalizer.names != tuple(config.action_names):
        raise CheckpointError(
            f"{path / NORMALIZATION_FILE}: statistics are for {list(normalizer.names)}, not the model's actions"
        )
    if config.use_state and (state_normalizer is None or state_normalizer.names != tuple(config.action_names)):
        raise CheckpointError(
            f"{path / NORMALIZATION_FILE}: the model takes the robot state but has no state "
            "statistics in the action layout"
        )

    from transformers import AutoTokenizer, InternVLConfig
    from transformers.initialization import no_init_weights

    try:
        backbone_config = InternVLConfig.from_dict(read_json(path / BACKBONE_CONFIG_FILE))
        problems = backbone_problems(backbone_config)
    except CheckpointError:
        raise
    except Exception as error:  # transformers validates with errors of its own (StrictDataclassError, ...)
        raise CheckpointError(f"{path / BACKBONE_CONFIG_FILE}: {type(error).__name__}: {error}") from error
    if problems:
        raise CheckpointError(f"{path / BACKBONE_CONFIG_FILE}: unusable backbone: {'; '.join(problems)}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path / TOKENIZER_DIR) if (path / TOKENIZER_DIR).is_dir() else None
        # Every parameter is overwritten below (strict load): skip the random initialisation,
        # seconds of CPU for the full-size model.
        with no_init_weights():
            model = RotVLA(config, backbone_hf_config=backbone_config, tokenizer=tokenizer)
    except Exception as error:  # a configuration the model code cannot be built from
        raise CheckpointError(f"{path}: cannot build the model: {type(error).__name__}: {error}") from error

    state = _read_weights(path / WEIGHTS_FILE)
    expected = model.state_dict()
    missing_keys = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = [
        f"{key} {tuple(state[key].shape)} (model {tuple(expected[key].shape)})"
        for key in sorted(set(state) & set(expected))
        if state[key].shape != expected[key].shape
    ]
    problems = []
    if missing_keys:
        problems.append(f"{len(missing_keys)} missing tensors (e.g. {missing_keys[:3]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensors (e.g. {unexpected[:3]})")
    if wrong_shape:
        problems.append(f"{len(wrong_shape)} tensors of the wrong shape (e.g. {wrong_shape[:3]})")
    if problems:
        raise CheckpointError(f"{path / WEIGHTS_FILE} does not fit the configured model: {'; '.join(problems)}")
    model.load_state_dict(state, strict=True)
    return model, normalizer, state_normalizer


def backbone_problems(hf_config) -> list[str]:
    """Dimensions of a stored transformers InternVLConfig that cannot build a model."""
    found = []
    for name, sub in (("vision_config", hf_config.vision_config), ("text_config", hf_config.text_config)):
        hidden, heads = getattr(sub, "hidden_size", 0), getattr(sub, "num_attention_heads", 0)
        if not (isinstance(hidden, int) and isinstance(heads, int) and hidden > 0 and heads > 0):
            found.append(f"{name}: hidden_size {hidden} / num_attention_heads {heads}")
        elif name == "vision_config" and hidden % heads:
            found.append(f"{name}: hidden_size {hidden} is not a multiple of {heads} heads")
        layers = getattr(sub, "num_hidden_layers", 0)
        if not isinstance(layers, int) or layers < 1:
            found.append(f"{name}: num_hidden_layers {layers}")
    kv = getattr(hf_config.text_config, "num_key_value_heads", None)
    heads = getattr(hf_config.text_config, "num_attention_heads", 0)
    if isinstance(kv, int) and isinstance(heads, int) and (kv < 1 or (heads > 0 and heads % kv)):
        found.append(f"text_config: {heads} heads do not share {kv} key/value heads")
    return found


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as weights:
            return {key: weights.get_tensor(key) for key in weights.keys()}  # noqa: SIM118 - safe_open is no mapping
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{path} is corrupt or unreadable: {error}") from error


# -- the Stage I latent action model -------------------------------------------------------

# 2: the encoder takes the frame change and the decoder predicts one. A format-1 LAM has weights
# of the same shapes that mean something else, so it is refused rather than loaded.
LAM_FORMAT = "rotvla-lam-2"


def save_lam(model, path: Path) -> str:
    """A LAM checkpoint directory: config.json (format, LAMConfig) and model.safetensors
    (every weight, the frozen DINOv2 included: the directory is all a later stage needs)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = to_dict(model.config)
    config["dino"]["pretrained_path"] = ""
    (path / CONFIG_FILE).write_text(json.dumps({"format_version": LAM_FORMAT, "lam": config}, indent=2))
    save_model(model, str(path / WEIGHTS_FILE))
    return checkpoint_id(path)


def load_lam(path: Path):
    """The frozen LAM a Stage I run wrote; raises CheckpointError."""
    from ..model.config import LAMConfig
    from ..model.lam import LatentActionModel

    path = Path(path)
    try:
        data = read_json(path / CONFIG_FILE)
    except OSError as error:
        raise CheckpointError(f"{path}: no readable LAM config ({error})") from error
    if not isinstance(data, dict):
        raise CheckpointError(f"{path / CONFIG_FILE}: not a LAM config")
    if data.get("format_version") != LAM_FORMAT:
        raise CheckpointError(
            f"{path}: not a LAM checkpoint of format {LAM_FORMAT!r} (found {data.get('format_version')!r});"
            " an older LAM must be trained again (rotvla_train stage1)"
        )
    from transformers.initialization import no_init_weights

    config = from_dict(LAMConfig, data["lam"])
    with no_init_weights():
        model = LatentActionModel(config)
    state = _read_weights(path / WEIGHTS_FILE)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not match the LAM config (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return model.eval()

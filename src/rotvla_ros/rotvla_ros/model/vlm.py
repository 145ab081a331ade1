"""The vision-language backbone: InternVL3.5 through transformers.

Tensors in, tensors out: images (B, V, 3, H, W) in [0, 1] and token ids -> the prefix
features the action expert attends to. The prefix is laid out as
``[view_1 image tokens | ... | view_V image tokens | instruction tokens]``: each view's
InternViT patches, pixel-shuffled and projected into the language model, then the
instruction, through the Qwen3 language model (causal, as it was pretrained); the last
hidden states of every position form the prefix.

Real weights load from a local HF-format directory (``InternVLForConditionalGeneration``,
e.g. InternVL3_5-1B-HF), with its tokenizer. Without one the model is built from the
configured dimensions with random weights and text is tokenised as UTF-8 bytes
(``ByteTokenizer``), which is what the tiny preset and tests use.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import VLMConfig

# InternViT's input normalisation (ImageNet statistics).
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


class ByteTokenizer:
    """UTF-8 bytes as tokens: 0 is padding, 1..256 the bytes, 257 the image placeholder."""

    pad_token_id = 0
    image_token_id = 257
    vocab_size = 258

    def encode(self, text: str) -> list[int]:
        return [b + 1 for b in text.encode("utf-8")]


def internvl_config_from_dims(config: VLMConfig, image_token_id: int):
    """A transformers ``InternVLConfig`` with the dimensions of ``config`` (random weights)."""
    from transformers import InternVLConfig, InternVLVisionConfig, Qwen3Config

    vision, text = config.vision, config.text
    return InternVLConfig(
        vision_config=InternVLVisionConfig(
            hidden_size=vision.hidden_size,
            num_hidden_layers=vision.num_hidden_layers,
            num_attention_heads=vision.num_attention_heads,
            intermediate_size=vision.intermediate_size,
            patch_size=(vision.patch_size, vision.patch_size),
            image_size=(vision.image_size, vision.image_size),
        ),
        text_config=Qwen3Config(
            vocab_size=text.vocab_size,
            hidden_size=text.hidden_size,
            num_hidden_layers=text.num_hidden_layers,
            num_attention_heads=text.num_attention_heads,
            num_key_value_heads=text.num_key_value_heads,
            head_dim=text.head_dim,
            intermediate_size=text.intermediate_size,
            rope_theta=text.rope_theta,
            max_position_embeddings=4096,
        ),
        image_token_id=image_token_id,
        downsample_ratio=config.downsample_ratio,
    )


class VisionLanguageBackbone(nn.Module):
    """Built one of three ways: from ``config.pretrained_path`` (real weights and tokenizer),
    from a stored transformers config ``hf_config`` (a checkpoint being loaded: weights
    follow), or from the dimensions in ``config`` (random weights, byte tokenizer)."""

    def __init__(self, config: VLMConfig, image_size: int, hf_config=None, tokenizer=None):
        super().__init__()
        from transformers import InternVLForConditionalGeneration, InternVLModel

        self.config = config
        if hf_config is not None:
            self.model = InternVLModel(hf_config)
            self.tokenizer = tokenizer or ByteTokenizer()
        elif config.pretrained_path:
            from transformers import AutoTokenizer

            full = InternVLForConditionalGeneration.from_pretrained(config.pretrained_path, dtype=torch.float32)
            self.model = full.model  # the LM head is not needed: the expert reads hidden states
            self.tokenizer = AutoTokenizer.from_pretrained(config.pretrained_path)
        else:
            self.tokenizer = ByteTokenizer()
            if config.text.vocab_size < ByteTokenizer.vocab_size:
                raise ValueError(f"text.vocab_size {config.text.vocab_size} < {ByteTokenizer.vocab_size} byte tokens")
            self.model = InternVLModel(internvl_config_from_dims(config, ByteTokenizer.image_token_id))
        hf = self.model.config
        self.image_token_id = hf.image_token_id
        self.pad_token_id = getattr(self.tokenizer, "pad_token_id", None) or 0
        vision_patch = hf.vision_config.patch_size
        vision_patch = vision_patch[0] if isinstance(vision_patch, (tuple, list)) else vision_patch
        downsample = hf.downsample_ratio
        grid = image_size // vision_patch
        self.tokens_per_image = int(grid * downsample) ** 2
        self.hidden_size = self.model.config.text_config.hidden_size
        self.register_buffer("image_mean", torch.tensor(IMAGE_MEAN).view(1, 1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(IMAGE_STD).view(1, 1, 3, 1, 1), persistent=False)

    def tokenize(self, instructions: list[str], pad_to_limit: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Instructions -> right-padded ids (B, L) and attention mask (B, L); L is the longest
        instruction's length, or ``max_instruction_tokens`` with ``pad_to_limit`` (static
        shapes for a captured graph; the padding is masked, so the prefix is the same)."""
        limit = self.config.max_instruction_tokens
        encoded = [self.tokenizer.encode(text)[:limit] or [self.pad_token_id] for text in instructions]
        length = limit if pad_to_limit else max(len(ids) for ids in encoded)
        ids = torch.full((len(encoded), length), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(encoded), length), dtype=torch.long)
        for row, tokens in enumerate(encoded):
            ids[row, : len(tokens)] = torch.tensor(tokens)
            mask[row, : len(tokens)] = 1
        return ids, mask

    def forward(
        self,
        images: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        view_mask: torch.Tensor | None = None,
    ):
        """images (B, V, 3, H, W) in [0, 1], input_ids/attention_mask (B, L), view_mask (B, V)
        (False: a view this sample lacks, its tokens masked out) -> prefix features
        (B, V * tokens_per_image + L, D) and their mask (B, N) (True = valid)."""
        batch, views = images.shape[:2]
        device = input_ids.device
        pixel_values = ((images - self.image_mean) / self.image_std).flatten(0, 1)  # (B*V, 3, H, W)
        image_ids = torch.full((batch, views * self.tokens_per_image), self.image_token_id, device=device)
        ids = torch.cat([image_ids, input_ids], dim=1)  # (B, N)
        image_mask = torch.ones_like(image_ids)
        if view_mask is not None:
            image_mask = view_mask.to(device, image_ids.dtype).repeat_interleave(self.tokens_per_image, dim=1)
        mask = torch.cat([image_mask, attention_mask.to(device)], dim=1)
        pixel_values = pixel_values.to(next(self.model.parameters()).dtype)
        out = self.model(input_ids=ids, pixel_values=pixel_values, attention_mask=mask)
        return out.last_hidden_state, mask.bool()  # (B, N, D), (B, N)

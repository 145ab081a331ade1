"""A chunk's inference as one replayable unit: the fast inference path.

``ChunkSampler`` takes the model's inputs at fixed shapes (the policy pads the instruction to
``max_instruction_tokens``; the padding is masked) and runs, with no host synchronisation:

- ``mode="graph"`` (CUDA): the vision-language prefix eagerly, then everything after it (the
  prefix's per-block keys/values, the attention bias, every flow step) replayed as one CUDA
  graph captured once: one launch instead of ~ steps x blocks x kernels. The prefix stays
  outside: run eagerly, transformers' InternVL forward checks its image-token count against
  the image features on the host (``get_placeholder_mask``), a sync a capture refuses.
- ``mode="compile"``: the whole chunk, prefix included, through ``torch.compile`` with
  fullgraph=True (a graph break, e.g. a host sync on data, fails the compile; transformers
  skips those checks under dynamo), ``reduce-overhead`` on CUDA (CUDA graphs again), inductor
  on the CPU.

Tensors in, tensors out: it imports no policy code. ``prepare`` does the capture or compile
(the policy calls it at load, within the warm-up) and is the only slow call.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .rotvla import RotVLA

MODES = ("eager", "graph", "compile")  # eager: the reference path, which needs no sampler


class ChunkSampler:
    def __init__(self, model: RotVLA, instruction_tokens: int, mode: str, batch: int = 1):
        if mode not in MODES[1:]:
            raise ValueError(f"unknown fast inference mode {mode!r} (one of {MODES[1:]})")
        parameter = next(model.parameters())
        device, dtype = parameter.device, parameter.dtype
        if mode == "graph" and device.type != "cuda":
            raise ValueError("inference mode 'graph' captures a CUDA graph: it needs a CUDA device")
        self.model, self.mode = model, mode
        self.with_prefix = mode == "compile"
        config = model.config
        views, size = len(config.camera_names), config.image_size
        # Static inputs: each chunk copies into these; a captured graph reads them in place.
        if self.with_prefix:
            self.inputs = [
                torch.zeros(batch, views, 3, size, size, device=device, dtype=dtype),  # images (B, V, 3, S, S)
                torch.zeros(batch, instruction_tokens, device=device, dtype=torch.long),  # ids (B, L)
                torch.ones(batch, instruction_tokens, device=device, dtype=torch.long),  # mask (B, L)
            ]
            if config.use_state:
                self.inputs.append(torch.zeros(batch, config.action_dim, device=device, dtype=dtype))  # (B, A)
        else:
            prefix_len = views * model.backbone.tokens_per_image + instruction_tokens + int(config.use_state)
            self.inputs = [
                torch.zeros(batch, prefix_len, model.backbone.hidden_size, device=device, dtype=dtype),  # (B, N, C)
                torch.ones(batch, prefix_len, device=device, dtype=torch.bool),  # (B, N)
            ]
        self.noise = model.initial_noise(batch, device)
        self._graph: torch.cuda.CUDAGraph | None = None
        self._outputs: list[torch.Tensor] | None = None
        self._compiled = None
        if mode == "compile":
            self._compiled = torch.compile(
                self._chunk, mode="reduce-overhead" if device.type == "cuda" else "default", fullgraph=True
            )
        self.ready = False

    def _chunk(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        """The unit: (images, ids, mask[, state], *noise) with the prefix, else (prefix, mask, *noise)."""
        count = len(self.inputs)
        tensors, noise = inputs[:count], list(inputs[count:])
        if self.with_prefix:
            tensors = self.model.prefix_features(*tensors)  # (B, N, C), (B, N)
        cache = self.model.expert.prefix_cache(*tensors)
        return self.model.denoise(cache, noise)  # [(B, K, n*n), (B, H, A)] float32

    @torch.inference_mode()
    def prepare(self, warmup_runs: int = 3) -> None:
        """Compile or capture (once per checkpoint): the slow part, done before the sampler serves."""
        if self.ready:
            return
        statics = [*self.inputs, *self.noise]
        if self.mode == "compile":
            self._chunk(*statics)  # eagerly once: transformers installs its output hooks on a first call
            for _ in range(warmup_runs):  # reduce-overhead records its graph after a few calls
                self._compiled(*statics)
        else:  # graph: warm up on a side stream (allocator, cuBLAS workspaces), then capture
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(warmup_runs):
                    self._chunk(*statics)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            # thread_local: the policy node's inference thread keeps serving while a new
            # checkpoint is captured on its loader thread.
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                self._outputs = self._chunk(*statics)
            self._graph = graph
        self.ready = True

    @torch.inference_mode()
    def __call__(
        self,
        images: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        state: torch.Tensor | None,
        noise: list[torch.Tensor],
        on_prefix: Callable[[], None] | None = None,
    ) -> list[torch.Tensor]:
        """The model's inputs (``RotVLA.prefix_features``; ids and mask at the static length) and
        noise (``initial_noise``) -> the denoised [plan (B, K, n*n), actions (B, H, A)] in
        float32 (the plan not yet on SO(n)). ``on_prefix`` is called once the prefix is
        computed, when it is computed outside the unit (``graph``)."""
        if not self.ready:
            raise RuntimeError("ChunkSampler.prepare() must run before it samples")
        if self.with_prefix:
            inputs = [images, input_ids, attention_mask] + ([state] if state is not None else [])
        else:
            inputs = list(self.model.prefix_features(images, input_ids, attention_mask, state))
            if on_prefix is not None:
                on_prefix()
        for static, x in zip(self.inputs, inputs, strict=True):
            if static.shape != x.shape:
                raise ValueError(f"this sampler takes inputs of shape {tuple(static.shape)}, got {tuple(x.shape)}")
            static.copy_(x)
        for static, x in zip(self.noise, noise, strict=True):
            static.copy_(x)
        if self.mode == "compile":
            outputs = self._compiled(*self.inputs, *self.noise)
        else:
            self._graph.replay()
            outputs = self._outputs
        # The next run overwrites these (a graph's outputs live in its pool): the caller gets copies.
        return [x.clone() for x in outputs]

"""The chunk's denoising as one replayable unit: the fast inference path.

``ChunkSampler`` runs, for a prefix of fixed length N (the policy pads the instruction to
``max_instruction_tokens``), everything after the vision-language backbone: the prefix's
per-block keys/values, the attention bias, and every flow step. Its shapes never change, it
never waits for the host, and it holds its inputs in static tensors, so that:

- ``mode="graph"`` (CUDA): the whole of it is captured once as a CUDA graph and replayed per
  chunk: one launch instead of ~ steps x blocks x kernels, no allocation, no host sync;
- ``mode="compile"``: it is compiled with ``torch.compile`` (``reduce-overhead`` on CUDA,
  which graph-captures too; inductor's C++ on the CPU);
- ``mode="eager"``: the same function, plainly run (the reference path's numbers).

Tensors in, tensors out: it imports no policy code. ``prepare`` does the capture/compile
(the policy calls it at load, within the warm-up) and is the only slow call.
"""

from __future__ import annotations

import torch

from .rotvla import RotVLA

MODES = ("eager", "graph", "compile")


class ChunkSampler:
    def __init__(self, model: RotVLA, prefix_len: int, mode: str = "eager", batch: int = 1):
        if mode not in MODES:
            raise ValueError(f"unknown inference mode {mode!r} (one of {MODES})")
        parameter = next(model.parameters())
        if mode == "graph" and parameter.device.type != "cuda":
            raise ValueError("inference mode 'graph' captures a CUDA graph: it needs a CUDA device")
        self.model, self.mode, self.prefix_len = model, mode, prefix_len
        device, dtype = parameter.device, parameter.dtype
        context = model.backbone.hidden_size
        # Static inputs: each chunk copies into these; a captured graph reads them in place.
        self.prefix = torch.zeros(batch, prefix_len, context, device=device, dtype=dtype)  # (B, N, C)
        self.mask = torch.ones(batch, prefix_len, device=device, dtype=torch.bool)  # (B, N)
        self.noise = model.initial_noise(batch, device)
        self._graph: torch.cuda.CUDAGraph | None = None
        self._outputs: list[torch.Tensor] | None = None
        self._run = None
        if mode == "compile":  # fullgraph: a graph break (a host sync on data, say) fails the compile
            self._run = torch.compile(self._denoise, mode=self._compile_mode(device), fullgraph=True)
        self.ready = mode == "eager"

    @staticmethod
    def _compile_mode(device: torch.device) -> str:
        return "reduce-overhead" if device.type == "cuda" else "default"

    def _denoise(self, prefix: torch.Tensor, mask: torch.Tensor, noise: list[torch.Tensor]) -> list[torch.Tensor]:
        cache = self.model.expert.prefix_cache(prefix, mask)
        return self.model.denoise(cache, noise)  # [(B, K, n*n), (B, H, A)] float32

    @torch.inference_mode()
    def prepare(self, warmup_runs: int = 3) -> None:
        """Compile or capture (once per checkpoint): the slow part, done before the sampler serves."""
        if self.ready:
            return
        if self.mode == "compile":
            for _ in range(warmup_runs):  # reduce-overhead records its graph after a few calls
                self._run(self.prefix, self.mask, self.noise)
        else:  # graph: warm up on a side stream (allocator, cuBLAS workspaces), then capture
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(warmup_runs):
                    self._denoise(self.prefix, self.mask, self.noise)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            # thread_local: the policy node's inference thread keeps serving while a new
            # checkpoint is captured on its loader thread.
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                self._outputs = self._denoise(self.prefix, self.mask, self.noise)
            self._graph = graph
        self.ready = True

    @torch.inference_mode()
    def __call__(self, prefix: torch.Tensor, mask: torch.Tensor, noise: list[torch.Tensor]) -> list[torch.Tensor]:
        """prefix (B, N, C), mask (B, N), noise (``initial_noise``) -> the denoised
        [plan (B, K, n*n), actions (B, H, A)] in float32 (the plan not yet on SO(n))."""
        if prefix.shape != self.prefix.shape:
            expected, got = tuple(self.prefix.shape), tuple(prefix.shape)
            raise ValueError(f"this sampler takes a prefix of shape {expected}, got {got}")
        if self.mode == "eager":
            return self._denoise(prefix, mask, noise)
        if not self.ready:
            raise RuntimeError("ChunkSampler.prepare() must run before it samples")
        self.prefix.copy_(prefix)
        self.mask.copy_(mask)
        for static, x in zip(self.noise, noise):
            static.copy_(x)
        if self.mode == "compile":
            outputs = self._run(self.prefix, self.mask, self.noise)
        else:
            self._graph.replay()
            outputs = self._outputs
        # The next replay overwrites the graph's outputs: the caller gets its own copies.
        return [x.clone() for x in outputs]

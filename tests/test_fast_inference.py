"""Issue 16: the fast inference path (``rotvla_ros.model.fast_sampling``) gives the reference
path's chunks. On the CPU its form is ``compile`` (the whole chunk, prefix included, through
torch.compile with fullgraph=True: a graph break, e.g. a host synchronisation on data, fails
the compile); ``graph`` captures the same denoising as a CUDA graph and is checked by
benchmarks/gpu_measurements.sh on a GPU."""

import numpy as np
import pytest
import torch

from rotvla_ros.model.config import tiny_config
from rotvla_ros.model.fast_sampling import ChunkSampler
from rotvla_ros.model.rotvla import open_zero_gates
from rotvla_ros.policy import RotVLAPolicy

INSTRUCTIONS = ("", "stack the cups", "put the red block on the plate, then close the drawer " * 4)


@pytest.fixture(scope="module")
def reference():
    """A tiny policy whose chunks depend on the prefix (``open_zero_gates``)."""
    torch.manual_seed(0)
    policy = RotVLAPolicy.from_config(tiny_config(), device="cpu", dtype="float32")
    open_zero_gates(policy.model)
    observations = [policy.dummy_observation(instruction) for instruction in INSTRUCTIONS[:2]]
    chunks = [policy.predict(observation, seed=0).actions for observation in observations]
    assert np.abs(chunks[0] - chunks[1]).max() > 1e-2  # the instruction reaches the actions
    return policy


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    "dtype, tolerance",
    # bf16: the padded instruction's masked tokens change the order of the backbone's sums,
    # and bf16 keeps 8 bits: the chunks agree to a few of its steps.
    [("float32", 1e-5), ("bfloat16", 5e-2)],
)
def test_the_compiled_path_gives_the_reference_chunks_for_seeds_and_instructions(reference, dtype, tolerance):
    eager = RotVLAPolicy(reference.model, reference.normalizer, device="cpu", dtype=dtype, inference_mode="eager")
    fast = RotVLAPolicy(reference.model, reference.normalizer, device="cpu", dtype=dtype, inference_mode="compile")
    assert not fast.sampler.ready
    assert fast.prepare() > 0 and fast.sampler.ready and fast.prepare() == 0.0  # compiled once
    # Static shapes: the one compiled graph serves every instruction length and seed.
    with torch._dynamo.config.patch(error_on_recompile=True):
        for instruction in INSTRUCTIONS:
            observation = eager.dummy_observation(instruction)
            for seed in (0, 1, 2):
                a, b = eager.predict(observation, seed=seed), fast.predict(observation, seed=seed)
                assert np.abs(a.actions - b.actions).max() <= tolerance * max(1.0, np.abs(a.actions).max())
                assert np.abs(a.plan - b.plan).max() <= tolerance
                assert "denoise" in b.timings and not any(k.startswith("denoise_step_") for k in b.timings)
                assert "vl_prefix" not in b.timings  # compile: the prefix is inside the compiled chunk
    pixels, ids, mask, state = eager.preprocess(eager.dummy_observation("stack the cups"))  # ids unpadded
    with pytest.raises(ValueError, match="inputs of shape"):
        fast.sampler(pixels, ids, mask, state, eager.model.initial_noise(1, "cpu"))


def test_the_sampler_refuses_what_it_was_not_built_for(reference):
    with pytest.raises(ValueError, match="needs a CUDA device"):
        ChunkSampler(reference.model, 10, mode="graph")
    with pytest.raises(ValueError, match="unknown inference mode"):
        RotVLAPolicy(reference.model, reference.normalizer, device="cpu", inference_mode="fast")
    sampler = ChunkSampler(reference.model, 10, mode="compile")
    pixels, ids, mask, state = reference.preprocess(reference.dummy_observation())
    with pytest.raises(RuntimeError, match="prepare"):
        sampler(pixels, ids, mask, state, reference.model.initial_noise(1, "cpu"))


def test_a_padded_instruction_is_the_same_prefix(reference):
    """What makes the static shapes possible: padding the instruction to its limit changes
    no valid position of the prefix (the language model is causal, the padding masked)."""
    model = reference.model
    observation = reference.dummy_observation("stack the cups")
    pixels, ids, mask, state = reference.preprocess(observation)
    padded_ids, padded_mask = model.backbone.tokenize(["stack the cups"], pad_to_limit=True)
    assert padded_ids.shape[1] == model.config.vlm.max_instruction_tokens > ids.shape[1]
    with torch.no_grad():
        prefix, valid = model.prefix_features(pixels, ids, mask, state)
        padded, padded_valid = model.prefix_features(pixels, padded_ids, padded_mask, state)
    length = prefix.shape[1]
    assert torch.equal(padded_valid[:, :length], valid) and not padded_valid[:, length:].any()
    assert torch.allclose(padded[:, :length], prefix, atol=1e-5)

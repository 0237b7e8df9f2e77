"""Named engine profiles: a model on a GPU, with the serving defaults vLLM would use.

Every profile is derived from a measured H200 table (see `sim.engine.calibration`) by the same
method (`sim.engine.steptime.StepTimeModel.fit`). Assumptions, stated once here:

- GPU memory as `nvidia-smi` reports it: H200 143,771 MiB, H100 SXM 81,559 MiB; vLLM's
  `gpu_memory_utilization` 0.9; a non-KV reserve (activations for a full token budget, CUDA
  graphs, allocator slack) of 3 GiB for 8B and 4 GiB for a 70B shard; the rest, after weights,
  is KV cache in 16-token blocks.
- H100 SXM has the same GH100 compute as H200 but HBM3 at 3.35 TB/s against HBM3e at 4.8 TB/s:
  its effective bandwidth is the H200 fit scaled by 3.35/4.8, compute rate and corrections kept.
- Per-step engine overhead (scheduler, sampler, detokeniser, output processing): 2.0 ms for a
  single-GPU engine, 3.0 ms for a tensor-parallel-4 engine (it also coordinates four workers).
- Llama-3-70B at TP=4: two all-reduces per layer x 80 layers = 160 per step, 12 us latency each
  plus ring traffic (2(n-1)/n x tokens x 8192 x 2 bytes) at 450 GB/s NVLink per direction.
- Serving defaults: max_num_seqs 256, max_num_batched_tokens 8192 (chunked prefill on),
  max_model_len 32768 (Llama-3.1 served with `--max-model-len 32768`), block size 16.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from sim.engine.calibration import TABLE_8B_H200, TABLE_70B_TP4_H200, load_table
from sim.engine.steptime import StepTimeModel, TensorParallel

MIB = 1 << 20
GIB = 1 << 30
H200_BYTES = 143_771 * MIB
H100_BYTES = 81_559 * MIB
BLOCK_SIZE = 16

# attention FLOPs per (query token, key token): 2 matmuls x 2 FLOPs x layers x q-heads x head_dim
_ATTN_8B = 4 * 32 * 32 * 128
_ATTN_70B_SHARD = 4 * 80 * 16 * 128


@dataclass(frozen=True, slots=True, kw_only=True)
class Profile:
    """Everything the engine needs to know about one model-on-GPU combination."""

    name: str
    step: StepTimeModel
    gpu_memory_bytes: int
    gpu_memory_utilization: float = 0.9
    reserve_bytes: int
    block_size: int = BLOCK_SIZE
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    max_model_len: int = 32768
    default_max_tokens: int = 256

    @property
    def num_kv_blocks(self) -> int:
        """KV-cache blocks that fit after weights and the reserve."""
        free = (
            self.gpu_memory_bytes * self.gpu_memory_utilization
            - self.step.weight_bytes
            - self.reserve_bytes
        )
        per_block = self.step.kv_bytes_per_token * self.block_size
        return max(int(free // per_block), 0)


PROFILE_NAMES: tuple[str, ...] = ("llama3-8b-h200", "llama3-8b-h100", "llama3-70b-tp4-h200")


class UnknownProfileError(ValueError):
    """The profile name is not one of `PROFILE_NAMES`."""


@functools.cache
def get_profile(name: str, calibration_dir: Path | None = None) -> Profile:
    """The profile called `name`, built from the calibration tables (cached)."""
    if name == "llama3-8b-h200":
        table = load_table(TABLE_8B_H200, calibration_dir)
        step = StepTimeModel.fit(table, attn_flops_per_pair=_ATTN_8B, overhead_s=0.002)
        return Profile(name=name, step=step, gpu_memory_bytes=H200_BYTES, reserve_bytes=3 * GIB)
    if name == "llama3-8b-h100":
        table = load_table(TABLE_8B_H200, calibration_dir)
        step = StepTimeModel.fit(
            table, attn_flops_per_pair=_ATTN_8B, overhead_s=0.002, bandwidth_scale=3.35 / 4.8
        )
        return Profile(name=name, step=step, gpu_memory_bytes=H100_BYTES, reserve_bytes=3 * GIB)
    if name == "llama3-70b-tp4-h200":
        table = load_table(TABLE_70B_TP4_H200, calibration_dir)
        tp = TensorParallel(
            size=4,
            allreduces_per_step=160,
            allreduce_latency_s=12e-6,
            link_bytes_per_s=450e9,
            hidden_size=8192,
        )
        step = StepTimeModel.fit(
            table, attn_flops_per_pair=_ATTN_70B_SHARD, overhead_s=0.003, tp=tp
        )
        return Profile(name=name, step=step, gpu_memory_bytes=H200_BYTES, reserve_bytes=4 * GIB)
    raise UnknownProfileError(f"unknown profile {name!r}; known: {', '.join(PROFILE_NAMES)}")

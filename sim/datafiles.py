"""Where the simulator's data files are: an override, the shared data beside the repo, or the copy
packaged with surgescale.

The simulator needs three kinds of measured or published data: the GPU calibration tables, the
Azure LLM inference traces 2023 (CC-BY-4.0, attribution kept beside the copy) and Karpenter's
karpenter.sh CRDs. A copy of each ships inside the package (`sim/data/`), so `surgescale demo`
works from a plain install; an environment variable or the project's `../shared/data/` (when
present) takes precedence.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGED = Path(__file__).resolve().parent / "data"
"""The copies shipped with the package."""

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
"""The project's shared data directory, beside a source checkout."""


def data_dir(kind: str, env: str) -> Path:
    """The directory of one kind of data (`calibration`, `traces/azure2023`, `karpenter-crds`).

    `$env` if set; else `<repo>/../shared/data/<kind>` if it exists; else the packaged copy.
    """
    override = os.environ.get(env)
    if override:
        return Path(override)
    shared = SHARED / kind
    if shared.is_dir():
        return shared
    return PACKAGED / kind

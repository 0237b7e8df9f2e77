"""Where the simulator's data files are: an override, else the copy packaged with surgescale.

The simulator needs three kinds of measured or published data: the GPU calibration tables, the
Azure LLM inference traces 2023 (CC-BY-4.0, attribution kept beside the copy) and Karpenter's
karpenter.sh CRDs. A copy of each ships inside the package (`sim/data/`), so `surgescale demo`
works from a plain install or a checkout alike; an environment variable takes precedence.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGED = Path(__file__).resolve().parent / "data"
"""The copies shipped with the package."""


def data_dir(kind: str, env: str) -> Path:
    """The directory of one kind of data (`calibration`, `traces/azure2023`, `karpenter-crds`).

    `$env` if set; else the packaged copy.
    """
    override = os.environ.get(env)
    if override:
        return Path(override)
    return PACKAGED / kind

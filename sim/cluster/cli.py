"""`surgescale sim cluster`: run the simulated Kubernetes API server until interrupted.

    surgescale sim cluster --port 6443 --nodepool gpu:8:60 --speed 10 --kubeconfig sim.kubeconfig

`--nodepool NAME:GPUS_PER_NODE:BOOT_S[:REPLICAS]` adds a static NodePool (scaled through its
`scale` subresource, initially REPLICAS=0 nodes); `--dynamic-nodepool
NAME:GPUS_PER_NODE:BOOT_S[:CONSOLIDATE_AFTER[:GPU_LIMIT]]` adds one that provisions for pending
pods. The kubeconfig written points kubectl and kubernetes_asyncio at the server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from pathlib import Path

from .cluster import ClusterOptions, NodePoolConfig, start_cluster


def parse_nodepool(text: str, *, dynamic: bool) -> NodePoolConfig:
    parts = text.split(":")
    if len(parts) < 3 or not parts[0]:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected NAME:GPUS_PER_NODE:BOOT_S" + ("" if dynamic else "[:REPLICAS]")
        )
    try:
        gpus, boot = int(parts[1]), float(parts[2])
        if gpus <= 0 or boot < 0:
            raise ValueError("GPUS_PER_NODE must be > 0 and BOOT_S >= 0")
        if dynamic:
            return NodePoolConfig(
                name=parts[0],
                gpus_per_node=gpus,
                boot_seconds=boot,
                replicas=None,
                consolidate_after=parts[3] if len(parts) > 3 else "30s",
                limit_gpus=int(parts[4]) if len(parts) > 4 else None,
            )
        return NodePoolConfig(
            name=parts[0],
            gpus_per_node=gpus,
            boot_seconds=boot,
            replicas=int(parts[3]) if len(parts) > 3 else 0,
        )
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from exc


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="surgescale sim cluster", description="Run the simulated Kubernetes API server."
    )
    p.add_argument("--host", default="127.0.0.1", help="listen address (loopback)")
    p.add_argument("--port", type=int, default=6443, help="listen port (0 = any free port)")
    p.add_argument(
        "--nodepool",
        action="append",
        default=[],
        type=lambda s: parse_nodepool(s, dynamic=False),
        metavar="NAME:GPUS_PER_NODE:BOOT_S[:REPLICAS]",
        help="static NodePool",
    )
    p.add_argument(
        "--dynamic-nodepool",
        action="append",
        default=[],
        type=lambda s: parse_nodepool(s, dynamic=True),
        metavar="NAME:GPUS:BOOT_S[:CONSOLIDATE_AFTER[:GPU_LIMIT]]",
        help="dynamic NodePool (provisions for pending pods)",
    )
    p.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="simulated seconds per wall second for all lifecycle delays",
    )
    p.add_argument(
        "--kubeconfig",
        type=Path,
        default=Path("surgescale-sim.kubeconfig"),
        help="where to write a kubeconfig for this server",
    )
    p.add_argument(
        "--karpenter-crds",
        type=Path,
        default=None,
        help="directory with the karpenter.sh CRDs (default: the copy in sim/data/karpenter-crds)",
    )
    p.add_argument(
        "--no-capacity-buffers",
        action="store_true",
        help="do not serve the CapacityBuffer CRD (autoscaling.x-k8s.io), as on a cluster "
        "without it",
    )
    p.add_argument("--pod-port", type=int, default=8000, help="port of simulated vLLM pods")
    p.add_argument(
        "--load-seconds",
        type=float,
        default=30.0,
        help="default model load time (simulated s) when a pod names none",
    )
    p.add_argument("--log-level", default="INFO")
    return p


async def _serve(args: argparse.Namespace) -> int:
    options = ClusterOptions(
        speed=args.speed,
        nodepools=tuple(args.nodepool + args.dynamic_nodepool),
        karpenter_crds=args.karpenter_crds,
        capacity_buffers=not args.no_capacity_buffers,
        pod_port=args.pod_port,
        default_load_s=args.load_seconds,
        full_gc_every_s=300.0,
    )
    cluster = await start_cluster(options, host=args.host, port=args.port)
    path = cluster.write_kubeconfig(args.kubeconfig)
    print(
        f"simulated cluster serving at {cluster.url} (speed x{args.speed}); kubeconfig: {path}",
        flush=True,
    )
    print(f"  try: kubectl --kubeconfig {path} get nodepools,nodes,pods", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await cluster.stop()
    return 0


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.speed <= 0:
        print("surgescale sim cluster: --speed must be > 0")
        return 2
    try:
        return asyncio.run(_serve(args))
    except FileNotFoundError as exc:
        print(f"surgescale sim cluster: {exc}")
        return 2
    except OSError as exc:
        print(f"surgescale sim cluster: cannot listen on {args.host}:{args.port}: {exc}")
        return 2

"""`surgescale sim load`: replay a trace or a synthetic pattern against an OpenAI-compatible URL.

Prints a summary table and, as its last line, one JSON object of figures; `--out` writes one CSV
row per request. The work is `sim.load.runner.run_load`; traces are `sim.load.trace`, patterns
`sim.load.patterns`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import aiohttp
import orjson

from sim.load.patterns import PATTERNS, Sizes, pattern
from sim.load.records import TraceRequest
from sim.load.runner import run_load
from sim.load.summary import CsvRecorder, render
from sim.load.trace import TraceError, default_traces_dir, read_trace


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="surgescale sim load", description=__doc__)
    p.add_argument("--target", required=True, help="base URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--model", default=None, help="model name (default: the first of /v1/models)")
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--trace",
        default=None,
        help="trace file (Azure 2023 CSV or JSONL); 'code' or 'conv' name the Azure traces "
        f"in {default_traces_dir()}",
    )
    src.add_argument("--pattern", choices=PATTERNS, default=None, help="synthetic arrivals")
    p.add_argument("--format", choices=("azure", "jsonl"), default=None, help="trace format")
    p.add_argument("--limit", type=int, default=None, help="use only the first N trace requests")
    p.add_argument(
        "--time-scale", type=float, default=1.0, help="speed-up: 6 replays 1 h in 10 min"
    )
    p.add_argument("--duration", type=float, default=None, help="cap on the send window (s)")
    p.add_argument("--rate", type=float, default=2.0, help="pattern base rate (req/s)")
    p.add_argument("--peak", type=float, default=None, help="pattern high rate (default 4x rate)")
    p.add_argument("--at", type=float, default=None, help="step/flash start (s)")
    p.add_argument("--period", type=float, default=None, help="sine period (s)")
    p.add_argument("--pattern-duration", type=float, default=60.0, help="pattern length (s)")
    p.add_argument("--input-tokens", type=int, default=512)
    p.add_argument("--output-tokens", type=int, default=128)
    p.add_argument("--sizes-from", default=None, help="draw pattern sizes from this trace")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--concurrency", type=int, default=512, help="max requests in flight")
    p.add_argument("--api", choices=("chat", "completions"), default="chat")
    p.add_argument("--timeout", type=float, default=600.0, help="per-request timeout (s)")
    p.add_argument("--ttft-slo", type=float, default=1.0, help="TTFT SLO for attainment (s)")
    p.add_argument("--out", default=None, help="CSV of per-request results")
    p.add_argument("--progress", action="store_true", help="progress bar (default on a TTY)")
    return p


def _resolve_trace(name: str) -> Path:
    if name in ("code", "conv"):
        return default_traces_dir() / f"AzureLLMInferenceTrace_{name}.csv"
    return Path(name)


def build_requests(args: argparse.Namespace) -> list[TraceRequest]:
    if args.trace:
        return read_trace(_resolve_trace(args.trace), fmt=args.format, limit=args.limit)
    sizes = Sizes(input_tokens=args.input_tokens, output_tokens=args.output_tokens)
    if args.sizes_from:
        sizes = Sizes.from_trace(read_trace(_resolve_trace(args.sizes_from), fmt=args.format))
    return pattern(
        args.pattern or "poisson",
        rate=args.rate,
        duration=args.pattern_duration,
        peak=args.peak,
        at=args.at,
        period=args.period,
        sizes=sizes,
        seed=args.seed,
    )


async def _discover_model(target: str) -> str:
    timeout = aiohttp.ClientTimeout(total=10)
    async with (
        aiohttp.ClientSession(timeout=timeout) as http,
        http.get(target.rstrip("/") + "/v1/models") as r,
    ):
        r.raise_for_status()
        data = await r.json()
    return str(data["data"][0]["id"])


async def _run(args: argparse.Namespace, requests: list[TraceRequest]) -> int:
    model = args.model or await _discover_model(args.target)
    recorder = CsvRecorder(args.out) if args.out else None
    try:
        report = await run_load(
            requests,
            target_url=args.target,
            model=model,
            time_scale=args.time_scale,
            concurrency=args.concurrency,
            duration=args.duration,
            api=args.api,
            request_timeout=args.timeout,
            ttft_slo_s=args.ttft_slo,
            recorder=recorder,
            progress=args.progress or sys.stderr.isatty(),
        )
    finally:
        if recorder is not None:
            recorder.close()
    print(render(report.figures))
    print(orjson.dumps(report.figures).decode())
    return 0


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        requests = build_requests(args)
    except (TraceError, ValueError) as exc:
        print(f"surgescale sim load: {exc}", file=sys.stderr)
        return 2
    if not requests:
        print("surgescale sim load: no requests to send", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(args, requests))
    except (aiohttp.ClientError, OSError) as exc:
        print(f"surgescale sim load: cannot reach {args.target}: {exc}", file=sys.stderr)
        return 1

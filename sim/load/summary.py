"""Per-request results, the CSV recorder, and the run summary (percentiles, SLO attainment).

`RequestResult` (`sim.load.records`) is what the runner (`sim.load.runner`) records for every
request, whatever happened to it; `CsvRecorder` appends each one as soon as it ends (nothing is lost if the run is
interrupted); `summarize` turns a list into figures (percentiles by nearest rank:
`surgescale.stats.percentile`); `render` prints them for humans.
"""

from __future__ import annotations

import csv
import dataclasses
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any

from sim.load.records import RequestResult
from surgescale.slo import Slo
from surgescale.stats import percentile

FIELDS = [f.name for f in dataclasses.fields(RequestResult)]


class CsvRecorder:
    """Writes one CSV row per finished request, flushed as it goes."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._fh: IO[str] = self.path.open("w", newline="")
        self._writer = csv.DictWriter(self._fh, fieldnames=FIELDS)
        self._writer.writeheader()

    def write(self, result: RequestResult) -> None:
        row = dataclasses.asdict(result)
        self._writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def served_ttfts(results: Iterable[RequestResult]) -> list[float]:
    """TTFTs of the requests that streamed to their end (what every TTFT percentile is of)."""
    return [r.ttft_s for r in results if r.ok and r.ttft_s is not None]


def within_slo(results: Iterable[RequestResult], slo: Slo) -> int:
    """How many requests streamed to their end with a first token by their deadline
    (`Slo.ttft_met`); a failed request misses the SLO."""
    return sum(1 for r in results if r.ok and slo.ttft_met(r.ttft_s, r.prompt_tokens))


def summarize(
    results: Sequence[RequestResult],
    *,
    wall_s: float,
    ttft_slo_s: float,
    ttft_per_input_token_s: float = 0.0,
) -> dict[str, Any]:
    """Figures of a load-generator run (the demo's run is `sim.demo.summary.summarize`, the
    evaluator's `sim.evaluate.metrics.summarize`). SLO attainment counts every request: failed
    ones miss the SLO.

    "Within SLO" is `surgescale.slo.Slo` (TTFT base `ttft_slo_s` plus the per-input-token
    allowance times the request's prompt tokens)."""
    slo = Slo(ttft_base_s=ttft_slo_s, ttft_per_input_token_s=ttft_per_input_token_s)
    ok = [r for r in results if r.ok]
    ttft = served_ttfts(results)
    tpot = [r.tpot_s for r in ok if r.tpot_s is not None]
    e2e = [r.e2e_s for r in ok if r.e2e_s is not None]
    met = within_slo(results, slo)
    out_tokens = sum(r.output_tokens for r in results)
    lateness = [r.sent_s - r.scheduled_s for r in results if r.sent_s is not None]
    figures: dict[str, Any] = {
        "requests": len(results),
        "ok": len(ok),
        "statuses": dict(sorted(Counter(r.status for r in results).items())),
        "wall_s": round(wall_s, 3),
        "throughput_rps": round(len(ok) / wall_s, 3) if wall_s > 0 else 0.0,
        "output_tokens_per_s": round(out_tokens / wall_s, 1) if wall_s > 0 else 0.0,
        "ttft_slo_s": ttft_slo_s,
        "slo_attainment": round(met / len(results), 4) if results else None,
        "send_lateness_p99_ms": _ms(percentile(lateness, 99)),
    }
    for name, values in (("ttft", ttft), ("tpot", tpot), ("e2e", e2e)):
        for q in (50, 95, 99):
            figures[f"{name}_p{q}_ms"] = _ms(percentile(values, q))
    return figures


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1e3, 3)


def render(figures: dict[str, Any]) -> str:
    """A small human-readable table of the figures."""
    lines = [
        f"requests {figures['requests']}  ok {figures['ok']}  statuses {figures['statuses']}",
        f"wall {figures['wall_s']} s  throughput {figures['throughput_rps']} req/s  "
        f"{figures['output_tokens_per_s']} output tok/s",
        f"TTFT SLO {figures['ttft_slo_s']} s: attainment {figures['slo_attainment']}",
        f"{'':8}{'p50 ms':>12}{'p95 ms':>12}{'p99 ms':>12}",
    ]
    for name in ("ttft", "tpot", "e2e"):
        cells = "".join(f"{_cell(figures[f'{name}_p{q}_ms']):>12}" for q in (50, 95, 99))
        lines.append(f"{name.upper():8}{cells}")
    lines.append(f"send lateness p99: {figures['send_lateness_p99_ms']} ms")
    return "\n".join(lines)


def _cell(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"

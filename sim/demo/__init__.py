"""The closed-loop demo, its report and the end-to-end comparison with a KEDA-style loop.

- `cli`: `surgescale demo` (orchestration, live view, report);
- `bench`: `surgescale bench e2e`;
- `promql`, `hpa`: the pure Prometheus query and KEDA/HPA decision of the baseline;
- `baseline`: the baseline's I/O shell (scrapes pods, talks to the cluster API).
"""

"""The autoscalers surgescale is compared with, as pure decision cores plus the live KEDA loop.

- `hpa`: the Kubernetes HPA algorithm and KEDA's polling (`KedaSpec`, `hpa_sync`, `keda_poll`);
- `promql`: the Prometheus query KEDA's trigger runs (scraped histograms, `rate()`,
  `histogram_quantile()`);
- `kpa`: Knative's Pod Autoscaler decider (stable and panic windows over concurrency);
- `keda_live`: the KEDA + Prometheus + HPA loop as a live process against an API server (the
  demo's baseline arm).

Everything here but `keda_live` is pure (time is an argument). Both the live demo (`sim.demo`) and
the virtual-time evaluator (`sim.evaluate.hpa_arms`, `sim.evaluate.kpa_arm`) run these cores; this
package imports neither of them.
"""

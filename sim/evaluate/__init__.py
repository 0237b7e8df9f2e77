"""The virtual-time evaluator: our policy against the usual autoscalers on real traces.

`surgescale sim evaluate` (`sim.evaluate.cli`) replays a trace on a discrete-event model of the
whole loop and compares autoscalers on SLO attainment and billed GPU-hours. The same engine model
as the live simulated pod (`sim.engine`), the live gateway's admission core (`gateway.admission`)
and the live controller's evaluation scheduling, state and policy (`controller.schedule`,
`controller.state`, `controller.policy`) run here, driven by a virtual clock.

- `clock`: the event queue (heapq) and virtual time;
- `trace`: Azure 2023 CSV / JSONL readers, rate scaling, synthetic patterns;
- `pods`: pods driving `sim.engine.Engine.advance`; `ingress`: requests into
  `gateway.admission.ModelQueue` (or a plain Service); `cluster`: pods, GPU nodes, cold start,
  node boot, static NodePool or Karpenter batching and consolidation;
- `world`: `Scenario` (what both the evaluator and the live demo can run) and one run;
- policies: `ours` (controller state + policy), `hpa_arms` (hpa-memory, hpa-cpu,
  keda-prometheus) and `kpa_arm` (Knative) running `sim.baselines`' decision cores, `oracle`
  (clairvoyant schedule, and static-peak);
- `metrics`, `report`, `runner` (registry, bounds, parallel runs), `matrix` (the scenario
  matrix), `cli`.
"""

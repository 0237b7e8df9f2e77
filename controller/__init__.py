"""The autoscaling controller: events in, pure policy, Deployment and NodePool scale out.

Modules, from the pure core outwards:
- `policy`: `decide(observation, state, spec, now)`, no I/O (also run by the virtual-time evaluator);
- `crd`: the InferenceScaler schema in code (pydantic), validation naming the bad field, the
  generated CRD YAML;
- `windows`, `state`: per-model sliding windows and queue accounting folded from the events;
- `scaler`: one InferenceScaler's runtime record, its status body and cluster counts;
- `objects`: typed views (TypedDicts) of the Kubernetes objects read and the status written;
- `actuator`: the only writer of scale (coalescing, retrying workers);
- `kube`: kubernetes_asyncio client, scale API, informers, status/Event writes;
- `lease`: leader election on a coordination.k8s.io/v1 Lease;
- `report`: Kubernetes Events per scale and the throttled status writer;
- `ops`: Prometheus metrics, health probes, decision log lines;
- `config`: `ControllerConfig`, the one frozen settings object (flags, env, YAML file);
- `loop`: `Controller`, wiring it all; `cli`: `surgescale controller`.
"""

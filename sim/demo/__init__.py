"""The closed-loop demo, its report and the end-to-end comparison with a KEDA-style loop.

- `cli`: `surgescale demo`; `bench`: `surgescale bench e2e`; `run`: options, config and runs
  shared by both;
- `stack`: one run with one autoscaler (children, load, watches, live view, teardown);
  `commands`: the children's command lines; `startup`: readiness waits and clean-up helpers;
  `procs`: child processes in their own groups, bounded stop; `objects`: the Kubernetes objects;
- `scenario`: the burst schedule; `observe`: cluster informers; `live`: the live view;
- `record`, `summary`, `report`: recorded runs, their figures, the HTML/PNG report.

The KEDA-style baseline arm runs `sim.baselines` (its decision cores and live loop).
"""

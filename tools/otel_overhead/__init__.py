"""`python -m tools.otel_overhead`: CPU cost of the OpenTelemetry hooks, without the network.

Drives `gateway.telemetry` through one request's milestones (request span, enqueue, dispatch,
traceparent injection, first token, complete) and `controller.telemetry` through decision spans
with 32 trigger events, N times each, and prints microseconds of process CPU per request / per
decision, with no exporter and with a batch exporter to memory. Needs the `otel` extra.
"""

"""KEDA interop: surgescale's queue signal served as a KEDA external (push) scaler.

`externalscaler.proto` is KEDA's external scaler API (service `externalscaler.ExternalScaler`);
the `externalscaler_pb2*` modules are generated from it (`python -m tools.keda_stubs`) and
committed. `controller.keda.scaler` serves it from the gateway's event streams;
`controller.keda.cli` is `surgescale keda-scaler`. Needs the `keda` extra (grpcio, protobuf).
docs/keda.md is the adoption path and its limits.
"""

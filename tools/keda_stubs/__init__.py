"""Regenerate the KEDA external scaler's gRPC modules from `controller/keda/externalscaler.proto`.

`python -m tools.keda_stubs` (needs the `test` extra: grpcio-tools and mypy-protobuf) writes
`externalscaler_pb2.py`, `externalscaler_pb2_grpc.py` and their typed `.pyi` stubs beside the
.proto. The generated files are committed; `--check` regenerates into a temporary directory and
exits 1 if they differ from the committed ones (tests/keda runs it).
"""

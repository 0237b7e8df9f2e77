"""`python -m tools.keda_push [N]`: how soon the KEDA scaler pushes activation after an enqueue.

Against the Redis on 127.0.0.1:6379 (a private key prefix, deleted after): the real producer
emits an `enqueue`, a gRPC client on loopback waits for `StreamIsActive` to say true; then a
`cancel` takes it back to false. Prints p50 / p90 / max over N rounds (default 50) of the time
from handing the event to the producer to receiving the push. Needs the `keda` extra.
"""

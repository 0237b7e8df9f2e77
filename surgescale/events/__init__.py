"""The event contract between the gateway and the controller, and its Redis Streams transport.

- `schema`: the versioned event types and their msgspec JSON encoding (`Event`, `EventType`,
  `encode`, `decode`, `EventDecodeError`);
- `keys`: stream key names (per-model, Redis-Cluster hash tags);
- `producer`: the batching, never-blocking `EventProducer` (group commit, bounded buffer, event
  ids, streams bounded in events and age by `StreamLimits`);
- `consumer`: the consumer-group reader `EventConsumer` (XREADGROUP, XAUTOCLAIM, dead letters,
  discovery by registry and SCAN, group housekeeping);
- `rawread`: one packed XREADGROUP over many streams on a single Redis (the consumer's read);
- `rawwrite`: a lean pipelined connection to a single Redis (the producer's writes, the gateway's
  capacity-sync script);
- `client`: `connect(url)`, a single Redis or (`redis+cluster://`) a Redis Cluster;
- `replay`: re-read a model's recent events from its stream (a controller taking a model over).

Nothing else in the product talks to Redis directly. Starting a Redis (or a local Redis Cluster)
for the tests and the demo (`sim.localredis`), the benchmark (`sim.benches.events`) and its key
clean-up (`sim.benches.cleanup`) live in the simulator package, not here.
"""

from surgescale.events.client import RedisClient, close, connect
from surgescale.events.consumer import Batch, ConsumerStats, Delivery, EventConsumer
from surgescale.events.keys import StreamKeys
from surgescale.events.producer import EventProducer, ProducerStats, StreamLimits
from surgescale.events.schema import (
    SCHEMA_VERSION,
    Event,
    EventDecodeError,
    EventType,
    decode,
    decode_json,
    encode,
    encode_json,
)

__all__ = [
    "SCHEMA_VERSION",
    "Batch",
    "ConsumerStats",
    "Delivery",
    "Event",
    "EventConsumer",
    "EventDecodeError",
    "EventProducer",
    "EventType",
    "ProducerStats",
    "RedisClient",
    "StreamKeys",
    "StreamLimits",
    "close",
    "connect",
    "decode",
    "decode_json",
    "encode",
    "encode_json",
]

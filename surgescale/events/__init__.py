"""The event contract between the gateway and the controller, and its Redis Streams transport.

- `schema`: the versioned event types and their orjson encoding (`Event`, `EventType`,
  `encode`, `decode`, `EventDecodeError`);
- `keys`: stream key names (per-model, Redis-Cluster hash tags);
- `producer`: the batching, never-blocking `EventProducer` (group commit, bounded buffer);
- `consumer`: the consumer-group reader `EventConsumer` (XREADGROUP, XAUTOCLAIM, dead letters);
- `localredis`: find or start a Redis for tests and the demo;
- `bench`: `surgescale bench events`.

Nothing else in the project talks to Redis directly.
"""

from surgescale.events.client import RedisClient, close, connect
from surgescale.events.consumer import Batch, ConsumerStats, Delivery, EventConsumer
from surgescale.events.keys import StreamKeys
from surgescale.events.producer import EventProducer, ProducerStats
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
    "close",
    "connect",
    "decode",
    "decode_json",
    "encode",
    "encode_json",
]

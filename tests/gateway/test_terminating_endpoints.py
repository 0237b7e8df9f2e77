"""EndpointSlice conditions as Kubernetes sets them, and what the gateway makes of them: only an
endpoint that is ready and not terminating gets new work; a terminating pod keeps its in-flight
requests until they finish (the end-to-end case is tests/sim_cluster/test_terminating.py)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.admission import ModelQueue, Ticket
from gateway.discovery import endpoints_of


@pytest.mark.parametrize(
    ("conditions", "ready"),
    [
        pytest.param({}, True, id="absent-means-ready"),
        pytest.param({"ready": True, "serving": True, "terminating": False}, True, id="ready"),
        pytest.param({"ready": False, "serving": False, "terminating": False}, False, id="unready"),
        pytest.param({"ready": False, "serving": True, "terminating": True}, False, id="draining"),
        pytest.param({"serving": True, "terminating": True}, False, id="terminating-no-ready"),
        pytest.param({"ready": True, "terminating": True}, False, id="inconsistent"),
    ],
)
def test_only_ready_non_terminating_endpoints_take_work(
    conditions: dict[str, Any], ready: bool
) -> None:
    slice_obj = {
        "ports": [{"name": "http", "port": 8000}],
        "endpoints": [{"addresses": ["10.0.0.1"], "conditions": conditions}],
    }
    assert endpoints_of(slice_obj, port_name="http") == {"http://10.0.0.1:8000": ready}


def test_a_terminating_pod_finishes_its_requests_and_gets_nothing_new() -> None:
    q = ModelQueue("m", max_length=10)
    q.sync_pods({"http://a": True, "http://b": True}, capacity=2)
    first = Ticket(request_id="1", tenant="", arrived=0.0)
    q.offer(first)
    (assigned,) = q.assign(now=0.5)
    busy = assigned.pod
    assert busy is not None
    other = "http://b" if busy.url == "http://a" else "http://a"
    q.sync_pods({busy.url: False, other: True}, capacity=2)  # busy turns terminating
    later = [Ticket(request_id=f"n{i}", tenant="", arrived=1.0 + i) for i in range(2)]
    for t in later:
        q.offer(t)
    assert {t.pod.url for t in q.assign(now=3.5) if t.pod} == {other}
    assert busy.outstanding == 1  # still carrying its stream
    q.sync_pods({other: True}, capacity=2)  # gone from the slice while busy
    assert busy.url in q.pods
    q.finish(first)
    assert busy.url not in q.pods  # forgotten once idle

"""Samples out of a Prometheus text exposition (what a `/metrics` page serves), for the parts of
the simulator that read the product's and the simulated pods' metrics from outside.

Parsing is prometheus_client's `text_string_to_metric_families`; a sample's name is the one on its
line (`x_bucket`, `x_total`), labels are unescaped. A page the parser rejects yields the samples
before the bad line (a scrape of a process under test may be cut short).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client.parser import text_string_to_metric_families


def samples(
    text: str, name: str, labels: Mapping[str, str] | None = None
) -> Iterator[tuple[dict[str, str], float]]:
    """(labels, value) of every sample called `name` whose labels include every `labels` pair."""
    want = dict(labels or {})
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name != name:
                    continue
                if any(sample.labels.get(k) != v for k, v in want.items()):
                    continue
                yield dict(sample.labels), float(sample.value)
    except ValueError:
        return

"""The admission gateway: an OpenAI-compatible queueing proxy in front of vLLM pods.

It owns each model's request queue, routes to ready pods with a free slot, streams responses back
and reports every request milestone through `surgescale.events`.
"""

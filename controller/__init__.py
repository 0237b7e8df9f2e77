"""The autoscaling controller: events in, pure policy, Deployment and NodePool scale out.

It reads InferenceScaler resources, consumes the gateway's events, runs `controller.policy` and
patches scale subresources through the Kubernetes API.
"""

"""The pure scaling policy (placeholder until the controller issue lands): no I/O imports."""

"""The operator's faces: the CLI, the HTTP API and dashboard, the monitor and the embedded
default. May import every layer below it."""

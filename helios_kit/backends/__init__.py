"""Execution backends: where a chunk is rendered (this machine, AWS Lambda, Cloud Run, a plugin's cluster)."""

"""Sluice: a streaming-first gRPC gateway for large language models."""

__version__ = "0.1.0"

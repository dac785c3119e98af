"""Observability: OpenTelemetry traces and metrics, and the access log."""

from sluice.telemetry.core import Telemetry

__all__ = ["Telemetry"]

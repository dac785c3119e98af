"""Configuration: the YAML schema, its strict loader, and the embedded default."""

from sluice.config.loader import ConfigError, load_config, load_default_config
from sluice.config.schema import GatewayConfig, RouteConfig

__all__ = ["ConfigError", "GatewayConfig", "RouteConfig", "load_config", "load_default_config"]

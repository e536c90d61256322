"""Typed settings for the whole product, read from ``TRACKING_*`` variables."""

from config.settings import Settings, get_settings

__all__ = ["Settings", "get_settings"]

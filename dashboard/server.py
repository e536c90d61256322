"""Serving the dashboard with uvicorn, and the rule about where it may listen."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dashboard.auth import Credentials, ExposureError, is_loopback

if TYPE_CHECKING:
    from config.settings import Settings

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5566


def check_exposure(host: str, settings: Settings) -> None:
    """Refuse a non-loopback address unless the settings hold credentials.

    Loopback (``127.0.0.1``, ``::1``, ``localhost``) is reachable only from
    this machine; anything else (``0.0.0.0`` included) needs
    ``TRACKING_DASHBOARD_TOKEN`` or ``TRACKING_DASHBOARD_USER`` and
    ``TRACKING_DASHBOARD_PASSWORD``.
    """
    credentials = Credentials(
        settings.dashboard_token, settings.dashboard_user, settings.dashboard_password
    )
    if not is_loopback(host) and not credentials.configured:
        raise ExposureError(
            f"refusing to serve the dashboard on {host}, beyond this machine, without "
            "credentials: set TRACKING_DASHBOARD_TOKEN, or TRACKING_DASHBOARD_USER and "
            "TRACKING_DASHBOARD_PASSWORD (or bind to 127.0.0.1)"
        )


def serve(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    settings: Settings | None = None,
    *,
    notice: str | None = None,
) -> None:
    """Run the dashboard until interrupted (checks the address first).

    ``notice``, when given, is shown at the top of every page (say, that the
    data shown is a demo's).
    """
    import uvicorn  # noqa: PLC0415 - only the serving process needs it

    from config.settings import get_settings  # noqa: PLC0415
    from dashboard.app import create_app  # noqa: PLC0415

    settings = settings or get_settings()
    check_exposure(host, settings)
    app = create_app(settings, notice=notice)
    app.state.source.start_count()  # so the first overview already has a group count
    try:
        uvicorn.run(app, host=host, port=port, log_level="info", server_header=False)
    finally:
        app.state.source.close()

"""Typed access to what the factory stored on the app."""

from flask import current_app

from service.config import Settings
from service.drain import DrainFlag
from service.runtime import ModelRuntime
from service.telemetry import Telemetry


def runtime() -> ModelRuntime:
    return current_app.extensions["linescore"]["runtime"]


def settings() -> Settings:
    return current_app.extensions["linescore"]["settings"]


def telemetry() -> Telemetry:
    return current_app.extensions["linescore"]["telemetry"]


def drain() -> DrainFlag:
    return current_app.extensions["linescore"]["drain"]


def taking_work() -> bool:
    """Readiness, one rule for /readyz and /v2: the model is warm and the server not draining."""
    return runtime().ready and not drain().is_set


def openapi_document() -> bytes:
    return current_app.extensions["linescore"]["openapi"]

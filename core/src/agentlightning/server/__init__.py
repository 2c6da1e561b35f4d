"""The store server: a store over HTTP (REST/JSON and OTLP)."""

from agentlightning.server.app import API_PREFIX, create_app, openapi_schema
from agentlightning.server.serve import StoreServer

__all__ = ["API_PREFIX", "StoreServer", "create_app", "openapi_schema"]

"""The HTTP service (`bridgetune serve`): FastAPI app, micro-batching, metrics, feedback store."""

from bridgetune.serve.app import create_app

__all__ = ["create_app"]

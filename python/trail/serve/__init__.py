"""`trail serve`: an OpenAI-compatible HTTP server on TRAIL's engine.

text.py turns a request's tokens into text as they arrive (stop strings included);
loop.py runs the engine in a thread of its own for many clients; metrics.py exports
Prometheus metrics; protocol.py holds the OpenAI request bodies; app.py the routes (FastAPI);
server.py builds it all from a `ServeConfig` and runs it under uvicorn.
"""

from trail.serve.loop import EngineLoop, QueueFull, ShuttingDown
from trail.serve.server import ServeConfig, build_served, run

__all__ = ["EngineLoop", "QueueFull", "ServeConfig", "ShuttingDown", "build_served", "run"]

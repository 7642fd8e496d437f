"""`trail serve`: build the model, engine and app from a `ServeConfig`, and run them under
uvicorn until SIGTERM or SIGINT.

On SIGTERM the server stops accepting connections, lets in-flight requests finish for up to
`shutdown_timeout` seconds, ends the rest with an error, and exits with status 0.
"""

from __future__ import annotations

import math
import signal
from dataclasses import dataclass
from typing import Any

from trail import policies
from trail.engine import Engine, engine_config
from trail.serve.app import Served, build_app
from trail.serve.loop import EngineLoop

# The longest context served unless --max-model-len says otherwise: the KV cache is sized
# for every slot to reach it (a model's own limit, e.g. SmolLM2's 8192, would reserve GBs).
DEFAULT_MAX_MODEL_LEN = 2048
# The probe refines running requests every this many steps, as the demo serves them
# (trail.demo.end_to_end.DemoConfig.predict_every).
PREDICT_EVERY = 8


@dataclass
class ServeConfig:
    """Everything `trail serve` needs (its flags)."""

    model: str = "demo"
    policy: str = "TRAIL"
    probe: str | None = None            # a Probe folder; None: the one that ships, if any
    prompt_predictor: str | None = None  # a PromptOnlyPredictor folder (arrival predictions)
    served_model_name: str | None = None
    max_running: int = 8
    max_model_len: int | None = None
    kv_tokens: int | None = None        # KV cache size; None: every slot at max_model_len
    max_waiting: int = 256
    host: str = "127.0.0.1"
    port: int = 8000
    shutdown_timeout: float = 30.0
    threads: int | None = None          # torch threads; None: leave torch's choice
    seed: int = 0                       # the demo model's

    def __post_init__(self) -> None:
        self.policy = policies.canonical_name(self.policy)
        for name in ("max_running", "max_waiting"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"ServeConfig.{name}={v!r} must be a positive int")
        for name in ("max_model_len", "kv_tokens", "threads"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"ServeConfig.{name}={v!r} must be a positive int or None")
        if not (isinstance(self.port, int) and 0 <= self.port < 65536):
            raise ValueError(f"ServeConfig.port={self.port!r} must be in [0, 65536)")
        if not (math.isfinite(self.shutdown_timeout) and self.shutdown_timeout >= 0):
            raise ValueError(f"ServeConfig.shutdown_timeout={self.shutdown_timeout!r} must be "
                             f"a finite number of seconds >= 0")
        sp = policies.spec(self.policy)
        if sp.scores:
            raise ValueError(f"--policy {sp.name}: learned-to-rank scores are not served by "
                             f"`trail serve` yet; choose another policy")
        if sp.lengths == "prompt-only" and self.prompt_predictor is None:
            raise ValueError(f"--policy {sp.name} ranks by a prompt-only prediction: give "
                             f"--prompt-predictor DIR (trail eval-probe writes one)")


def _probe_dir(cfg: ServeConfig) -> str | None:
    """The probe folder to serve with: --probe, else the one shipping for the model."""
    if cfg.probe is not None:
        return cfg.probe
    from trail.models import probe_path, smollm2

    if cfg.model != smollm2.NAME:
        return None
    try:
        return str(probe_path(cfg.model))
    except FileNotFoundError:
        return None


def build_served(cfg: ServeConfig, model: Any = None, tokenizer: Any = None) -> Served:
    """Load the model (unless given with its tokenizer), the probe and predictor, and build
    the engine loop `cfg` describes."""
    import torch

    from trail.models import load_model, stop_token_ids
    from trail.probe import Probe

    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    sp = policies.spec(cfg.policy)
    if model is None or tokenizer is None:
        model, tokenizer = load_model(cfg.model, seed=cfg.seed)
    limit = getattr(model.config, "max_position_embeddings", None) or DEFAULT_MAX_MODEL_LEN
    max_len = cfg.max_model_len if cfg.max_model_len is not None else min(limit,
                                                                          DEFAULT_MAX_MODEL_LEN)
    if max_len > limit:
        raise ValueError(f"--max-model-len {max_len} exceeds the model's context of {limit}")
    kv_tokens = cfg.kv_tokens if cfg.kv_tokens is not None else cfg.max_running * max_len
    probe = None
    if sp.lengths == "probe":
        where = _probe_dir(cfg)
        if where is None:
            raise ValueError(f"--policy {sp.name} ranks running requests by the embedding "
                             f"probe: give --probe DIR (none ships for {cfg.model!r})")
        probe = Probe.load(where, num_slots=max(cfg.max_running, 1) * 2,
                           hidden_size=int(model.config.hidden_size))
    predict = None
    if cfg.prompt_predictor is not None and sp.lengths in ("prompt-only", "probe"):
        from trail.training.prompt_only import PromptOnlyPredictor

        predictor = PromptOnlyPredictor.load(cfg.prompt_predictor)

        def predict(text: str) -> float:
            return float(predictor.predict([text])[0])

    ecfg = engine_config(sp.name, max_running=cfg.max_running, kv_capacity_tokens=kv_tokens,
                         probe=probe, predict_every=PREDICT_EVERY, max_model_len=max_len)
    engine = Engine(model, ecfg)
    loop = EngineLoop(engine, tokenizer, max_waiting=cfg.max_waiting)
    return Served(name=cfg.served_model_name or cfg.model, tokenizer=tokenizer, loop=loop,
                  max_model_len=max_len, stop_ids=stop_token_ids(model, tokenizer),
                  predict=predict, shutdown_timeout=cfg.shutdown_timeout)


def run(cfg: ServeConfig, served: Served | None = None) -> int:
    """Serve until SIGTERM or SIGINT; 0 after a clean shutdown."""
    import uvicorn

    served = served if served is not None else build_served(cfg)
    app = build_app(served)
    config = uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level="info",
                            timeout_graceful_shutdown=int(math.ceil(cfg.shutdown_timeout)),
                            lifespan="on")
    server = _server(config)
    server.run()
    return 0 if served.loop.error is None else 1


def _server(config: Any) -> Any:
    """A uvicorn server for which SIGTERM is a requested shutdown: it drains as usual and
    `run` returns (uvicorn would re-raise the signal afterwards, killing the process)."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            if sig == signal.SIGTERM:
                self.should_exit = True
                return
            super().handle_exit(sig, frame)

    return Server(config)

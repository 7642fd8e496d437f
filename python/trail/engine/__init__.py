"""A thin continuous-batching engine over Hugging Face models, driven by TRAIL's scheduler.

`Engine` (engine.py) runs schedule → forward → sample each step; `ModelRunner` (runner.py)
does one forward of a mixed prefill/decode batch; `PagedKVCache` (kv_cache.py) holds the
KV blocks the scheduler accounts for; attention.py is the paged attention registered with
transformers; clock.py the wall or virtual clock timings are read from; sampling.py,
request.py and report.py hold the rest; setups.py builds the EngineConfig of a named
set-up of `trail.policies`.
"""

from trail.engine.clock import StepCost, StepShape, VirtualClock, WallClock, fit_step_cost
from trail.engine.engine import Engine, EngineConfig, StepRecord
from trail.engine.report import Report, aggregate_outputs
from trail.engine.request import RequestOutput
from trail.engine.sampling import SamplingParams
from trail.engine.setups import engine_config, step_cost_server

__all__ = ["Engine", "EngineConfig", "Report", "RequestOutput", "SamplingParams", "StepCost",
           "StepRecord", "StepShape", "VirtualClock", "WallClock", "aggregate_outputs",
           "engine_config", "fit_step_cost", "step_cost_server"]

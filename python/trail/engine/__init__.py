"""A thin continuous-batching engine over Hugging Face models, driven by TRAIL's scheduler.

`Engine` (engine.py) runs schedule → forward → sample each step; `ModelRunner` (runner.py)
does one forward of a mixed prefill/decode batch; `PagedKVCache` (kv_cache.py) holds the
KV blocks the scheduler accounts for; attention.py is the paged attention registered with
transformers; sampling.py, request.py and metrics.py hold the rest.
"""

from trail.engine.engine import Engine, EngineConfig, StepRecord
from trail.engine.metrics import Report, aggregate
from trail.engine.request import RequestOutput
from trail.engine.sampling import SamplingParams

__all__ = ["Engine", "EngineConfig", "Report", "RequestOutput", "SamplingParams", "StepRecord",
           "aggregate"]

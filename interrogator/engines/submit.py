"""``submit(config, engine=...)``: the one place that chooses the engine of a run and checks the options that go
with it, for the ``submit`` command and for ``execute()``.

| engine | what runs | options |
| --- | --- | --- |
| ``local`` | the local loop (runner.pipeline) | ``shard`` or ``images`` (+ ``records_only``), or ``devices`` |
| ``ray`` | Ray Data (ray_engine) | ``parquet_dir``, ``ray_address``, ``actors`` |

Every engine ends in ``runner.finish.finish``, so ``strict`` and every format hold on each.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from ..core.config import Config
from ..core.errors import ConfigError, InterrogatorError
from ..runner.finish import RunResult
from ..runner.pipeline import run
from .parallel import submit_on_devices, visible_devices
from .ray_engine import default_parquet_dir, run_ray

ENGINES = ("local", "ray")


@dataclass(frozen=True)
class Distribution:
    """How a run is spread: over devices, as one shard or image range, or over a Ray cluster."""

    devices: Optional[str] = None                  # 'auto' or a list such as cuda:0,cuda:1
    shard: Optional[Tuple[int, int]] = None        # i, N
    images: Optional[Tuple[int, int, int]] = None  # lo, hi, total
    records_only: bool = False
    parquet_dir: Optional[str] = None
    ray_address: Optional[str] = None
    actors: Optional[int] = None

    def check(self, engine: str) -> None:
        """The options that do not go together, in one line each."""
        if engine not in ENGINES:
            raise ConfigError(f"execute(engine={engine!r}): expected 'local' or 'ray'")
        if engine == "ray":
            if self.devices or self.shard or self.images:
                raise InterrogatorError("--engine ray schedules the devices itself: leave out --devices, --shard "
                                        "and --images")
            return
        if self.parquet_dir or self.ray_address or self.actors:
            raise InterrogatorError("--parquet-dir, --ray-address and --actors need --engine ray")
        if self.devices and (self.shard or self.images or self.records_only):
            raise InterrogatorError("give --devices or --shard, not both")
        if self.records_only and not self.images:
            raise InterrogatorError("--records-only goes with --images (it is what --devices gives each process)")


def submit(config: Config, engine: str = "local", spread: Distribution = Distribution(), write: bool = True,
           strict: bool = False, progress: bool = True) -> RunResult:
    """One run of ``config`` on ``engine``, spread as ``spread`` says; every format written when ``write``."""
    spread.check(engine)
    if engine == "ray":
        return run_ray(config, spread.parquet_dir or default_parquet_dir(config.writing),
                       csv=config.output if write else None, address=spread.ray_address, actors=spread.actors,
                       progress=progress, strict=strict)
    if spread.devices:
        return submit_on_devices(config, visible_devices(spread.devices), progress=progress, strict=strict)
    return run(config, shard=spread.shard, images=spread.images, progress=progress, write=write, strict=strict,
               records_only=spread.records_only, keep_work=spread.shard is not None)  # merge --config reads them

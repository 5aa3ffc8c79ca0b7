"""batchchat's OpenAI-compatible simulator: `batchchat serve`, or in-process for tests and benchmarks.

from batchchat.simulator import SimulatorConfig, Simulator
with Simulator.in_thread(SimulatorConfig(rpm=600, tpm=100_000)) as sim:
    sim.base_url  # "http://127.0.0.1:PORT/v1"
"""

from batchchat.simulator.config import SimulatorConfig
from batchchat.simulator.faults import FAULT_KINDS
from batchchat.simulator.limits import Limiter, format_duration
from batchchat.simulator.runner import Simulator

__all__ = ["FAULT_KINDS", "Limiter", "Simulator", "SimulatorConfig", "format_duration"]

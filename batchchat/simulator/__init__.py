"""batchchat's OpenAI-compatible simulator: `batchchat serve`, or in-process for tests and benchmarks.

from batchchat.simulator import SimulatorConfig, Simulator
with Simulator.in_thread(SimulatorConfig(rpm=600, tpm=100_000)) as sim:
    sim.base_url  # "http://127.0.0.1:PORT/v1"
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from batchchat._lazy import lazy_exports

if TYPE_CHECKING:
    from batchchat.simulator.config import SimulatorConfig
    from batchchat.simulator.faults import FAULT_KINDS
    from batchchat.simulator.limits import Limiter, format_duration
    from batchchat.simulator.runner import Simulator

# Imported on first use, so that `batchchat --help` does not start an HTTP server's worth of imports.
_PUBLIC = {
    "SimulatorConfig": "batchchat.simulator.config",
    "FAULT_KINDS": "batchchat.simulator.faults",
    "Limiter": "batchchat.simulator.limits",
    "format_duration": "batchchat.simulator.limits",
    "Simulator": "batchchat.simulator.runner",
}
__all__ = ["FAULT_KINDS", "Limiter", "Simulator", "SimulatorConfig", "format_duration"]

__getattr__ = lazy_exports(__name__, _PUBLIC)

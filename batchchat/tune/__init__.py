"""`batchchat tune`: sweep concurrency against an endpoint with a sample of the job, and recommend flags.

`sweep` probes the limits the server announces, then runs one step per level (`sweep.py`); `recommend` turns
the steps into flags and says why each level was or was not chosen (`advice.py`); `report.py` shows them.
"""

from batchchat.tune.advice import Limits, Recommendation, recommend
from batchchat.tune.report import plot, render_table, render_verdicts, steps_json
from batchchat.tune.step import Step
from batchchat.tune.sweep import DEFAULT_LEVELS, load_sample, probe_limits, sweep

__all__ = ["DEFAULT_LEVELS", "Limits", "Recommendation", "Step", "load_sample", "plot", "probe_limits",
           "recommend", "render_table", "render_verdicts", "steps_json", "sweep"]

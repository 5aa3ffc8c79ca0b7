"""`batchchat report --plot FILE.png`: the distributions of cost and latency per answered request."""

from __future__ import annotations

from pathlib import Path

from batchchat.errors import UsageError
from batchchat.results.reconcile import Reconciliation


def plot_report(result: Reconciliation, path: Path) -> None:
    """Two histograms (cost per request in USD, latency in ms) of the answers sent (cached ones are not)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'batchchat[plot]'") from None
    figure, (cost_axes, latency_axes) = plt.subplots(1, 2, figsize=(11, 4))
    for axes, values, label, color in ((cost_axes, result.costs, "cost per request (USD)", "tab:green"),
                                       (latency_axes, result.latencies, "latency per request (ms)", "tab:blue")):
        if len(values):
            axes.hist(values, bins=60, color=color)
        else:
            axes.text(0.5, 0.5, "no values", ha="center", va="center", transform=axes.transAxes)
        axes.set_xlabel(label)
        axes.set_ylabel("requests")
    cost_axes.set_title(f"{len(result.costs):,} answers sent, ${sum(result.costs):.4g} in all")
    latency_axes.set_title(f"{len(result.latencies):,} answers" + (
        f", median {sorted(result.latencies)[len(result.latencies) // 2]:,.0f} ms" if len(result.latencies) else ""))
    figure.suptitle(f"batchchat report: {Path(result.output).name}")
    figure.tight_layout()
    try:
        figure.savefig(path, dpi=100)
    except OSError as exc:
        raise UsageError(f"--plot: cannot write {path}: {exc.strerror}") from None
    finally:
        plt.close(figure)

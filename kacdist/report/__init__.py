"""``stage=report``: a self-contained HTML page of a run (``<run>/report/report.html``, PNGs beside it).

collect.py reads the run directory into plain data (stages and their state as ``stage=status`` sees it,
metrics, grids, the evaluation table, the sweep, provenance, configs); trajectories.py computes (and caches)
the teacher-student trajectory discrepancies of finished distillation stages; plots.py draws the figures;
page.py writes the HTML; build.py puts them together (``run_report``).
"""

from kacdist.report.build import run_report

__all__ = ["run_report"]

"""Reports from stored results only (never training): console summaries, tables, figures, dashboards.

`study.py` reads a sweep's Optuna study; tables (`tables.py` long layout, `pivot.py`, `table_model.py`,
`render.py`), figures (`figures.py`), statistics (`stats.py`) and W&B dashboards (`dashboard.py`) are built
from it. Nothing here imports torch: the report commands start quickly.
"""

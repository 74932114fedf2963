"""Reading stored results: console summaries (and, later, tables, figures and dashboards)."""

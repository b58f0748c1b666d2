"""mapelab's invoke entry point: `./inv --list` (or `.venv/bin/invoke --list`) shows every task.

The tasks themselves live in mapelab/tasks/, one module per area.
"""

from mapelab.tasks import build_collection

ns = build_collection()

"""The pharmacy's page, served by `coffre agent` (on loopback unless TLS is configured): the
status light, history and plots (`status_pages.py`, `history.py`), run a job now with live
progress (`run_pages.py`), and, with the repository's key, the restore pages: calendar,
browse, search, versions, restore into the restore area, download, database drill
(`restore_pages.py`, `tasks.py`). `app.py` assembles them behind the login."""

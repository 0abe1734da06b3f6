"""The agent: the pharmacy's backups run by themselves. It owns the configuration file
(`config.py`, typed in `model.py`), the jobs (a backup, its retention, copies and
verification, run as child `coffre` processes), the schedule and real-time loop
(`scheduler.py`, `watcher.py`), the removable disk sets (`media.py`), the status store
(`status.py`, SQLite in the state folder), the health rules (`health.py`) and the alerts
(`alerts/`). It calls the engine only through the `coffre` command, so a crash or a memory
peak in a backup never takes the agent down."""

"""The agent's alerts: who is told what, when, and through which channel.

`decide.py` is the pure rule (one notice per new problem, reminders while it lasts, one
escalation to the IT provider, a "back to normal" notice); `texts.py` writes each notice for
a pharmacist, in French or English; `mail.py` (e-mail), `webhook.py` are the channels (`channel.py`
their common shape and error), `heartbeat.py` the healthchecks-style pings; `outbox.py` keeps
the state, the delivery attempts and the screen messages in the agent's SQLite file, sends,
and retries what failed. Nothing here ever fails a backup: a channel that cannot deliver is
recorded and retried."""

"""The provider's console, served by `coffre server` under /console: the fleet sorted by risk
(`fleet_pages.py`), a tenant's repositories, usage, tokens, quota, recycle bin and audit
journal (`tenant_pages.py`), the month's billing (`billing_pages.py`), provider accounts with
Argon2id passwords, a TOTP second factor and roles (`accounts.py`, `account_pages.py`).

Zero knowledge holds here as in the API: the console reads only the server's metadata (never a
file name, a snapshot or a database: it cannot, import-linter forbids it everything that
reads a repository), and every action goes through `coffre.server.admin` as the HTTP admin
API does, journaled with the account's name."""

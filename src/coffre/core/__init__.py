"""Core: the errors every layer raises, exit codes, and the injectable clock."""

"""CLI: the `coffre` command. Thin: parse arguments, call an operation, render the result.
One module per command group."""

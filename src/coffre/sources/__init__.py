"""Sources: where bytes come from. Files and their metadata (here), databases later."""

"""Background services the engine composes; each has a `run_once()` tests call by hand."""

"""The engine: scheduler, executor, decide, committer, client, notifier."""

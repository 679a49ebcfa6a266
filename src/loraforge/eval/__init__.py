"""Generation, metrics and run reports."""

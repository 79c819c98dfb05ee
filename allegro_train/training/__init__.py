"""The training loop and what it needs: optimizer and lr schedule, metrics."""

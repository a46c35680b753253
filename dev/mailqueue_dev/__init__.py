"""mailqueue's developer tooling: the local stack and the CLI. Never shipped to Lambda."""

"""runner: see the README's layout table."""

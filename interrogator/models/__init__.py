"""models: see the README's layout table."""

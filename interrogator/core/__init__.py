"""core: see the README's layout table."""

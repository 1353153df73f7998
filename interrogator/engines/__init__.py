"""engines: see the README's layout table."""

"""tools: see the README's layout table."""

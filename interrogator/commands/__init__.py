"""commands: see the README's layout table."""

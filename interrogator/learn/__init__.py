"""learn: see the README's layout table."""

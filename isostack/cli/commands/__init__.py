"""One module per sub-command; each exposes ``command``. See isostack.cli."""

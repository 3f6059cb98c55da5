"""Small subcommands of the ``prefsync`` command line."""

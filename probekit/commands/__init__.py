"""Subcommands of the ``probekit`` console command, one module each (see :mod:`probekit.cli`)."""

"""prefsync: POS customer preferences, synced from the CRM and applied at checkout."""

__version__ = "0.1.0"

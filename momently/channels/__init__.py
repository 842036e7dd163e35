"""One adapter per channel, behind the ``Channel`` protocol in ``channels.base``."""

"""``Config``: every tunable in one frozen dataclass (settings.py), and how each field is read from
``COGMAN_<FIELD>`` (environment.py, which also writes the table of docs/configuration.md).

May import only ``cogman.errors``: every other package reads its settings from here.
"""

from cogman.config.settings import Config

__all__ = ["Config"]

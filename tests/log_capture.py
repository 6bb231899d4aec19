"""Records of mmengine's current logger, for tests that assert what was logged."""
import logging

from mmengine.logging import MMLogger


class CurrentLog:
    """Collects the records of mmengine's current logger at ``level`` and above while the
    ``with`` block runs."""

    def __init__(self, level=logging.INFO):
        self.level = level

    def __enter__(self):
        self.records = []
        self.handler = logging.Handler(level=self.level)
        self.handler.emit = self.records.append
        self.logger = MMLogger.get_current_instance()
        self.logger.addHandler(self.handler)
        return self

    def __exit__(self, *exc):
        self.logger.removeHandler(self.handler)

    @property
    def messages(self):
        return [r.getMessage() for r in self.records]

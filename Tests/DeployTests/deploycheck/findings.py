"""Collects what the checks found, so one run reports every problem at once."""


class Findings:
    def __init__(self):
        self.errors = []
        self.checks = 0

    def check(self, condition, where, message):
        """Counts one check; records `message` at `where` when `condition` is false."""
        self.checks += 1
        if not condition:
            self.errors.append(f"{where}: {message}")
        return bool(condition)

    def fail(self, where, message):
        self.check(False, where, message)

"""Input problems: each names the JSON field it is about and says how to fix it."""

from .frozen import frozen


@frozen
class Problem:
    field: str  # e.g. "apps[1].mounts[0].volume", or "<file>: app.mountPoints[0].path"
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class InvalidInput(Exception):
    """Raised with every problem found, never just the first."""

    def __init__(self, problems: list[Problem]):
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems

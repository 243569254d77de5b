import os
from typing import (
    Any,
    Optional,
)


@dataclass
class Greeter:
    """Says hello."""

    name: str

    @property
    def greet(self, other: Optional[str] = None) -> str:
        prefix = "Hello"
        message = f"{prefix}, {self.name}"
        return message  # CURSOR


def helper(x):
    return x + 1

"""A small module to try Eyas on: `eyas complete examples/fib.py:6:5`."""
from functools import lru_cache


def fib(n: int) -> int:
    
    return fib(n - 1) + fib(n - 2)


@lru_cache(maxsize=None)
def fib_cached(n: int) -> int:
    return n if n < 2 else fib_cached(n - 1) + fib_cached(n - 2)

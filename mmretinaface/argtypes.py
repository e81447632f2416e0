"""argparse ``type=`` checks shared by the demos, each with a message saying what was expected.

Light on purpose (no torch, no mmengine): the demos parse and check their
options before loading anything heavy.
"""
import argparse
import re
from typing import Callable


def device(value: str) -> str:
    """``cpu``, ``cuda`` or ``cuda:N``."""
    if not re.fullmatch(r'cpu|cuda(:\d+)?', value):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got '{value}'")
    return value


def int_at_least(minimum: int) -> Callable[[str], int]:
    """A type for integers ``>= minimum`` (``int_at_least(1)``: a count, ``(0)``: 0 allowed)."""
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            number = None
        if number is None or number < minimum:
            raise argparse.ArgumentTypeError(
                f"expected an integer >= {minimum}, got '{value}'")
        return number
    return parse

"""When a failed webhook delivery is tried again, and when it stops: the retry schedule with jitter, Retry-After and
the give-up window."""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from rt.config import ConfigError, Settings

JITTER = 0.2
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str, setting: str) -> float:
    """Seconds in "500ms", "5s", "2m", "1h" or "3d"; a ConfigError naming `setting` otherwise."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ConfigError(f"{setting}: {text!r} is not a duration such as 500ms, 5s, 2m, 1h or 3d")
    seconds = float(match[1]) * _UNIT_S[match[2]]
    if seconds <= 0:
        raise ConfigError(f"{setting}: {text!r} must be longer than zero")
    return seconds


@dataclass(frozen=True)
class Schedule:
    """`waits[n-1]` is the wait after the n-th failed attempt (the last repeats); each wait varies by +-20%."""

    waits: tuple[float, ...]
    give_up_s: float
    uniform: Callable[[float, float], float] = field(default=random.uniform, compare=False)

    def __post_init__(self) -> None:
        if not self.waits:
            raise ConfigError("RT_WEBHOOK_SCHEDULE: at least one wait is needed")

    @classmethod
    def parse(
        cls,
        waits: Sequence[str],
        give_up: str,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> Schedule:
        return cls(
            tuple(parse_duration(w, "RT_WEBHOOK_SCHEDULE") for w in waits),
            parse_duration(give_up, "RT_WEBHOOK_GIVE_UP"),
            uniform,
        )

    @classmethod
    def of(cls, settings: Settings, uniform: Callable[[float, float], float] = random.uniform) -> Schedule:
        return cls.parse(settings.webhook_schedule, settings.webhook_give_up, uniform)

    @property
    def longest(self) -> float:
        return max(self.waits)

    def wait(self, attempts: int, retry_after_s: float | None = None) -> float:
        """Seconds to wait after `attempts` attempts all failed. A receiver's Retry-After asks for at least that
        long, but never longer than the schedule's longest wait."""
        base = self.waits[min(max(attempts, 1), len(self.waits)) - 1]
        wait = base * self.uniform(1 - JITTER, 1 + JITTER)
        if retry_after_s is not None and retry_after_s > wait:
            wait = max(wait, min(retry_after_s, self.longest))
        return wait

    def gives_up(self, first_attempt_us: int, now_us: int) -> bool:
        """True when what began at `first_attempt_us` has been failing longer than the give-up window."""
        return now_us - first_attempt_us > self.give_up_s * 1_000_000

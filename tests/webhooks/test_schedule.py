from __future__ import annotations

from collections.abc import Callable

import pytest

from rt.config import ConfigError, Settings
from rt.webhooks.schedule import Schedule, parse_duration


def fixed(factor: float) -> Callable[[float, float], float]:
    return lambda low, high: factor


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("5s", 5), ("2m", 120), ("1h", 3600), ("3d", 259_200), ("1.5s", 1.5), (" 30s ", 30)],
)
def test_durations_parse_in_every_unit(text: str, seconds: float) -> None:
    assert parse_duration(text, "RT_X") == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "5 s", "5sec", "-5s", "0s", "s", "1w", "5s5"])
def test_a_bad_duration_is_a_config_error_naming_the_setting(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_duration(text, "RT_WEBHOOK_SCHEDULE")
    assert "RT_WEBHOOK_SCHEDULE" in caught.value.detail


def test_settings_with_a_bad_give_up_name_it() -> None:
    with pytest.raises(ConfigError) as caught:
        Schedule.of(Settings(webhook_give_up="forever"))
    assert "RT_WEBHOOK_GIVE_UP" in caught.value.detail


def test_an_empty_schedule_is_refused() -> None:
    with pytest.raises(ConfigError):
        Schedule.of(Settings(webhook_schedule=()))


def test_the_default_schedule_backs_off_and_its_last_wait_repeats() -> None:
    schedule = Schedule.of(Settings(), fixed(1.0))
    waits = [schedule.wait(n) for n in range(1, 12)]
    assert waits[:3] == [5, 30, 120]
    assert waits == sorted(waits)
    assert waits[-1] == waits[-2] == waits[-3] == 8 * 3600


def test_each_wait_varies_by_twenty_percent_either_way() -> None:
    seen: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        seen.append((low, high))
        return high

    schedule = Schedule.parse(["10s"], "1d", uniform)
    assert schedule.wait(1) == pytest.approx(12)
    assert seen == [(0.8, 1.2)]
    assert Schedule.parse(["10s"], "1d", fixed(0.8)).wait(1) == pytest.approx(8)


def test_with_the_real_random_the_wait_stays_within_the_jitter() -> None:
    schedule = Schedule.parse(["10s"], "1d")
    waits = {schedule.wait(1) for _ in range(200)}
    assert all(8 <= w <= 12 for w in waits)
    assert len(waits) > 1


def test_retry_after_asks_for_longer_but_never_beyond_the_longest_wait() -> None:
    schedule = Schedule.parse(["1s", "10s", "60s"], "1d", fixed(1.0))
    assert schedule.wait(1, retry_after_s=30) == 30
    assert schedule.wait(1, retry_after_s=3600) == 60
    # a Retry-After shorter than the schedule's wait does not shorten it
    assert schedule.wait(2, retry_after_s=2) == 10


def test_a_delivery_gives_up_once_its_first_attempt_is_older_than_the_window() -> None:
    schedule = Schedule.parse(["1s"], "2m")
    first = 1_000_000_000
    assert not schedule.gives_up(first, first + 120 * 1_000_000)
    assert schedule.gives_up(first, first + 120 * 1_000_000 + 1)

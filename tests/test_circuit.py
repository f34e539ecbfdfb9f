"""The circuit breaker partners' calls and webhook deliveries share."""

from __future__ import annotations

from integrations.circuit import Circuit


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_it_opens_after_the_threshold_and_lets_one_trial_through_after_the_cooldown() -> None:
    clock = Clock()
    circuit = Circuit(threshold=3, cooldown_s=10, clock=clock)
    for _ in range(2):
        assert circuit.refusal() is None
        circuit.failed()
    assert circuit.refusal() is None and not circuit.paused()
    circuit.failed()
    assert circuit.paused() and circuit.refusal() == 10
    clock.now += 4
    assert circuit.refusal() == 6
    clock.now += 6
    assert not circuit.paused()
    assert circuit.refusal() is None  # the trial
    assert circuit.paused() and circuit.refusal() == 0  # no second call while the trial runs
    circuit.failed()  # the trial failed: open again at once, for a whole cool-down
    assert circuit.refusal() == 10
    clock.now += 10
    assert circuit.refusal() is None
    circuit.succeeded()
    assert not circuit.paused() and circuit.refusal() is None and circuit.failures == 0


def test_a_success_resets_the_count_of_failures() -> None:
    circuit = Circuit(threshold=2, cooldown_s=10, clock=Clock())
    circuit.failed()
    circuit.succeeded()
    circuit.failed()
    assert circuit.refusal() is None

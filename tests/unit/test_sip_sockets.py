"""The I/O queue socket budget of calls with RTP media."""

from router.sip.sockets import LINGER_SECONDS, SocketBudget


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_budget_refuses_leg_past_capacity():
    budget = SocketBudget(max_sockets=20, reserved=16, clock=FakeClock())

    assert budget.can_open(2)
    budget.opened()
    budget.opened()
    assert not budget.can_open(1)


def test_closed_leg_holds_sockets_until_linger_ends():
    clock = FakeClock()
    budget = SocketBudget(max_sockets=18, reserved=16, clock=clock)
    budget.opened()
    budget.closed()

    assert budget.in_use == 2
    assert not budget.can_open(1)
    clock.now += LINGER_SECONDS
    assert budget.in_use == 0
    assert budget.can_open(1)

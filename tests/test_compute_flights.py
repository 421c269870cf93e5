"""chorde._compute.Flights: pending flights (no Future for a lone caller), waiters' Futures,
and the claim/release flights of background work, in one registry."""

from __future__ import annotations

import threading

import pytest

from chorde._compute import Flight, Flights, _join

WAIT = 5


def test_a_lone_flight_makes_no_future():
    flights = Flights()
    mine = flights.begin("k")
    assert type(mine) is list and mine == [threading.get_ident()]
    assert flights.get("k") is None and len(flights) == 1  # pending: not a Flight
    assert not flights.ended_lately("k")
    flights.end("k", mine, 1)
    assert len(flights) == 0 and flights.ended_lately("k")


def test_waiters_get_the_owners_value_or_exception():
    flights = Flights()
    mine = flights.begin("k")
    waiters = []
    threads = [
        threading.Thread(target=lambda: waiters.append(flights.begin("k"))) for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert all(type(w) is Flight and not w.done() for w in waiters)
    assert {w.owner for w in waiters} == {threading.get_ident()}  # recursion is detectable
    flights.end("k", mine, "value")
    assert [w.result(WAIT) for w in waiters] == ["value"] * 3
    mine = flights.begin("k")
    waiter = flights.begin("k")
    error = KeyError("no")
    flights.end("k", mine, exc=error)
    assert waiter.exception(WAIT) is error


def test_a_waiter_coming_after_the_end_reads_again():
    """A caller that found the pending list just before its owner ended it joins too late:
    no Future (nobody would resolve it), the caller reads the value instead."""
    flights = Flights()
    found = flights.begin("k")
    assert type(found) is list
    flights.end("k", found, 1)
    assert _join(found) is None


def test_claim_joins_a_pending_flight_and_begin_joins_a_claimed_one():
    flights = Flights()
    mine = flights.begin("k")
    joined, owner = flights.claim("k")
    assert not owner and type(joined) is Flight
    flights.end("k", mine, 2)
    assert joined.result(WAIT) == 2
    flight, owner = flights.claim("j")
    assert owner and flights.get("j") is flight
    assert flights.begin("j") is flight
    flights.release("j", flight)
    assert flights.get("j") is None and flights.ended_lately("j")
    assert flights.take(flight) and not flights.take(flight)


@pytest.mark.parametrize("n", [2, 50])
def test_one_owner_under_contention(n):
    flights = Flights()
    barrier = threading.Barrier(n)
    got = []

    def caller():
        barrier.wait(WAIT)
        got.append(flights.begin("k"))

    threads = [threading.Thread(target=caller) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    owners = [g for g in got if type(g) is list]
    assert len(owners) == 1
    flights.end("k", owners[0], "v")
    assert all(g.result(WAIT) == "v" for g in got if type(g) is Flight)

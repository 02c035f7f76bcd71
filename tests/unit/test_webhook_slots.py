"""The deliveries' slots of a worker process, shared between users
(worker/webhooks.py, DeliverySlots): a user holding none may take any free slot;
a user holding some leaves the reserve to the others."""

from __future__ import annotations

import uuid

from worker.webhooks import DeliverySlots

A, B, C = (uuid.uuid4() for _ in range(3))


def test_a_user_holding_slots_leaves_the_reserve_to_users_holding_none():
    slots = DeliverySlots(16)
    assert slots.reserve == 4
    assert sum(slots.take(A) for _ in range(20)) == 12  # all but the reserve
    assert slots.take(B)  # holds none: any free slot
    assert not slots.take(B)  # holds one: only above the reserve
    assert slots.take(C)
    slots.give_back(A)
    assert not slots.take(A)  # what A gives up goes to those holding none
    assert slots.take(uuid.uuid4()) and slots.take(uuid.uuid4()) and slots.take(uuid.uuid4())
    assert not slots.take(uuid.uuid4())  # every slot taken: nobody waits on one


def test_two_slots_give_one_to_each_of_two_users():
    slots = DeliverySlots(2)
    assert slots.take(A) and not slots.take(A)
    assert slots.take(B) and not slots.take(C)
    slots.give_back(B)
    assert not slots.take(A)
    assert slots.take(C)


def test_a_single_slot_is_anyones_when_free():
    slots = DeliverySlots(1)
    assert slots.take(A) and not slots.take(B)
    slots.give_back(A)
    assert slots.take(A)


def test_a_slot_given_back_by_the_last_holder_is_free_for_them_again():
    slots = DeliverySlots(4)
    assert slots.take(A) and slots.take(A) and slots.take(A)
    assert not slots.take(A)
    for _ in range(3):
        slots.give_back(A)
    assert sum(slots.take(A) for _ in range(4)) == 3

"""Outlets at rest: an outlet's state packed into one bytes object while no event touches it.

A million outlets as `OutletState` objects cost ~600 bytes each beyond buffers (docs/performance.md,
"Memory per outlet"):
the object with its slots, a stamp, an onboarding int, tuples and dicts for orders and visits, and
the allocator's slack around a million small objects. Most outlets are touched rarely -- a rep
visits an outlet every week or two -- so `OutletBook` keeps only recently touched outlets as objects
and packs the others into bytes: ~25 bytes for an outlet that has only been onboarded (four in
five, in the generator's mix), a few hundred for one with a history of orders and visits. The
bytes are kept as records of one heap per book (cold_outlets.py), with no Python object per
outlet, which also makes engine snapshots a few buffers to pickle.

Two layouts, told apart by the first byte:
- BARE (no orders, visits or reactivations, and one stamp for all five attributes): a fixed head
  (layout, attribute-table index, and the onboarding instant unless it is the stamp's own, as when
  the onboarding event set the attributes) followed by the stamp's bytes;
- FULL: the layout byte, then `marshal` of the fields (order amounts as decimal strings: marshal
  has no Decimal, and the string of a Decimal reads back as the same Decimal, exponent and all).

The attribute tuple is stored as its index in the book's table of attribute combinations, which
only ever grows, so an index stays valid for the book's life (and its snapshots: the table is
pickled with the outlets).
"""

from __future__ import annotations

import marshal
import struct
from decimal import Decimal

from stream.core.outlet_state import STAMP_OFFSET, OutletState

_BARE_ONBOARDED = 0
_BARE = 1  # not onboarded (an outlet.updated, an order or a visit came first)
_FULL = 2
_BARE_ONBOARDED_AT_STAMP = 3  # onboarded_us is the instant the stamp starts with
_BARE_HEAD = struct.Struct("<BIq")  # layout, attribute index, onboarded_us (0 when _BARE)
_SHORT_HEAD = struct.Struct("<BI")  # _BARE_ONBOARDED_AT_STAMP: layout, attribute index
_STAMP_INSTANT = struct.Struct(">Q")  # how attribute_stamp starts: the instant + STAMP_OFFSET
_AMOUNT = 3  # position of the amount in each (slot, rep, count, amount, lines) record
_RECORD = 5
_RETURN_AMOUNT = 3  # in each (slot, rep, count, amount) record of `returns_by_slot`
_RETURN_RECORD = 4


def pack_outlet(state: OutletState, attribute_index: int) -> bytes:
    """`state` without its id (the book's key) as bytes; `attribute_index` is the position of
    `state.attributes` in the book's attribute table."""
    stamps = state.attribute_stamps
    onboarded = state.onboarded_us
    if (not state.order_times and not state.orders_by_slot and not state.order_slots
            and not state.reactivation_slots and state.reactivation_slot_counts is None
            and state.visits is None and state.first_link_slot is None and type(stamps) is bytes
            and state.order_records is None and state.cancelled is None and not state.returns_by_slot
            and not state.visit_slots and state.visit_days is None and not state.timed_visits
            and state.plans is None):
        # instants fit the signed 64-bit field: timeparse accepts four-digit years only
        if onboarded is None:
            return _BARE_HEAD.pack(_BARE, attribute_index, 0) + stamps
        if len(stamps) >= 8 and _STAMP_INSTANT.unpack_from(stamps)[0] == onboarded + STAMP_OFFSET:
            return _SHORT_HEAD.pack(_BARE_ONBOARDED_AT_STAMP, attribute_index) + stamps
        return _BARE_HEAD.pack(_BARE_ONBOARDED, attribute_index, onboarded) + stamps
    orders = state.orders_by_slot
    if orders:
        records = list(orders)
        records[_AMOUNT::_RECORD] = [str(amount) for amount in records[_AMOUNT::_RECORD]]
        orders = tuple(records)
    returns = state.returns_by_slot
    if returns:
        records = list(returns)
        records[_RETURN_AMOUNT::_RETURN_RECORD] = [str(amount) for amount in records[_RETURN_AMOUNT::_RETURN_RECORD]]
        returns = tuple(records)
    return bytes((_FULL,)) + marshal.dumps((
        attribute_index, stamps, onboarded, state.order_times, state.order_slots, state.reactivation_slots,
        state.reactivation_slot_counts, orders, state.visits, state.first_link_slot, state.order_records,
        state.cancelled, returns, state.visit_slots, state.visit_days, state.timed_visits, state.plans))


def unpack_outlet(packed: bytes, attribute_table: list[tuple]) -> tuple:
    """The arguments after the id of the `OutletState` that `pack_outlet` packed: equal field by
    field, types included."""
    layout = packed[0]
    if layout == _BARE_ONBOARDED_AT_STAMP:
        _, attribute_index = _SHORT_HEAD.unpack_from(packed)
        stamps = packed[_SHORT_HEAD.size:]
        return attribute_table[attribute_index], stamps, _STAMP_INSTANT.unpack_from(stamps)[0] - STAMP_OFFSET
    if layout != _FULL:
        _, attribute_index, onboarded = _BARE_HEAD.unpack_from(packed)
        return (attribute_table[attribute_index], packed[_BARE_HEAD.size:],
                onboarded if layout == _BARE_ONBOARDED else None)
    (attribute_index, stamps, onboarded, order_times, order_slots, reactivation_slots, reactivation_slot_counts,
     orders, visits, first_link_slot, *field_execution) = marshal.loads(memoryview(packed)[1:])
    if orders:
        records = list(orders)
        records[_AMOUNT::_RECORD] = [Decimal(amount) for amount in records[_AMOUNT::_RECORD]]
        orders = tuple(records)
    returns = field_execution[2]
    if returns:
        records = list(returns)
        records[_RETURN_AMOUNT::_RETURN_RECORD] = [Decimal(a) for a in records[_RETURN_AMOUNT::_RETURN_RECORD]]
        field_execution[2] = tuple(records)
    return (attribute_table[attribute_index], stamps, onboarded, order_times, order_slots, reactivation_slots,
            reactivation_slot_counts, orders, visits, first_link_slot, *field_execution)

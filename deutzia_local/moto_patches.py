"""Fills five gaps of moto that the local stack hits: three costs that grew without bound, an old limit, and a clock.
- moto keeps every model object it ever made (every version of every item, every overwritten S3 object, such as
  the poller's checkpoint after each batch) in a per-class list for its dashboard, so the stack's memory grew with
  every call and was never trimmed. Here those lists hold weak references: what moto still uses stays, the rest
  is freed.
- moto backs up a TransactWriteItems call by deep-copying every table it names, once per item (ten items over a
  table of 100,000 items copy a million items), so each transaction took longer and memory grew with every call.
  Here the backup copies only what the call can change: the table's item index (pointers) and the items it names.
- moto checks an item's 400 KB limit by re-measuring the whole item at every attribute it adds (quadratic: a put of
  81,000 attributes pinned the stack for minutes). Here the size is kept as attributes are added, and measured in
  full only when it seems to cross the limit or the item changed behind its back. The limit and its error stay.
- moto refuses a TransactWriteItems of more than 25 items, DynamoDB's limit until 2022; DynamoDB takes 100 now
  (and such calls are the ones whose CloudTrail events pass CloudWatch Logs' 256 KB). Here the limit is 100.
- moto's CloudTrail gives a trail's StartLoggingTime and StopLoggingTime as its UTC clock read as the machine's local
  time (`time.mktime` of a UTC time), so on a machine west of UTC a trail started a minute ago started hours from now
  (and east of it, hours ago), and the time it did not log was misplaced. Here those times are UTC's, as CloudTrail's.

Safe because the recorder sends DynamoDB calls to moto one at a time. moto is pinned; tests cover every patch.
"""

from __future__ import annotations

import calendar
import copy
import threading
import weakref
from collections import defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from moto.cloudtrail import models as moto_cloudtrail_models
from moto.core.common_models import BaseModel
from moto.dynamodb import responses as moto_dynamodb_responses
from moto.dynamodb.exceptions import ItemSizeTooLarge
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType, LimitedSizeDict
from moto.dynamodb.models.table import Table
from moto.dynamodb.models.utilities import bytesize

# DynamoDB's TransactWriteItems limit since September 2022.
TRANSACTION_MAX_ITEMS = 100
# moto's own item size limit (DynamoDB's 400 KB, as moto measured it).
_ITEM_SIZE_LIMIT = 405_000

KeysByTable = dict[str, list[Mapping[str, Any]]]
_call = threading.local()
_original_transact_write_items = DynamoDBBackend.transact_write_items
_original_new = BaseModel.__new__
# Dead references are dropped once the list has doubled since the last sweep (amortised constant time).
_FIRST_SWEEP = 1024


def apply() -> None:
    """Install the patch (idempotent)."""
    if BaseModel.__new__ is _original_new:
        BaseModel.__new__ = staticmethod(_weakly_tracked_new)  # type: ignore[method-assign]
    DynamoDBBackend.transact_write_items = _transact_write_items  # type: ignore[method-assign]
    Table.__deepcopy__ = _table_deepcopy  # type: ignore[attr-defined]
    LimitedSizeDict.__setitem__ = _limited_setitem  # type: ignore[method-assign]
    moto_dynamodb_responses.TRANSACTION_MAX_ITEMS = TRANSACTION_MAX_ITEMS
    moto_cloudtrail_models.datetime2int = utc_epoch_seconds  # type: ignore[assignment]


def utc_epoch_seconds(moment: datetime) -> int:
    """The epoch seconds of `moment`, a time in UTC without its zone, as moto's clock gives it."""
    return calendar.timegm(moment.timetuple())


class WeakInstances:
    """What moto's `instances_tracked` lists do (append, iterate), holding each object weakly."""

    def __init__(self, objects: object = ()) -> None:
        self._references: list[weakref.ref[Any]] = []
        self._sweep_at = _FIRST_SWEEP
        for item in objects:  # type: ignore[attr-defined]
            self.append(item)

    def append(self, item: object) -> None:
        try:
            self._references.append(weakref.ref(item))
        except TypeError:  # a model that cannot be referenced weakly is simply not listed
            return
        if len(self._references) >= self._sweep_at:
            self._references = [reference for reference in self._references if reference() is not None]
            self._sweep_at = max(_FIRST_SWEEP, 2 * len(self._references))

    def __iter__(self) -> Iterator[Any]:
        return (item for item in (reference() for reference in list(self._references)) if item is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _weakly_tracked_new(cls: type, *args: Any, **kwargs: Any) -> Any:
    tracked = cls.__dict__.get("instances_tracked")
    if not isinstance(tracked, WeakInstances):
        cls.instances_tracked = WeakInstances(tracked or ())  # type: ignore[attr-defined]
    return _original_new(cls, *args, **kwargs)


def _size_of(value: object) -> int:
    return value.size() if type(value) is DynamoType else bytesize(str(value))


def _measured(attributes: LimitedSizeDict) -> int:
    return sum(_size_of(name) + _size_of(value) for name, value in attributes.items())


def _limited_setitem(self: LimitedSizeDict, key: str, value: Any) -> None:
    """moto's check (the item as it is plus the new attribute, within the limit), with the size kept, not redone."""
    state = self.__dict__
    size = state.get("_deutzia_size")
    if size is None or state.get("_deutzia_len") != len(self):  # new, or changed through dict's own methods
        size = _measured(self)
    added = _size_of(key) + _size_of(value)
    if size + added > _ITEM_SIZE_LIMIT and _measured(self) + added > _ITEM_SIZE_LIMIT:
        raise ItemSizeTooLarge
    replaced = _size_of(key) + _size_of(self[key]) if key in self else 0
    dict.__setitem__(self, key, value)
    state["_deutzia_size"] = size + added - replaced
    state["_deutzia_len"] = len(self)


def _transact_write_items(self: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> None:
    with _named_keys(_keys_by_table(self, transact_items)):
        _original_transact_write_items(self, transact_items)


@contextmanager
def _named_keys(keys: KeysByTable) -> Iterator[None]:
    _call.keys = keys
    _call.backups = {}
    try:
        yield
    finally:
        _call.keys = None
        _call.backups = None


def _keys_by_table(backend: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> KeysByTable:
    """The keys each table's items are named by in the call (a Put's from its item), as moto reads them."""
    keys: KeysByTable = defaultdict(list)
    for entry in transact_items:
        for operation, body in entry.items():
            if not isinstance(body, Mapping):
                continue
            table: Table | None = backend.tables.get(str(body.get("TableName")))
            if table is None:
                continue
            source = body.get("Item") if operation == "Put" else body.get("Key")
            if isinstance(source, Mapping):
                keys[table.name].append(source)
    return keys


def _table_deepcopy(self: Table, memo: dict[int, Any]) -> Table:
    """Inside a patched transaction: one backup per table, sharing the items the call does not name. Elsewhere:
    Python's own deep copy."""
    keys: KeysByTable | None = getattr(_call, "keys", None)
    if keys is None:
        return _plain_deepcopy(self, memo)
    backups: dict[str, Table] = _call.backups
    if self.name not in backups:
        backups[self.name] = _backup(self, keys.get(self.name, []))
    backup: Table = backups[self.name]
    return backup


def _plain_deepcopy(table: Table, memo: dict[int, Any]) -> Table:
    clone: Table = object.__new__(type(table))
    memo[id(table)] = clone
    for name, value in vars(table).items():
        setattr(clone, name, copy.deepcopy(value, memo))
    return clone


def _backup(table: Table, keys: list[Mapping[str, Any]]) -> Table:
    backup = copy.copy(table)
    items: Any = defaultdict(dict)
    if table.range_key_attr:
        items.update({hash_value: dict(ranges) for hash_value, ranges in table.items.items()})
    else:
        items.update(table.items)
    for key in keys:
        hash_value = _typed(key.get(table.hash_key_attr))
        if hash_value is None or hash_value not in items:
            continue
        if table.range_key_attr:
            range_value = _typed(key.get(table.range_key_attr))
            if range_value is not None and range_value in items[hash_value]:
                items[hash_value][range_value] = copy.deepcopy(items[hash_value][range_value])
        else:
            items[hash_value] = copy.deepcopy(items[hash_value])
    backup.items = items
    return backup


def _typed(value: object) -> DynamoType | None:
    if not isinstance(value, Mapping) or len(value) != 1:
        return None
    try:
        return DynamoType(dict(value))
    except (TypeError, ValueError, IndexError):
        return None

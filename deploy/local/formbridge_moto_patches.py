"""Fixes to the local engine (moto server), loaded into the project's virtualenv by
`deploy/local/engine.sh` (a `.pth` line imports this module whenever its Python starts, so the
engine gets them however it is started: run.sh, test.sh, the chaos run, a test).

Nothing here imports moto up front: an import hook waits for `moto.dynamodb.models`, so every
other use of the virtualenv (pip, the template checks) pays nothing.

moto's server answers requests on threads, and its DynamoDB writes hold no lock. Two things go
wrong under concurrent writes, both found by the chaos run (`formbridge-loadtest chaos`):

1. A cancelled TransactWriteItems rolls back by putting back a deep copy of each table it
   touched, taken before it began. Writes other threads made in between are lost (items and
   their stream records), the copy's stream numbers records again from where the copy stopped
   (numbers are reused), and every open stream iterator is left on the replaced stream, reading
   nothing for good. DynamoDB does none of this. In the chaos run a destination update refused
   by its version condition (the 410 handling racing an operator's re-enable) stalled both
   stream consumers until their readers were restarted, and lost stream records (a submission
   stored, never fanned out, never counted).
2. A stream record's sequence number is `len(records) + start`, taken before the append, so
   two writes landing together can get the same number, or a later record a smaller one
   (seen: 2 in 1,973 records). DynamoDB's numbers are unique and increase within a shard; a
   consumer keeping a high-water mark per shard takes the second record for one it has seen.

The fix: one lock around every item write, every transaction (copy, apply, roll back) and every
stream append and read; a table's stream is shared by its rollback copy rather than copied, so the
stream and its iterators survive a rollback, and the records a cancelled transaction appended
before failing are taken back out. `shared/tests/it/stream.rs` checks both against the engine.
"""

import importlib.abc
import importlib.util
import sys
import threading

_TARGET = "moto.dynamodb.models"
_lock = threading.RLock()


def _locked(method):
    if getattr(method, "_formbridge_locked", False):
        return method

    def locked(*args, **kwargs):
        with _lock:
            return method(*args, **kwargs)

    locked._formbridge_locked = True
    locked.__name__ = method.__name__
    locked.__doc__ = method.__doc__
    return locked


def _patch(models):
    from moto.dynamodb.models.table import StreamShard

    if getattr(StreamShard, "_formbridge_patched", False):
        return
    StreamShard._formbridge_patched = True
    StreamShard.add = _locked(StreamShard.add)
    # Readers never see a record of a transaction that is still being applied (and may be
    # taken back out).
    StreamShard.get = _locked(StreamShard.get)
    # A rollback copy of a table shares its stream instead of copying it.
    StreamShard.__deepcopy__ = lambda self, memo: self

    backend = models.DynamoDBBackend
    for name in ("put_item", "update_item", "delete_item", "batch_write_item"):
        setattr(backend, name, _locked(getattr(backend, name)))
    transact = backend.transact_write_items

    def transact_write_items(self, transact_items, *args, **kwargs):
        with _lock:
            names = {
                inner.get("TableName")
                for op in transact_items
                if isinstance(op, dict)
                for inner in op.values()
                if isinstance(inner, dict)
            }
            before = {
                n: (self.tables[n], len(self.tables[n].stream_shard.items))
                for n in names
                if n in self.tables and self.tables[n].stream_shard is not None
            }
            try:
                return transact(self, transact_items, *args, **kwargs)
            except BaseException:
                for n, (table, length) in before.items():
                    shard = table.stream_shard
                    del shard.items[length:]
                    restored = self.tables.get(n)
                    if restored is not None and restored is not table:
                        restored.stream_shard = shard
                        shard.table = restored
                raise

    transact_write_items._formbridge_locked = True
    backend.transact_write_items = transact_write_items


class _PatchOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != _TARGET:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            _patch(module)

        spec.loader.exec_module = exec_module
        return spec


if _TARGET in sys.modules:
    _patch(sys.modules[_TARGET])
elif not any(isinstance(f, _PatchOnImport) for f in sys.meta_path):
    sys.meta_path.insert(0, _PatchOnImport())

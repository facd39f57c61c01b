"""moto_server with a bucket seeded in-process, for the bench's scale step.

Usage: python3 bench/_moto_seeded.py PORT BUCKET < objects.ndjson

Seeding a million objects through HTTP takes hours; here they go straight
into moto's in-memory backend. stdin holds one JSON object per line:
  {"key": K, "body": TEXT | "path": FILE, "md5": HEX, "meta": {...},
   "type": CONTENT_TYPE, "mtime": EPOCH_MS}
("path": the body is that local file's bytes; "mtime": the LastModified).
The keys, bodies and metadata are written by bench/_scale.ts with the
watcher's own formatting code, so they are what the watcher would upload.

moto lists a bucket by sorting every key of it on every page (a million
keys: seconds per page); this launcher keeps each bucket's key names in a
sorted list so that a page costs what it costs on S3, and ListObjectsV2
answers exactly as before (same order, folders, tokens). Prints "ready"
once serving on 127.0.0.1:PORT, then serves until killed.
"""

import datetime
import json
import logging
import os
import signal
import sys
import threading
import types

from moto.core import DEFAULT_ACCOUNT_ID
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.s3 import models
from moto.s3.utils import _VersionedKeyStore
from sortedcontainers import SortedList

REGION = "us-east-1"
# Past every character a key can hold: `folder + LAST` sorts after every
# key inside that folder.
LAST = "\U0010ffff"


class IndexedKeys(_VersionedKeyStore):
    """moto's key store, plus its key names in order."""

    def __init__(self) -> None:
        super().__init__()
        self.names = SortedList()
        self.lock = threading.Lock()

    def _added(self, key: str) -> None:
        with self.lock:
            if key not in self.names:
                self.names.add(key)

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        self._added(key)

    def setlist(self, key, list_):
        super().setlist(key, list_)
        self._added(key)

    def pop(self, key):
        super().pop(key)
        with self.lock:
            self.names.discard(key)

    def __delitem__(self, key):
        super().__delitem__(key)
        with self.lock:
            self.names.discard(key)


class SeededKey(models.FakeKey):
    """A FakeKey holding its (tiny) body as bytes, sharing what keys share.

    A stock FakeKey costs about 5 KB (a spooled temporary file, a lock, an
    ACL object each): a million of them would take 5 GB.
    """

    # moto files its model classes by the service in their module's name.
    __module__ = "moto.s3.seeded"

    @property
    def value(self) -> bytes:
        return self._body

    @value.setter
    def value(self, new_value: bytes) -> None:
        self._body = bytes(new_value)
        self.contentsize = len(self._body)

    def dispose(self, garbage: bool = False) -> None:
        self.disposed = True


SHARED_LOCK = threading.Lock()
SHARED_ACL = models.get_canned_acl("private")


original_v2 = models.S3Backend.list_objects_v2


def list_objects_v2(self, bucket, prefix, delimiter, continuation_token, start_after, max_keys):
    keys = bucket.keys
    if not isinstance(keys, IndexedKeys):
        return original_v2(
            self, bucket, prefix, delimiter, continuation_token, start_after, max_keys
        )
    prefix = prefix or ""
    after = self._pagination_tokens.get(continuation_token) if continuation_token else start_after
    out = []
    with keys.lock:
        names = keys.names
        i = names.bisect_left(prefix)
        if after is not None and after >= prefix:
            i = names.bisect_right(after)
        while i < len(names) and len(out) <= max_keys:
            name = names[i]
            if not name.startswith(prefix):
                break
            if delimiter:
                cut = name.find(delimiter, len(prefix))
                if cut >= 0:
                    folder = name[: cut + len(delimiter)]
                    i = names.bisect_left(folder + LAST)
                    if after is None or folder > after:
                        out.append(folder)
                    continue
            key = dict.get(keys, name)
            if key and not isinstance(key[-1], models.FakeDeleteMarker):
                out.append(key[-1])
            i += 1
    return self._truncate_result(out, max_keys)


def seed(backend, bucket_name: str, lines) -> int:
    bucket = backend.create_bucket(bucket_name, REGION)
    bucket.keys = IndexedKeys()
    count = 0
    # SeededKey never uses the buffer every FakeKey opens: skip opening it.
    spooled = models.tempfile
    models.tempfile = types.SimpleNamespace(SpooledTemporaryFile=lambda *_: None)
    for line in lines:
        if not line.strip():
            continue
        item = json.loads(line)
        if "path" in item:
            with open(item["path"], "rb") as f:
                body = f.read()
        else:
            body = item.get("body", "").encode("utf-8")
        key = SeededKey(
            name=item["key"],
            value=body,
            account_id=DEFAULT_ACCOUNT_ID,
            region_name=REGION,
            etag=item["md5"],
            bucket_name=bucket_name,
        )
        key.lock = SHARED_LOCK
        key.acl = SHARED_ACL
        meta = {f"x-amz-meta-{k}": v for k, v in item.get("meta", {}).items()}
        meta["Content-Type"] = item.get("type", "binary/octet-stream")
        key.set_metadata(meta)
        if "mtime" in item:
            key.last_modified = datetime.datetime.fromtimestamp(
                item["mtime"] / 1000, tz=datetime.timezone.utc
            ).replace(tzinfo=None)
        # Straight into the store: put_object would also send notifications.
        dict.__setitem__(bucket.keys, item["key"], [key])
        count += 1
    models.tempfile = spooled
    bucket.keys.names.update(dict.keys(bucket.keys))
    return count


def main() -> None:
    port, bucket_name = int(sys.argv[1]), sys.argv[2]
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    models.S3Backend.list_objects_v2 = list_objects_v2
    backend = models.s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    count = seed(backend, bucket_name, sys.stdin)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    print(f"ready {count}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass
    # Exit at once: tearing down a million objects takes minutes, and
    # nothing here needs to be saved.
    os._exit(0)


if __name__ == "__main__":
    main()

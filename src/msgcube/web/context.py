"""What every request handler needs: settings, the store, the clock, per-process caches
and the AppSecret checks."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime

from msgcube.auth.caller_cache import CallerCache
from msgcube.auth.secret_checks import SecretChecks
from msgcube.settings import Settings
from msgcube.storage.db import Store


class LRU:
    """A small thread-safe LRU map for answers that stay valid until a generation moves."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[object, object] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: object) -> object | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: object, value: object) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)


@dataclass
class AppContext:
    settings: Settings
    store: Store
    answers: LRU = field(default_factory=lambda: LRU(4096))
    callers: CallerCache = field(default_factory=CallerCache)
    secrets: SecretChecks = field(default_factory=SecretChecks)

    def now(self) -> datetime:
        return self.settings.clock()

    def now_ts(self) -> int:
        return int(self.now().timestamp())

"""What differs between sqla_boss's threaded and asyncio flavours, in pairs, side by side.

The asyncio modules (``async_worker.py``, ``async_boss.py``, ...) are the source of their sync twins
(``worker.py``, ``boss.py``, ...): ``tools/async_to_sync.py`` drops ``async`` and ``await``, renames each async
name to its twin's (``AEvent`` to ``Event``, ``Tasks`` to ``Threads``, ``ACaller`` to ``Caller``, ...) and
keeps only the ``else:`` branch of an ``if ASYNC:``. So every rule is written once, and what truly differs
between the flavours is here:

* a worker's loops run on daemon threads (:class:`Threads`) or on asyncio tasks (:class:`Tasks`);
* a handler that outlives its timeout is abandoned on its thread (:class:`Caller`) or, when it is a coroutine,
  cancelled (:class:`ACaller`); the asyncio flavour runs a plain function handler in a worker thread;
* stop signals come through ``signal.signal`` on the main thread, or through the event loop
  (:func:`signals_handled`, :func:`signals_handled_async`).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import queue
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from types import FrameType, TracebackType
from typing import Any, Final

logger = logging.getLogger("sqla_boss.worker")

ASYNC: Final = True
"""The test of the ``if ASYNC:`` blocks of the asyncio sources: true there (mypy is told it always is), and
the generator keeps only their ``else:`` branch in the sync twins."""

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
"""The signals that ask a worker's ``run()`` to stop: gracefully the first time, at once the second."""

JOIN_SLICE_SECONDS = 0.1
"""How often a thread waiting for others looks up to see whether it must stop waiting."""


@dataclass(frozen=True)
class Outcome:
    """How a call under a deadline ended: ``finished`` with its ``value`` or the ``error`` it raised (any
    ``BaseException``), or not finished in time (the call was abandoned or cancelled)."""

    finished: bool
    value: Any = None
    error: BaseException | None = None


# ----------------------------------------------------------------------------------------------- events

Event = threading.Event
"""A flag threads wait on, with a timeout: ``wait(seconds)`` says whether it was set."""


class AEvent:
    """:class:`Event` for asyncio tasks: ``await wait(seconds)`` says whether it was set."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self, timeout: float | None = None) -> bool:
        if timeout is None:
            await self._event.wait()
            return True
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)
        return self._event.is_set()


# ---------------------------------------------------------------------------------------------- crews


class Threads:
    """A worker's loops, each on a daemon thread of its own."""

    def __init__(self) -> None:
        self.members: list[threading.Thread] = []

    def spawn(self, function: Callable[..., None], name: str, *args: Any) -> None:
        thread = threading.Thread(target=function, args=args, name=name, daemon=True)
        self.members = [member for member in self.members if member.is_alive()]  # short-lived: heartbeats
        self.members.append(thread)
        thread.start()

    def wait(self, timeout: float, interrupt: Event | None = None) -> None:
        """Wait until every thread has ended, ``timeout`` seconds have passed, or ``interrupt`` is set."""
        deadline = time.monotonic() + timeout
        for thread in list(self.members):
            while thread.is_alive() and not (interrupt is not None and interrupt.is_set()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                thread.join(min(remaining, JOIN_SLICE_SECONDS))

    def cancel(self) -> None:
        """Threads cannot be cancelled: once the worker stops, each ends after the call it is in."""

    def __iter__(self) -> Iterator[threading.Thread]:
        return iter(list(self.members))


class Tasks:
    """A worker's loops, each on an asyncio task of its own, in the running event loop."""

    def __init__(self) -> None:
        self.members: list[asyncio.Task[None]] = []

    def spawn(self, function: Callable[..., Coroutine[Any, Any, None]], name: str, *args: Any) -> None:
        self.members = [member for member in self.members if not member.done()]  # short-lived: heartbeats
        self.members.append(asyncio.get_running_loop().create_task(function(*args), name=name))

    async def wait(self, timeout: float, interrupt: AEvent | None = None) -> None:
        """Wait until every task has ended, ``timeout`` seconds have passed, or ``interrupt`` is set."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        pending: set[asyncio.Future[Any]] = {task for task in self.members if not task.done()}
        waiter = None if interrupt is None else asyncio.ensure_future(interrupt.wait())
        try:
            while pending and (waiter is None or not waiter.done()) and loop.time() < deadline:
                watched = pending if waiter is None else {*pending, waiter}
                _, pending = await asyncio.wait(
                    watched, timeout=deadline - loop.time(), return_when=asyncio.FIRST_COMPLETED
                )
                pending.discard(waiter)
        finally:
            if waiter is not None:
                waiter.cancel()

    async def cancel(self) -> None:
        """Cancel the tasks still running and wait for them to end."""
        for task in self.members:
            task.cancel()
        await asyncio.gather(*self.members, return_exceptions=True)

    def __iter__(self) -> Iterator[asyncio.Task[None]]:
        return iter(list(self.members))


# -------------------------------------------------------------------------------------- calling handlers


def call_handler(function: Callable[..., Any], *args: Any) -> Any:
    """Call a handler here, in the calling thread."""
    return function(*args)


async def call_handler_async(function: Callable[..., Any], *args: Any) -> Any:
    """Await a coroutine function; run a plain one in a worker thread (``asyncio.to_thread``), so that it
    cannot block the event loop, and await what it returns if that is awaitable."""
    if inspect.iscoroutinefunction(function):
        return await function(*args)
    result = await asyncio.to_thread(function, *args)
    if inspect.isawaitable(result):
        return await result
    return result


class Caller:
    """Runs one loop's calls, one at a time, on a thread of its own, so the loop can stop waiting for a call
    that outlives its deadline. Such a call is **abandoned**: it runs on alone, its thread ends after it,
    and the next call gets a new thread."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._runner: _Runner | None = None

    def call(
        self,
        seconds: float,
        function: Callable[..., Any],
        *args: Any,
        if_abandoned: Callable[[], object] | None = None,
    ) -> Outcome:
        """``function(*args)`` on the runner thread, waited for ``seconds``; any ``BaseException`` it raises is
        the outcome's ``error``. If it is abandoned, ``if_abandoned()`` runs on that thread once it returns."""
        if self._runner is None:
            self._runner = _Runner(self.name)
        call = _Call(function, args, if_abandoned)
        self._runner.calls.put(call)
        outcome = call.result(seconds)
        if not outcome.finished:
            self.close()
        return outcome

    def close(self) -> None:
        """Let the runner thread end once its current call, if any, returns."""
        if self._runner is not None:
            self._runner.calls.put(None)
            self._runner = None


class ACaller:
    """Runs one loop's calls in the loop's own task under a deadline. A coroutine function that outlives it
    is **cancelled**; a plain function runs in a worker thread (:func:`call_handler_async`) and is
    abandoned there, as asyncio cannot cancel a thread."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def call(
        self,
        seconds: float,
        function: Callable[..., Any],
        *args: Any,
        if_abandoned: Callable[[], Awaitable[object]] | None = None,
    ) -> Outcome:
        """``await call_handler_async(function, *args)``, for at most ``seconds``; any ``BaseException`` it raises
        (but the cancellation of this task) is the outcome's ``error``. If the deadline passes, the call is
        cancelled, then ``await if_abandoned()`` runs."""
        timer = _deadline(seconds)
        try:
            async with timer:
                value = await call_handler_async(function, *args)
        except BaseException as error:
            if timer.expired() and isinstance(error, TimeoutError):
                if if_abandoned is not None:
                    await if_abandoned()
                return Outcome(False)
            if isinstance(error, asyncio.CancelledError) and _cancelled_from_outside():
                raise
            return Outcome(True, error=error)
        return Outcome(True, value=value)

    def close(self) -> None:
        """Nothing to release: the calls ran in the loop's own task."""


@dataclass
class _Call:
    """One call handed to a :class:`_Runner`, and the hand-over of its outcome, free of races: either the
    loop takes the outcome, or it abandons the call first and the runner cleans up after it."""

    function: Callable[..., Any]
    args: tuple[Any, ...]
    if_abandoned: Callable[[], object] | None

    def __post_init__(self) -> None:
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.abandoned = False
        self.outcome: Outcome | None = None

    def run(self) -> None:
        try:
            outcome = Outcome(True, value=self.function(*self.args))
        except BaseException as error:  # even SystemExit from a handler: the loop records it on its jobs
            outcome = Outcome(True, error=error)
        with self.lock:
            self.outcome = outcome
            abandoned = self.abandoned
        self.done.set()
        if abandoned and self.if_abandoned is not None:
            try:
                self.if_abandoned()
            except Exception:
                logger.debug("cleaning up after an abandoned call failed", exc_info=True)

    def result(self, seconds: float) -> Outcome:
        self.done.wait(seconds)
        with self.lock:
            if self.outcome is not None:
                return self.outcome
            self.abandoned = True
        return Outcome(False)


class _Runner:
    """A daemon thread running the calls put on its queue, one at a time, until it takes ``None``."""

    def __init__(self, name: str) -> None:
        self.calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        threading.Thread(target=self._serve, name=name, daemon=True).start()

    def _serve(self) -> None:
        while (call := self.calls.get()) is not None:
            call.run()


# ------------------------------------------------------------------------------------------- deadlines


class _Deadline:
    """``asyncio.timeout(seconds)`` for Python 3.10, which lacks it: cancels the current task when the
    deadline passes, and turns that cancellation into ``TimeoutError``."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._expired = False
        self._handle: asyncio.TimerHandle | None = None

    def expired(self) -> bool:
        return self._expired

    async def __aenter__(self) -> _Deadline:
        task = asyncio.current_task()
        assert task is not None

        def expire() -> None:
            self._expired = True
            task.cancel()

        self._handle = asyncio.get_running_loop().call_later(self._seconds, expire)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        assert self._handle is not None
        self._handle.cancel()
        if self._expired and kind is asyncio.CancelledError:
            raise TimeoutError from error


def _deadline(seconds: float) -> Any:
    if sys.version_info >= (3, 11):
        return asyncio.timeout(seconds)
    return _Deadline(seconds)  # pragma: no cover - Python 3.10


def _cancelled_from_outside() -> bool:
    """Whether the current task is being cancelled (worker stop), rather than a handler having raised
    ``CancelledError`` of its own; Python 3.10 cannot tell, and takes it as a cancellation."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return cancelling is None or cancelling() > 0


# --------------------------------------------------------------------------------------------- signals


@contextlib.contextmanager
def signals_handled(callback: Callable[[int], None]) -> Iterator[None]:
    """Call ``callback(signum)`` on SIGTERM and SIGINT while inside, when on the main thread (signals reach no
    other); the previous handlers come back on the way out."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        callback(signum)

    previous = {signum: signal.signal(signum, handle) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def signals_handled_async(callback: Callable[[int], None]) -> Iterator[None]:
    """:func:`signals_handled` through the running event loop's signal handlers, when it is the main
    thread's; removed on the way out."""
    loop = asyncio.get_running_loop()
    installed = []
    for signum in STOP_SIGNALS:
        try:
            loop.add_signal_handler(signum, callback, signum)
        except (RuntimeError, NotImplementedError, ValueError):  # not the main thread, or no signals here
            continue
        installed.append(signum)
    try:
        yield
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


__all__ = [
    "ASYNC",
    "ACaller",
    "AEvent",
    "Caller",
    "Event",
    "Outcome",
    "Tasks",
    "Threads",
    "call_handler",
    "call_handler_async",
    "signals_handled",
    "signals_handled_async",
]

"""possim terminals as Locust users: each user is one terminal, each message exchange one Locust request.

Install with `pip install 'possim[locust]'` and run `examples/locustfile.py` (docs/locust.md). This
is the only possim module that imports locust or gevent. Importing locust monkey-patches the
standard library (sockets, threads, locks, selectors), so nothing in possim imports this module;
only a locustfile does, inside a `locust` process.

The loop thread, and how a greenlet waits for it without blocking the hub
--------------------------------------------------------------------------
possim's terminals are asyncio code; Locust users are greenlets sharing gevent's hub. Each worker
process runs one asyncio event loop in a real OS thread, started with the original
`_thread.start_new_thread` (after monkey-patching, `threading.Thread` makes a greenlet, and so
does the original `threading.Thread` class, whose start-up goes through patched module globals).
That loop uses the original epoll selector (the patched `selectors.DefaultSelector` is gevent's).
Every terminal is built, driven and closed on that thread only, journal connection included.

A greenlet submits a coroutine with `asyncio.run_coroutine_threadsafe` and waits on a gevent
`AsyncResult`. The future's done-callback runs on the loop thread and does one thing: it calls
the hub's `loop.run_callback_threadsafe(...)`, which queues "set this AsyncResult" for the hub and
wakes it through libev's async watcher. The hub then sets the result and resumes the greenlet on
its own thread. So a waiting user costs no thread and the hub never blocks: while one terminal
waits for its host, every other user's greenlet runs. Rejected: waiting in `hub.threadpool`
(`threadpool.spawn(future.result)`) parks one OS thread per waiting user; the pool holds 10 threads
by default, which would cap a worker at ten messages in flight, and gevent's DNS resolver shares it.

Two more consequences of the patching. The loop thread has no executor: its threads would be
greenlets that never run, so anything sent to `run_in_executor` (asyncio's own DNS look-up
included) would hang; it raises instead. Host names in `-H` are therefore resolved once, in a
greenlet, and only `tcp://` links are accepted (serial links use threads).

Reports: the terminal's `HostChannel.observer` records each exchange on the loop thread
(`terminal.load.exchanges`); the user's greenlet fires them as Locust `request` events after each
operation, because Locust's events and statistics belong to the greenlets, not to other threads.

Identities: every user takes its own terminal identity (tid, mid, TMK) from the CSV given with
`--possim-identities` (as `possim load --emit-identities` writes it) or from
`generate_identities(--possim-terminals)`. A worker drives only its share,
`partition(fleet, worker_index, expect_workers)`, so workers never share a terminal id, and an
identity is used by one user once (its journal, STANs and batch die with the user). When a
worker's share is used up, a new user logs why, reports a failure (type "possim", name "identity") and stops.

Day end: on stop every user closes its day (`terminal.dayend.close_day`: settlement, batch upload
when unbalanced, sign-off). In master / worker mode the master asks every worker to do that
before it quits, and waits (up to `--possim-close-timeout`), so the day-end exchanges reach the
master's statistics; Locust alone would give workers half a second.

Card data: nothing here logs a PAN or a key; exchange reports carry names, times, sizes and codes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import gevent
from gevent import monkey
from gevent.event import AsyncResult, Event
from locust import User, events, task
from locust.exception import StopUser
from locust.runners import STATE_MISSING, MasterRunner, WorkerRunner

from ..config import TerminalConfig
from ..dayend import Backoff, close_day, retry
from ..links.url import parse_link_url
from ..result import OpResult
from .exchanges import ExchangeRecorder
from .identities import Identity, generate_identities, partition, read_identities
from .runner import DEFAULT_MIX, parse_mix

log = logging.getLogger("possim.locust")

T = TypeVar("T")

_start_new_thread = monkey.get_original("_thread", "start_new_thread")
_Selector = monkey.get_original("selectors", "DefaultSelector")

CLOSE_DAY_REQUEST = "possim_close_day"
CLOSE_DAY_DONE = "possim_day_closed"


class HostDeclined(Exception):
    """The host answered with a response code other than 00: 'rc 51 insufficient funds'."""


class TransportFailure(Exception):
    """No usable reply: offline, no reply in time, a reply whose MAC does not verify."""


class TerminalRefused(Exception):
    """The terminal did not get as far as a message (no identity left, not signed in, day not closed)."""


# ----------------------------------------------------------------------------------------------
# options
# ----------------------------------------------------------------------------------------------
def add_arguments(parser: Any) -> None:
    """Add the --possim-* options; call it from the locustfile's `init_command_line_parser` listener."""
    group = parser.add_argument_group("possim", "possim terminals (docs/locust.md); -H is the link, tcp://HOST:PORT")
    group.add_argument("--possim-identities", metavar="FILE", default="",
                       help="CSV tid,mid,tmk of the fleet (possim load --emit-identities); must exist on every "
                            "worker. Default: generated, as possim load --terminals N generates them")
    group.add_argument("--possim-terminals", type=int, default=1000, metavar="N",
                       help="fleet size to generate when --possim-identities is not given (default 1000)")
    group.add_argument("--possim-mix", default="sale=80,void=5,refund=5,balance=10",
                       help="transaction weights, as possim load --mix")
    group.add_argument("--possim-reply-timeout", type=float, default=10.0, metavar="SECONDS",
                       help="how long a terminal waits for each host reply (default 10)")
    group.add_argument("--possim-batch-capacity", type=int, default=None, metavar="N",
                       help="records a terminal's batch holds before it is full (default: the terminal's, 500); a "
                            "user whose batch is full settles it and signs in again")
    group.add_argument("--possim-close-timeout", type=float, default=60.0, metavar="SECONDS",
                       help="how long the master waits for the workers to close their terminals' day (default 60)")


@dataclass(frozen=True)
class Settings:
    identities: str
    terminals: int
    mix: dict[str, int]
    reply_timeout: float
    close_timeout: float
    batch_capacity: int | None = None

    @classmethod
    def from_environment(cls, environment: Any) -> Settings:
        """The --possim-* options (defaults when the locustfile did not add them). ValueError names the bad one."""
        options = environment.parsed_options

        def get(name: str, default: Any) -> Any:
            value = getattr(options, name, None) if options is not None else None
            return default if value is None else value

        settings = cls(identities=str(get("possim_identities", "")), terminals=int(get("possim_terminals", 1000)),
                       mix=parse_mix(str(get("possim_mix", ",".join(f"{k}={v}" for k, v in DEFAULT_MIX.items())))),
                       reply_timeout=float(get("possim_reply_timeout", 10.0)),
                       close_timeout=float(get("possim_close_timeout", 60.0)),
                       batch_capacity=get("possim_batch_capacity", None))
        if settings.terminals < 1:
            raise ValueError(f"--possim-terminals must be at least 1, got {settings.terminals}")
        if settings.reply_timeout <= 0:
            raise ValueError(f"--possim-reply-timeout must be positive, got {settings.reply_timeout:g}")
        if settings.batch_capacity is not None and (type(settings.batch_capacity) is not int
                                                    or settings.batch_capacity < 1):
            raise ValueError(f"--possim-batch-capacity must be a positive whole number, got {settings.batch_capacity}")
        return settings

    def fleet(self) -> list[Identity]:
        return read_identities(self.identities) if self.identities else generate_identities(self.terminals)


# ----------------------------------------------------------------------------------------------
# the loop thread
# ----------------------------------------------------------------------------------------------
class _NoThreads(concurrent.futures.ThreadPoolExecutor):
    """The loop thread's default executor: refuses, because its threads would be never-run greenlets."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        raise RuntimeError("possim's Locust loop thread has no executor (under gevent's patching its threads "
                           "would never run): use a tcp:// link with a numeric host or a name resolvable here")


def _settle(result: AsyncResult, future: concurrent.futures.Future[Any]) -> None:
    """On the hub: hand a finished future's outcome to the greenlet waiting on `result`."""
    if future.cancelled():
        result.set_exception(asyncio.CancelledError())
        return
    error = future.exception()
    if error is not None:
        result.set_exception(error)
    else:
        result.set(future.result())


class LoopThread:
    """One asyncio event loop in a real OS thread; `call(coroutine)` runs it there and waits cooperatively."""

    def __init__(self) -> None:
        self._hub_loop = gevent.get_hub().loop
        self._ready: AsyncResult = AsyncResult()
        self._loop: asyncio.AbstractEventLoop | None = None
        _start_new_thread(self._run, ())

    def _run(self) -> None:
        # built on its own thread, so the loop's sockets (gevent's, after patching) belong to it
        loop = asyncio.SelectorEventLoop(_Selector())
        loop.set_default_executor(_NoThreads(max_workers=1))
        asyncio.set_event_loop(loop)
        self._hub_loop.run_callback_threadsafe(self._ready.set, loop)
        try:
            loop.run_forever()
        finally:
            loop.close()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = self._ready.get(timeout=10)
        return self._loop

    def call(self, coroutine: Awaitable[T]) -> T:
        """Run `coroutine` on the loop thread; this greenlet sleeps until it is done, the hub keeps running.

        If this greenlet is killed while waiting, the coroutine runs on to its end (a terminal is
        never abandoned half-way through an exchange); the user's guard makes the next call wait for it.
        """
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        result: AsyncResult = AsyncResult()
        future.add_done_callback(partial(self._hub_loop.run_callback_threadsafe, _settle, result))
        return result.get()

    def stop(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._loop.stop)


# ----------------------------------------------------------------------------------------------
# this worker process: its loop thread, its share of the fleet, resolved links
# ----------------------------------------------------------------------------------------------
def _worker_slot(environment: Any) -> tuple[int, int]:
    """(this process's worker index, number of workers). A lone `locust` process is worker 0 of 1."""
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        count = int(getattr(environment.parsed_options, "expect_workers", 1) or 1)
        return int(runner.worker_index), count
    return 0, 1


def _numeric_link(url: str) -> str:
    """`-H` as a tcp:// URL with a numeric host (resolved here, cooperatively, once per host)."""
    import socket  # gevent's after patching: a cooperative resolver

    if not url:
        raise ValueError("no host: give the possim link with -H tcp://HOST:PORT")
    link = parse_link_url(url)
    if link.scheme != "tcp":
        raise ValueError(f"-H {url}: the Locust user drives tcp:// links only")
    try:
        ipaddress.ip_address(link.host)
        return url
    except ValueError:
        pass
    try:
        address = socket.getaddrinfo(link.host, link.port, type=socket.SOCK_STREAM)[0][4][0]
    except OSError as exc:
        raise ValueError(f"-H {url}: cannot resolve {link.host}: {exc}") from None
    host = f"[{address}]" if ":" in address else address
    return f"tcp://{host}:{link.port}"


class WorkerState:
    """What one worker process shares between its users."""

    def __init__(self, environment: Any) -> None:
        self.settings = Settings.from_environment(environment)
        index, count = _worker_slot(environment)
        fleet = self.settings.fleet()
        share = partition(fleet, index, count)
        self._share: Iterator[Identity] = iter(share)
        self.size = len(share)
        self.taken = 0
        self.closed = 0
        self.close_failed = 0
        self._links: dict[str, str] = {}
        self._exhausted_logged = False
        self.describe = (f"worker {index} of {count}: {len(share)} of {len(fleet)} terminal identities"
                         + (f" (from {share[0].tid}, stride {count})" if share else ""))
        if share:
            log.info("possim %s", self.describe)
        else:
            log.error("possim %s: none for this worker (start the master with --expect-workers equal to the "
                      "number of workers; a restarted worker gets a new index)", self.describe)
        self.loop = LoopThread()

    def take(self) -> Identity | None:
        identity = next(self._share, None)
        if identity is None:
            if not self._exhausted_logged:
                log.error("possim %s, all in use: a user beyond that has no terminal and stops (use fewer users "
                          "per worker, or a larger --possim-identities / --possim-terminals fleet)", self.describe)
                self._exhausted_logged = True
            return None
        self.taken += 1
        return identity

    def link(self, url: str) -> str:
        if url not in self._links:
            self._links[url] = _numeric_link(url)
        return self._links[url]


_process: WorkerState | None = None


def worker_state(environment: Any) -> WorkerState:
    """This process's WorkerState, made by the first user (never on a master: masters run no users)."""
    global _process
    if _process is None:
        _process = WorkerState(environment)
    return _process


# ----------------------------------------------------------------------------------------------
# the user
# ----------------------------------------------------------------------------------------------
class PossimUser(User):
    """One possim terminal: own identity, in-memory journal, STAN and batch. Subclass it in a locustfile.

    on_start powers on and signs in (retrying like `possim load`); the task runs one transaction of
    the mix; on_stop closes the day. Set `wait_time` in the subclass (Locust's default: no pause between tasks).
    """

    abstract = True

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self.identity: Identity | None = None
        self.terminal: Any = None  # built and used on the loop thread only
        self._worker: WorkerState | None = None
        self._unusable: str | None = None
        self._recorder = ExchangeRecorder()
        self._guard = asyncio.Lock()  # one operation at a time per terminal, whichever greenlet asks
        self._sales: list[tuple[str, int]] = []  # approved sales (STAN, fen) still open to void / refund
        self._rng = random.Random()

    # -- greenlet side -------------------------------------------------------------------------
    def _call(self, operation: Callable[[], Awaitable[T]]) -> T:
        assert self._worker is not None

        async def guarded() -> T:
            async with self._guard:
                return await operation()

        return self._worker.loop.call(guarded())

    def _report(self) -> int:
        """Fire one Locust request per exchange recorded since the last report; how many."""
        fire = self.environment.events.request.fire
        exchanges = self._recorder.drain()
        context = {**self.context(), "tid": self.identity.tid if self.identity else None}
        for ex in exchanges:
            exception: Exception | None = None
            if ex.failure is not None:
                exception = TransportFailure(ex.failure) if ex.transport else HostDeclined(ex.failure)
            fire(request_type="cup-pos", name=ex.name, response_time=ex.response_ms,
                 response_length=ex.response_bytes, response=None, context=context, exception=exception,
                 url=self.host)
        return len(exchanges)

    def _refused(self, name: str, reason: str) -> None:
        """A failure that sent no message (no identity, terminal not ready, day not closed)."""
        self.environment.events.request.fire(request_type="possim", name=name, response_time=0.0,
                                             response_length=0, response=None, context=self.context(),
                                             exception=TerminalRefused(reason), url=self.host)

    def on_start(self) -> None:
        try:
            self._worker = worker_state(self.environment)
            url = self._worker.link(self.host or "")
        except (ValueError, OSError) as exc:
            self._unusable = str(exc)
            log.error("possim: %s", exc)
            self._refused("setup", str(exc))
            return
        identity = self._worker.take()
        if identity is None:
            self._unusable = f"no terminal identity left: {self._worker.describe}, all in use"
            self._refused("identity", self._unusable)
            return
        self.identity = identity
        signed_in = self._call(partial(self._boot, identity, url, self._worker.settings))
        self._report()
        if not signed_in.ok:
            self._unusable = f"terminal {identity.tid} could not sign in: {signed_in.rc or signed_in.message}"
            log.error("possim: %s", self._unusable)

    @task
    def transact(self) -> None:
        """One transaction of the mix (sale, void, refund, balance), on this user's terminal."""
        if self._unusable is not None:
            raise StopUser()
        assert self._worker is not None
        result = self._call(partial(self._transact, self._worker.settings.mix))
        if not self._report() and not result.ok:
            self._refused(result.op, result.message or f"terminal {result.state}")

    def on_stop(self) -> None:
        if self.identity is None or self._worker is None:
            return
        result = self._call(self._close)
        self._report()
        if result.ok:
            self._worker.closed += 1
        else:
            self._worker.close_failed += 1
            log.error("possim: terminal %s: day not closed: %s", self.identity.tid, result.message)
            self._refused("close-day", result.message or "day not closed")

    # -- loop-thread side (coroutines) ---------------------------------------------------------
    async def _boot(self, identity: Identity, url: str, settings: Settings) -> OpResult:
        from ..core import Terminal
        from ..hardware import Hardware

        capacity = {} if settings.batch_capacity is None else {"batch_capacity": settings.batch_capacity}
        config = TerminalConfig(tid=identity.tid, mid=identity.mid, tmk=identity.tmk, connect=url, journal=":memory:",
                                reply_timeout=settings.reply_timeout, require_signature=False,
                                hardware={"sign_after_s": 0.0, "plugged_in": True},
                                **capacity)
        hardware = Hardware.from_config(config, clock=time.monotonic)
        hardware.printer.load_paper(10**9)
        terminal = Terminal(config, hardware=hardware, trace=self._recorder.trace)
        terminal.channel.observer = self._recorder.observe
        terminal.journal.keep_batches = 2  # a long run settles full batches: the journal keeps the last two
        self.terminal = terminal
        await terminal.power_on()
        # a fleet signing in at once can outrun the host: retry like a real terminal does
        return await retry(terminal.sign_in, backoff=Backoff(base=0.5, cap=5.0, attempts=4), rng=self._rng)

    async def _transact(self, mix: dict[str, int]) -> OpResult:
        terminal = self.terminal
        if terminal.state == "signed_out":  # the host dropped our keys (A0, 77...), or a settlement signed
            signed_in = await terminal.sign_in()  # off: sign in again first
            if not signed_in.ok:
                return signed_in
        if terminal.batch_full:
            self._sales.clear()  # the batch is full: settle it (this turn's operation); voids are for the next one
            return await terminal.settle()
        op = self._rng.choices(list(mix), list(mix.values()))[0]
        sales = self._sales
        if op == "void" and sales:
            stan, _ = sales.pop(self._rng.randrange(len(sales)))
            return await terminal.void(stan)
        if op == "refund" and sales:
            stan, amount = sales.pop(self._rng.randrange(len(sales)))
            return await terminal.refund(stan, max(1, amount // 2))
        if op == "balance":
            return await terminal.balance()
        amount = self._rng.randint(100, 50_000)  # 1.00 to 500.00: clear of the host's magic 900.xx amounts
        result: OpResult = await terminal.sale(amount)
        if result.ok:
            sales.append((str(result.stan), amount))
        return result

    async def _close(self) -> OpResult:
        terminal = self.terminal
        if terminal is None:
            return OpResult(op="close_day", ok=True, message="no terminal was built")
        try:
            if terminal.state in ("ready", "signed_out"):
                return await close_day(terminal, backoff=Backoff(base=0.2, cap=2.0, attempts=5), rng=self._rng)
            return OpResult(op="close_day", ok=False, state=terminal.state, message=f"terminal is {terminal.state}")
        finally:
            await terminal.shut_down()
            terminal.journal.close()


# ----------------------------------------------------------------------------------------------
# master / worker: close every terminal's day before the master quits
# ----------------------------------------------------------------------------------------------
class _DayEnd:
    """Master side: ask every worker to stop its users (closing their days) and wait for the answers."""

    def __init__(self, environment: Any, timeout: float) -> None:
        self.environment = environment
        self.timeout = timeout
        self.pending: set[str] = set()
        self.done = Event()
        self.done.set()

    def answered(self, environment: Any, msg: Any, **_: Any) -> None:
        self.pending.discard(msg.node_id)
        data = msg.data or {}
        log.info("possim: %s closed %s terminal days (%s failed)", msg.node_id, data.get("closed"), data.get("failed"))
        if not self.pending:
            self.done.set()

    def before_stop(self, **_: Any) -> None:
        runner = self.environment.runner
        workers = {c.id for c in runner.clients.all if c.state != STATE_MISSING}
        if not workers or not self.done.is_set():
            return
        self.pending, self.done = set(workers), Event()
        log.info("possim: asking %d workers to close their terminals' day", len(workers))
        runner.send_message(CLOSE_DAY_REQUEST)
        if not self.done.wait(timeout=self.timeout):
            log.error("possim: %d workers had not closed their day after %gs: %s", len(self.pending), self.timeout,
                      ", ".join(sorted(self.pending)))


def _close_days_on_worker(environment: Any, msg: Any, **_: Any) -> None:
    """Worker side: stop every user (each closes its day in on_stop), then tell the master."""
    environment.runner.stop()
    state = _process
    data = {"closed": state.closed if state else 0, "failed": state.close_failed if state else 0}
    environment.runner.send_message(CLOSE_DAY_DONE, data)


@events.init.add_listener
def _on_init(environment: Any, **_: Any) -> None:
    runner = environment.runner
    if runner is None:  # an Environment built by a script, without a runner: nothing to wire
        return
    if isinstance(runner, WorkerRunner):
        runner.register_message(CLOSE_DAY_REQUEST, _close_days_on_worker, concurrent=True)
        return
    try:  # a master or a lone locust: refuse bad options before any user starts
        settings = Settings.from_environment(environment)
        settings.fleet()
    except (ValueError, OSError) as exc:
        log.error("possim: %s", exc)
        raise SystemExit(2) from None
    if isinstance(runner, MasterRunner):
        day_end = _DayEnd(environment, settings.close_timeout)
        runner.register_message(CLOSE_DAY_DONE, day_end.answered)
        environment.events.test_stopping.add_listener(day_end.before_stop)


@events.quitting.add_listener
def _on_quitting(**_: Any) -> None:
    if _process is not None:
        _process.loop.stop()

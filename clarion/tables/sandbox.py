"""Templates are untrusted code: a Jinja2 sandbox with bounded size, work and time.

The plain SandboxedEnvironment keeps templates away from Python internals, but not from
the CPU and memory of the process rendering them: `{{ 9**(9**9) }}` hangs the compiler
(constant folding), `{{ 'x'*10**8 }}` allocates 100 MB, nested `range` loops run for
hours, and a worker renders in its event loop. Here:

- the optimizer is off, so nothing is computed at compile time;
- `*`, `**` and `+` are checked before they run (sizes of strings, sequences, integers);
- `range` yields at most RANGE_MAX items and checks the deadline as it goes;
- filters are wrapped: integer arguments and string results are bounded, and `replace`
  is checked before it multiplies its input; `lipsum` is gone, and so is `safe`;
- output is produced piece by piece and stops at `max_output` characters;
- the whole compile or render runs under a CPU-time budget, collections excluded (a profiling interval timer
  in the main thread; a signal is checked between bytecodes, which is where every
  template loop spends its time, while the size checks above keep any single C call
  short).
"""

from __future__ import annotations

import gc
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

RANGE_MAX = 10_000  # items a template's range() may yield
VALUE_MAX = 65_536  # characters or items any intermediate string or sequence may hold
INT_BITS_MAX = 4_096  # bits of any integer an operator may produce (~1,200 digits)
GC_ALLOWANCE_S = 1.0  # garbage collection inside one render that does not count against its budget


class LimitExceeded(Exception):
    """A template went over a size, work or time limit."""


def _too_big(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value.bit_length() > INT_BITS_MAX
    if isinstance(value, (str, bytes, list, tuple)):
        return len(value) > VALUE_MAX
    return False


_WIDE_FORMAT = re.compile(r"%[-+ #0]*(\*|\d{5,})|%[-+ #0]*\d*\.(\*|\d{5,})|\{[^}]*:[^}]*\d{5,}[^}]*\}")


def _check_format(fmt: Any) -> None:
    """A format string may not ask for widths or precisions that allocate before we can look."""
    if isinstance(fmt, str) and _WIDE_FORMAT.search(fmt):
        raise LimitExceeded("format width or precision too large")


def _check_binop(operator: str, left: Any, right: Any) -> None:
    if operator == "%":
        _check_format(left)
        return
    if operator == "**" and isinstance(left, (int, float)) and isinstance(right, (int, float)):
        if abs(right) > 64 and abs(left) > 1:  # 2**64 fits; 2**65 is more work than a message needs
            raise LimitExceeded(f"** with an exponent of {right}")
        return
    if operator == "*":
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, (str, bytes, list, tuple)) and isinstance(times, int):
                if len(seq) * max(times, 0) > VALUE_MAX:
                    raise LimitExceeded(f"* would make {len(seq) * times} items")
                return
        if isinstance(left, int) and isinstance(right, int) and left.bit_length() + right.bit_length() > INT_BITS_MAX:
            raise LimitExceeded("* of integers too large")
    if operator == "+" and isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
        if len(left) + len(right) > VALUE_MAX:
            raise LimitExceeded("+ would make too long a value")


class Deadline:
    """A render or compile budget in CPU time of the rendering thread, enforced by SIGPROF.

    CPU time, not wall time, and not the garbage collector's: on a loaded machine the
    scheduler may take the CPU away mid-render, and a full collection of a large worker
    heap can take longer than the whole budget; a good template must not fail for either.
    ITIMER_PROF counts the whole process, so it fires no later than the thread's own
    clock; the handler re-arms it for whatever the template has left.
    """

    def __init__(self) -> None:
        self.budget = float("inf")
        self.started = 0.0
        self.collecting = 0.0  # time spent in collections since `started`
        self._gc_from = 0.0
        self._in_gc = False
        self.armed = False

    def used(self) -> float:
        now = time.thread_time()
        collecting = self.collecting + (now - self._gc_from if self._in_gc else 0.0)
        # at most GC_ALLOWANCE_S of collections is forgiven: a template cannot hide its work in them
        return now - self.started - min(collecting, GC_ALLOWANCE_S)

    def check(self) -> None:
        if self.used() > self.budget:
            raise LimitExceeded(self._exceeded())

    def _exceeded(self) -> str:
        return f"time budget exceeded ({self.budget * 1000:.0f} ms of CPU)"

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_from = time.thread_time()
            self._in_gc = True
        else:
            self.collecting += time.thread_time() - self._gc_from
            self._in_gc = False

    def _on_tick(self, signum: int, frame: Any) -> None:
        if not self.armed:
            return
        left = self.budget - self.used()
        if left <= 0 and not self._in_gc:  # raised inside a gc callback, it would be printed and lost
            raise LimitExceeded(self._exceeded())
        signal.setitimer(signal.ITIMER_PROF, max(left, 0.001))

    @contextmanager
    def within(self, seconds: float) -> Iterator[None]:
        self.budget = seconds
        self.collecting = 0.0
        self._in_gc = False
        self.started = time.thread_time()
        gc.callbacks.append(self._on_gc)
        use_timer = threading.current_thread() is threading.main_thread()
        if use_timer:
            if signal.getsignal(signal.SIGPROF) != self._on_tick:  # installed once, armed per use
                signal.signal(signal.SIGPROF, self._on_tick)
            self.armed = True
            signal.setitimer(signal.ITIMER_PROF, seconds)
        try:
            yield
        finally:
            self.armed = False
            self.budget = float("inf")
            gc.callbacks.remove(self._on_gc)
            if use_timer:
                signal.setitimer(signal.ITIMER_PROF, 0)


DEADLINE = Deadline()


def _bounded_range(*args: int) -> Iterator[int]:
    span = range(*args)
    if len(span) > RANGE_MAX:
        raise LimitExceeded(f"range() of {len(span)} items (at most {RANGE_MAX})")
    for i, value in enumerate(span):
        if i % 256 == 0:
            DEADLINE.check()
        yield value


def _guard_filter(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def guarded(*args: Any, **kwargs: Any) -> Any:
        for value in (*args, *kwargs.values()):
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) > VALUE_MAX:
                raise LimitExceeded(f"filter {name} given {value}")
        if name == "replace" and len(args) >= 3:
            text, old, new = (str(a) for a in args[:3])
            if old and text.count(old) * len(new) > VALUE_MAX:
                raise LimitExceeded("filter replace would make too long a value")
        result = fn(*args, **kwargs)
        if _too_big(result):
            raise LimitExceeded(f"filter {name} made too long a value")
        return result

    for attr in ("jinja_pass_arg",):  # keep pass_context / pass_environment markers
        if hasattr(fn, attr):
            setattr(guarded, attr, getattr(fn, attr))
    return guarded


class LimitedSandbox(SandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(undefined=jinja2.StrictUndefined, optimized=False, **options)
        self.globals.pop("lipsum", None)
        self.globals["range"] = _bounded_range
        self.filters.pop("safe", None)
        self.filters = {name: _guard_filter(name, fn) for name, fn in self.filters.items()}

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        for value in (*args, *kwargs.values()):
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) > VALUE_MAX:
                raise LimitExceeded(f"call given {value}")
        result = super().call(__context, __obj, *args, **kwargs)
        if _too_big(result):
            raise LimitExceeded("a call made too long a value")
        return result

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """str.format and format_map reached from a template: check the format string first."""
        if getattr(value, "__name__", "") in ("format", "format_map"):
            _check_format(getattr(value, "__self__", None))
        return super().wrap_str_format(value)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _check_binop(operator, left, right)
        result = super().call_binop(context, operator, left, right)
        if _too_big(result):
            raise LimitExceeded(f"{operator} made too large a value")
        return result


def render_bounded(template: jinja2.Template, params: dict[str, Any], max_output: int) -> str:
    """Render piece by piece, stopping at `max_output` characters (call inside DEADLINE.within)."""
    pieces = []
    size = 0
    for piece in template.generate(params):
        size += len(piece)
        if size > max_output:
            raise LimitExceeded(f"output over {max_output} characters")
        pieces.append(piece)
    return "".join(pieces)

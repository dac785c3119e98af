"""How early a timer may fire. uvloop's timers run on libuv's millisecond
clock: the start is floored to the millisecond and the delay rounded to it,
so a 0.3 s sleep measured by time.monotonic() may end 1.5 ms early."""

TIMER_RESOLUTION = 0.002

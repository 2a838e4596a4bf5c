/* Preloaded before libfaketime on a lab host whose wall clock jumps (tests/lab/clock.py).
 *
 * libfaketime 0.9.10 (Debian 12) with FAKETIME_DONT_FAKE_MONOTONIC=1 still shifts the deadline of
 * clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, ...) by the wall-clock offset and hands the kernel
 * a negative time: every time.sleep() of Python >= 3.11 fails with EINVAL (libfaketime issue #426).
 * Sleeps on any clock but the wall clock go straight to the kernel here, as they would on a host
 * whose wall clock jumped; wall-clock sleeps stay libfaketime's. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int clock_nanosleep(clockid_t clock_id, int flags, const struct timespec *request, struct timespec *remain) {
    static int (*next)(clockid_t, int, const struct timespec *, struct timespec *);
    if (clock_id == CLOCK_REALTIME || clock_id == CLOCK_REALTIME_ALARM || clock_id == CLOCK_TAI) {
        if (!next)
            next = (int (*)(clockid_t, int, const struct timespec *, struct timespec *))dlsym(RTLD_NEXT, "clock_nanosleep");
        return next(clock_id, flags, request, remain);
    }
    /* clock_nanosleep() returns the error number instead of setting errno. */
    return syscall(SYS_clock_nanosleep, clock_id, flags, request, remain) == 0 ? 0 : errno;
}

#ifndef PGCONN_CLINUX_SHIM_H
#define PGCONN_CLINUX_SHIM_H

/* Glibc's Swift module does not export these headers (as swift-nio's CNIOLinux works around). */
#include <errno.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <netinet/tcp.h>
#include <sys/prctl.h>
#include <pthread.h>
#include <stdint.h>
#include <time.h>

/*
 * epoll_ctl returning 0 or the errno of the failure. Swift code must not read errno after a C call returns:
 * the runtime may call into libc (allocation, retain/release) and change it first.
 */
static inline int pgconn_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t token) {
    struct epoll_event event;
    event.events = events;
    event.data.u64 = token;
    return epoll_ctl(epfd, op, fd, op == EPOLL_CTL_DEL ? NULL : &event) == 0 ? 0 : errno;
}

/*
 * Names the calling thread for `top -H` and /proc/PID/task/TID/comm (15 bytes kept): Foundation's Thread.name
 * does not reach the kernel on Linux, and prctl is variadic, so Swift cannot call it.
 */
static inline void pgconn_name_thread(const char *name) {
    prctl(PR_SET_NAME, (unsigned long)name, 0UL, 0UL, 0UL);
}

/* A GNU extension the Glibc module leaves out; declared as glibc does. */
int pthread_timedjoin_np(pthread_t thread, void **retval, const struct timespec *abstime);

/*
 * Joins `thread` unless it is still running `timeout_ns` from now: 0 once joined, ETIMEDOUT (the thread still
 * joinable) otherwise. The deadline is on CLOCK_REALTIME, as pthread_timedjoin_np wants.
 */
static inline int pgconn_thread_join(pthread_t thread, int64_t timeout_ns) {
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    if (timeout_ns < 0) timeout_ns = 0;
    int64_t nanoseconds = (int64_t)deadline.tv_nsec + timeout_ns % 1000000000;
    deadline.tv_sec += (time_t)(timeout_ns / 1000000000 + nanoseconds / 1000000000);
    deadline.tv_nsec = (long)(nanoseconds % 1000000000);
    return pthread_timedjoin_np(thread, NULL, &deadline);
}

#endif

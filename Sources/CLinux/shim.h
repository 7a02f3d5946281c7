#ifndef PGCONN_CLINUX_SHIM_H
#define PGCONN_CLINUX_SHIM_H

/* Glibc's Swift module does not export these headers (as swift-nio's CNIOLinux works around). */
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <netinet/tcp.h>

#endif

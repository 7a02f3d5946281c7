#ifndef PGCONN_CMICROHTTPD_SHIM_H
#define PGCONN_CMICROHTTPD_SHIM_H

#include <errno.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <microhttpd.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

/*
 * libmicrohttpd 0.9.71 turned the callbacks' and functions' `int` results into `enum MHD_Result`. Swift
 * code uses these names only, so it builds against both: the enum where it exists, else a plain int.
 */
#if MHD_VERSION >= 0x00097002
typedef enum MHD_Result pgconn_mhd_result;
#else
typedef int pgconn_mhd_result;
/*
 * MHD_get_connection_info is variadic: the connection's GnuTLS session, NULL over plain HTTP. libmicrohttpd
 * creates it when it accepts the connection, before the connection-notification callback and the handshake,
 * so the callback can still choose the session's credentials, priorities and client-certificate policy.
 */
static inline gnutls_session_t pgconn_mhd_tls_session(struct MHD_Connection *connection) {
    const union MHD_ConnectionInfo *info = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    return info == NULL ? NULL : (gnutls_session_t)info->tls_session;
}

#endif
static const pgconn_mhd_result PGCONN_MHD_YES = MHD_YES;
static const pgconn_mhd_result PGCONN_MHD_NO = MHD_NO;

/*
 * MHD_start_daemon is variadic, which Swift does not import. This wrapper takes every option as one
 * MHD_OPTION_ARRAY (terminated by MHD_OPTION_END) and registers the request-completed and the
 * connection-notification callbacks with the same closure as the access handler (an option array can
 * carry only one pointer per option, and these options take two).
 *
 * It also returns errno through start_errno: 0.9.75 reports a failed bind(2) only by returning NULL
 * with errno still set, and the Swift runtime may clobber errno before Swift code could read it.
 */
static inline struct MHD_Daemon *pgconn_mhd_start_daemon(unsigned int flags,
                                                         uint16_t port,
                                                         MHD_AccessHandlerCallback handler,
                                                         MHD_RequestCompletedCallback completed,
                                                         MHD_NotifyConnectionCallback notify,
                                                         void *closure,
                                                         struct MHD_OptionItem *options,
                                                         int *start_errno) {
    errno = 0;
    struct MHD_Daemon *daemon = MHD_start_daemon(flags, port, NULL, NULL, handler, closure,
                                                 MHD_OPTION_NOTIFY_COMPLETED, completed, closure,
                                                 MHD_OPTION_NOTIFY_CONNECTION, notify, closure,
                                                 MHD_OPTION_ARRAY, options,
                                                 MHD_OPTION_END);
    *start_errno = (daemon == NULL) ? errno : 0;
    return daemon;
}

/* MHD_get_daemon_info is variadic: the port the listen socket really got (so callers may ask for port 0). */
static inline uint16_t pgconn_mhd_bound_port(struct MHD_Daemon *daemon) {
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(daemon, MHD_DAEMON_INFO_BIND_PORT);
    return info == NULL ? 0 : info->port;
}

/* MHD_get_daemon_info is variadic: the listen socket, for getsockname(2) on the bound address. */
static inline int pgconn_mhd_listen_fd(struct MHD_Daemon *daemon) {
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(daemon, MHD_DAEMON_INFO_LISTEN_FD);
    return info == NULL ? -1 : info->listen_fd;
}

/* MHD_get_connection_info is variadic: the connection's socket, or -1. */
static inline int pgconn_mhd_connection_fd(struct MHD_Connection *connection) {
    const union MHD_ConnectionInfo *info = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);
    return info == NULL ? -1 : info->connect_fd;
}

/*
 * MHD_get_connection_info is variadic: the connection's GnuTLS session, NULL over plain HTTP. libmicrohttpd
 * creates it when it accepts the connection, before the connection-notification callback and the handshake,
 * so the callback can still choose the session's credentials, priorities and client-certificate policy.
 */
static inline gnutls_session_t pgconn_mhd_tls_session(struct MHD_Connection *connection) {
    const union MHD_ConnectionInfo *info = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    return info == NULL ? NULL : (gnutls_session_t)info->tls_session;
}

#endif

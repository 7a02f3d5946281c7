#ifndef PGCONN_CLIBPQ_SHIM_H
#define PGCONN_CLIBPQ_SHIM_H

#include <libpq-fe.h>

/* PG_DIAG_* are char literals in a macro ('C'), which Swift does not import: plain ints instead. */
static const int PGCONN_DIAG_SQLSTATE = 'C';
static const int PGCONN_DIAG_SEVERITY_NONLOCALIZED = 'V';
static const int PGCONN_DIAG_MESSAGE_PRIMARY = 'M';

#endif

#ifndef PGCONN_CZLIB_SHIM_H
#define PGCONN_CZLIB_SHIM_H

#include <zlib.h>

/* deflateInit2 is a macro (it passes the header's version and the stream size); Swift does not import
   function-like macros, so this wrapper calls deflateInit2_ as the macro would. */
static inline int pgconn_deflate_init_gzip(z_streamp stream, int level) {
    return deflateInit2(stream, level, Z_DEFLATED, 15 + 16 /* gzip wrapper */, 8, Z_DEFAULT_STRATEGY);
}

#endif

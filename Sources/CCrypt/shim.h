#ifndef PGCONN_CCRYPT_SHIM_H
#define PGCONN_CCRYPT_SHIM_H

/* libxcrypt's crypt_r, which understands bcrypt ($2y$, $2b$, $2a$): basic-auth passwords are checked with it. */
#include <crypt.h>

#endif

#ifndef PGCONN_CLIBPQ_SHIM_H
#define PGCONN_CLIBPQ_SHIM_H

#include <libpq-fe.h>
#include <time.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

/* PG_DIAG_* are char literals in a macro ('C'), which Swift does not import: plain ints instead. */
static const int PGCONN_DIAG_SQLSTATE = 'C';
static const int PGCONN_DIAG_SEVERITY_NONLOCALIZED = 'V';
static const int PGCONN_DIAG_MESSAGE_PRIMARY = 'M';

/*
 * The notAfter of the server certificate of a TLS connection, as Unix seconds; 0 without TLS or certificate.
 * libpq is built on OpenSSL, and PQsslStruct(conn, "OpenSSL") hands out its SSL object; only this module owns
 * libpq, so the OpenSSL calls live here too. Reads memory only.
 */
static inline long long pgconn_pq_peer_certificate_not_after(PGconn *conn) {
    SSL *ssl = (SSL *)PQsslStruct(conn, "OpenSSL");
    if (ssl == NULL) return 0;
    X509 *certificate = SSL_get1_peer_certificate(ssl);
    if (certificate == NULL) return 0;
    struct tm parts;
    int parsed = ASN1_TIME_to_tm(X509_get0_notAfter(certificate), &parts);
    X509_free(certificate);
    return parsed == 1 ? (long long)timegm(&parts) : 0;
}

#endif

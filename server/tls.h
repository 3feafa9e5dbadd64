/*
 * TLS with OpenSSL 3 over memory BIOs: the loop hands in what the socket read and sends what comes out; nothing
 * here touches a socket, blocks or knows HTTP. One pt_tls_ctx_t per set of --ssl-* options (the certificate, key,
 * client-certificate policy, ciphers, versions, ALPN), one pt_tls_t per connection. conn.c decrypts with it and
 * out.c encrypts (docs/architecture.md, "TLS").
 */
#ifndef PT_TLS_H
#define PT_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "buf.h"
#include "config.h"

typedef struct pt_tls_ctx_s pt_tls_ctx_t;
typedef struct pt_tls_s pt_tls_t;

typedef enum {
    PT_TLS_CERT_NONE,     /* no client certificate asked for */
    PT_TLS_CERT_OPTIONAL, /* asked for, checked against --ssl-ca-certs if sent */
    PT_TLS_CERT_REQUIRED, /* a handshake without a valid one fails */
} pt_tls_cert_reqs_t;

typedef struct {
    const char *certfile; /* PEM: the certificate, then its chain */
    const char *keyfile;  /* PEM; NULL: in certfile */
    const char *password; /* of an encrypted key, or NULL */
    const char *ca_certs; /* PEM: the CAs client certificates are checked against, or NULL */
    const char *ciphers;  /* OpenSSL's cipher list for TLS 1.2, or NULL for its default */
    pt_tls_cert_reqs_t cert_reqs;
    int min_version; /* 12 or 13 */
    bool h2;         /* offer "h2" over ALPN, before "http/1.1" */
    bool h2_only;    /* ... and not "http/1.1" (--http 2) */
} pt_tls_opts_t;

/* Results of pt_tls_read. */
typedef enum {
    PT_TLS_OK,     /* carry on (the handshake may still be under way) */
    PT_TLS_CLOSED, /* the client sent close_notify: no more plaintext will come */
    PT_TLS_FAILED, /* a bad handshake or record: send what pt_tls_output holds (the alert), then close */
} pt_tls_status_t;

/* A context from the options: the certificate and key loaded and matched. NULL after writing why into err. */
pt_tls_ctx_t *pt_tls_ctx_new(const pt_tls_opts_t *o, char *err, size_t errlen);
/* Drops the caller's reference: the context goes once no connection uses it either. */
void pt_tls_ctx_free(pt_tls_ctx_t *ctx);
/* Makes ctx (the caller's reference, given up) the one new connections get, on any loop; the one before goes once
 * its connections end. NULL: none. */
void pt_tls_ctx_use(pt_tls_ctx_t *ctx);
/* The context of the --ssl-* options, or NULL after logging why ("cannot serve TLS: ..."). */
pt_tls_ctx_t *pt_tls_ctx_from_config(const pt_config_t *cfg);

/* A server-side connection, holding a reference to ctx; NULL when out of memory. */
pt_tls_t *pt_tls_new(pt_tls_ctx_t *ctx);
/* The same with the context pt_tls_ctx_use set (any thread). */
pt_tls_t *pt_tls_new_current(void);
void pt_tls_free(pt_tls_t *t);

/* Session tickets: a new sealing key now (every 12 hours on its own); the one before still opens tickets, the one
 * before that no longer does. */
void pt_tls_tickets_rotate(void);

/* Ciphertext in from the socket: plaintext appended to `plain`; what the handshake has to say waits for
 * pt_tls_output. */
pt_tls_status_t pt_tls_read(pt_tls_t *t, const char *data, size_t len, pt_buf_t *plain);
/* Plaintext out: its records join the connection's output (pt_tls_output). 0, or -1 (the connection is broken,
 * or still shaking hands with nothing to carry the bytes: a server speaks after the handshake). */
int pt_tls_write(pt_tls_t *t, const uv_buf_t *bufs, unsigned nbufs);
/* close_notify, into the connection's output. */
void pt_tls_close(pt_tls_t *t);
/* The records waiting to be sent (what pt_tls_write, pt_tls_close and the handshake wrote): the caller sends them
 * from there and consumes (pt_buf_consume) or takes (pt_buf_steal) what it sent or queued. */
pt_buf_t *pt_tls_output(pt_tls_t *t);
/* The server's certificate as PEM (the same string for every connection of a context). */
const char *pt_tls_server_cert(const pt_tls_t *t);
/* Why the last PT_TLS_FAILED (OpenSSL's reason), for the log. */
const char *pt_tls_error(const pt_tls_t *t);

bool pt_tls_ready(const pt_tls_t *t);          /* the handshake is done */
const char *pt_tls_alpn(const pt_tls_t *t);    /* "h2", "http/1.1", or "" */
const char *pt_tls_version(const pt_tls_t *t); /* "TLSv1.3" */
const char *pt_tls_cipher(const pt_tls_t *t);  /* "TLS_AES_256_GCM_SHA384" */
int pt_tls_version_number(const pt_tls_t *t);  /* 0x0304 for TLS 1.3 (the ASGI TLS extension's tls_version) */
int pt_tls_cipher_number(const pt_tls_t *t);   /* the IANA number of the cipher suite */
/* The client's certificate chain as PEM blocks (leaf first) into out; its subject as an RFC 4514 string into name;
 * and why it did not verify (or ""). Whether a certificate was sent. */
bool pt_tls_client_cert(const pt_tls_t *t, pt_buf_t *pem, pt_buf_t *name, const char **verify_error);

#endif

/*
 * TLS with OpenSSL 3 (see tls.h). OpenSSL reads and writes through a BIO of ours, not memory BIOs: its reads take
 * from the bytes the socket just gave (the span pt_tls_read was handed), its writes append to the connection's
 * output buffer. Nothing is copied twice, and an idle connection keeps no buffer of its own: with
 * SSL_MODE_RELEASE_BUFFERS OpenSSL frees its record buffers when they empty, and ours is empty between calls.
 */
#include "tls.h"

#include <openssl/err.h>
#include <openssl/core_names.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <string.h>

#include "log.h"

struct pt_tls_ctx_s {
    SSL_CTX *ssl;
    _Atomic int refs; /* the owner's, and one per connection */
    bool h2, h2_only;
    char *cert_pem; /* the server's certificate, as PEM (the ASGI TLS extension's server_cert) */
};

struct pt_tls_s {
    SSL *ssl;
    pt_tls_ctx_t *ctx; /* a reference: a reload frees the context once its last connection ends */
    const char *in;    /* what pt_tls_read was handed and OpenSSL has not taken yet */
    size_t in_len;
    pt_buf_t out; /* what OpenSSL wrote, until taken */
    char error[160];
};

static BIO_METHOD *bio_method;

/* The context new connections get (pt_tls_ctx_use): every loop's, swapped by a reload. */
static struct {
    uv_once_t once;
    uv_mutex_t lock;
    pt_tls_ctx_t *ctx;
} current = { UV_ONCE_INIT };

/* ---- the BIO between OpenSSL and a connection ---- */

static int
bio_read(BIO *b, char *data, size_t len, size_t *done)
{
    pt_tls_t *t = BIO_get_data(b);

    BIO_clear_retry_flags(b);
    if (t->in_len == 0) {
        BIO_set_retry_read(b); /* more comes with the next read from the socket */
        *done = 0;
        return 0;
    }
    if (len > t->in_len) {
        len = t->in_len;
    }
    memcpy(data, t->in, len);
    t->in += len;
    t->in_len -= len;
    *done = len;
    return 1;
}

static int
bio_write(BIO *b, const char *data, size_t len, size_t *done)
{
    pt_tls_t *t = BIO_get_data(b);

    BIO_clear_retry_flags(b);
    if (pt_buf_append(&t->out, data, len) < 0) {
        return 0; /* out of memory: OpenSSL fails the connection */
    }
    *done = len;
    return 1;
}

static long
bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)num;
    (void)ptr;
    switch (cmd) {
    case BIO_CTRL_FLUSH: return 1; /* the connection sends what was written */
    case BIO_CTRL_PENDING: return (long)((pt_tls_t *)BIO_get_data(b))->in_len;
    case BIO_CTRL_WPENDING: return 0;
    default: return 0;
    }
}

static int
bio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

/* ---- session tickets ---- */

/*
 * Sessions resume from tickets (RFC 5077; RFC 8446 4.6.1), which the client keeps and the server only decrypts:
 * no state here. They are sealed with keys of ours rather than OpenSSL's own, which would live as long as the
 * process: a key seals for TICKET_PERIOD_S and opens for one period more, so a key that leaked opens a day of
 * sessions at most. One key ring for every context, so a certificate reload does not end resumption. A ticket
 * sealed by the previous key is accepted and renewed.
 */
#define TICKET_PERIOD_S (12 * 3600)

typedef struct {
    unsigned char name[16], aes[32], hmac[32];
    bool set;
} ticket_key_t;

static struct {
    uv_once_t once;
    uv_mutex_t lock;
    ticket_key_t keys[2];   /* sealing, and the one before */
    uint64_t sealing_since; /* uv_hrtime() */
} tickets = { UV_ONCE_INIT };

static void
tickets_init(void)
{
    uv_mutex_init(&tickets.lock);
}

/* A new sealing key; the one before opens tickets for one period more. Lock held. */
static void
tickets_rotate_locked(void)
{
    tickets.keys[1] = tickets.keys[0];
    if (RAND_bytes(tickets.keys[0].name, sizeof(tickets.keys[0].name)) != 1
        || RAND_bytes(tickets.keys[0].aes, sizeof(tickets.keys[0].aes)) != 1
        || RAND_bytes(tickets.keys[0].hmac, sizeof(tickets.keys[0].hmac)) != 1) {
        tickets.keys[0].set = false; /* no ticket sealed: full handshakes */
    } else {
        tickets.keys[0].set = true;
    }
    tickets.sealing_since = uv_hrtime();
}

void
pt_tls_tickets_rotate(void)
{
    uv_once(&tickets.once, tickets_init);
    uv_mutex_lock(&tickets.lock);
    tickets_rotate_locked();
    uv_mutex_unlock(&tickets.lock);
}

static int
ticket_hmac(EVP_MAC_CTX *hctx, unsigned char *key)
{
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, key, 32),
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"sha256", 0),
        OSSL_PARAM_construct_end(),
    };

    return EVP_MAC_CTX_set_params(hctx, params);
}

/* OpenSSL's ticket callback: seal with the current key (enc), or find the key that sealed one. 1 done, 2 done and
 * renew the ticket, 0 no key (a full handshake), -1 error. */
static int
ticket_cb(SSL *s, unsigned char key_name[16], unsigned char *iv, EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
    ticket_key_t k[2];
    int i;

    (void)s;
    uv_once(&tickets.once, tickets_init);
    uv_mutex_lock(&tickets.lock);
    if (!tickets.keys[0].set || uv_hrtime() - tickets.sealing_since >= (uint64_t)TICKET_PERIOD_S * 1000000000u) {
        tickets_rotate_locked();
    }
    memcpy(k, tickets.keys, sizeof(k));
    uv_mutex_unlock(&tickets.lock);
    if (enc) {
        if (!k[0].set || RAND_bytes(iv, 16) != 1) {
            return -1;
        }
        memcpy(key_name, k[0].name, 16);
        return EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k[0].aes, iv) == 1 && ticket_hmac(hctx, k[0].hmac) == 1
            ? 1
            : -1;
    }
    for (i = 0; i < 2; i++) {
        if (k[i].set && memcmp(key_name, k[i].name, 16) == 0) {
            if (EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k[i].aes, iv) != 1
                || ticket_hmac(hctx, k[i].hmac) != 1) {
                return -1;
            }
            return i == 0 ? 1 : 2;
        }
    }
    return 0;
}

/* ---- the context ---- */

static int
password_cb(char *buf, int size, int rwflag, void *userdata)
{
    const char *pw = userdata;
    int n = pw ? (int)strlen(pw) : 0;

    (void)rwflag;
    if (n >= size) {
        return 0;
    }
    memcpy(buf, pw ? pw : "", (size_t)n + 1);
    return n;
}

/* ALPN: h2 when offered and served, else http/1.1; a client that offers ALPN but neither of these gets the fatal
 * no_application_protocol alert (RFC 7301 3.2). */
static int
alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in, unsigned inlen, void *arg)
{
    static const unsigned char h2[] = "\x02h2", h1[] = "\x08http/1.1";
    pt_tls_ctx_t *ctx = arg;
    unsigned char *sel;

    (void)ssl;
    if (ctx->h2 && SSL_select_next_proto(&sel, outlen, h2, sizeof(h2) - 1, in, inlen) == OPENSSL_NPN_NEGOTIATED) {
        *out = sel;
        return SSL_TLSEXT_ERR_OK;
    }
    if (!ctx->h2_only && SSL_select_next_proto(&sel, outlen, h1, sizeof(h1) - 1, in, inlen) == OPENSSL_NPN_NEGOTIATED) {
        *out = sel;
        return SSL_TLSEXT_ERR_OK;
    }
    return SSL_TLSEXT_ERR_ALERT_FATAL;
}

/* OpenSSL's latest reason, after `what`, into err. */
static void
say_error(char *err, size_t errlen, const char *what, const char *file)
{
    unsigned long e = ERR_peek_last_error();
    char reason[256] = "";

    if (e != 0) {
        ERR_error_string_n(e, reason, sizeof(reason));
    }
    snprintf(err, errlen, "%s%s%s%s%s", what, file ? " " : "", file ? file : "", reason[0] ? ": " : "", reason);
    ERR_clear_error();
}

static int
ctx_load(pt_tls_ctx_t *ctx, const pt_tls_opts_t *o, char *err, size_t errlen)
{
    SSL_CTX *s = ctx->ssl;
    const char *keyfile = o->keyfile ? o->keyfile : o->certfile;

    SSL_CTX_set_default_passwd_cb(s, password_cb);
    SSL_CTX_set_default_passwd_cb_userdata(s, (void *)o->password);
    if (SSL_CTX_use_certificate_chain_file(s, o->certfile) != 1) {
        say_error(err, errlen, "cannot load the certificate", o->certfile);
        return -1;
    }
    if (SSL_CTX_use_PrivateKey_file(s, keyfile, SSL_FILETYPE_PEM) != 1) {
        unsigned long e = ERR_peek_last_error();

        say_error(err, errlen,
                  ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH ? "the key does not match the certificate"
                      : o->password                               ? "cannot load the key (is the password right?)"
                                                                  : "cannot load the key",
                  keyfile);
        return -1;
    }
    SSL_CTX_set_default_passwd_cb_userdata(s, NULL); /* the password is not kept */
    if (SSL_CTX_check_private_key(s) != 1) {
        say_error(err, errlen, "the key does not match the certificate", o->certfile);
        return -1;
    }
    if (o->ciphers != NULL && SSL_CTX_set_cipher_list(s, o->ciphers) != 1) {
        say_error(err, errlen, "no usable cipher in --ssl-ciphers", o->ciphers);
        return -1;
    }
    if (o->ca_certs != NULL) {
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(o->ca_certs);

        if (names == NULL || SSL_CTX_load_verify_locations(s, o->ca_certs, NULL) != 1) {
            sk_X509_NAME_pop_free(names, X509_NAME_free);
            say_error(err, errlen, "cannot load the CA certificates", o->ca_certs);
            return -1;
        }
        SSL_CTX_set_client_CA_list(s, names);
    }
    if (o->cert_reqs != PT_TLS_CERT_NONE && o->ca_certs == NULL) {
        snprintf(err, errlen, "--ssl-cert-reqs %s needs --ssl-ca-certs to check client certificates against",
                 o->cert_reqs == PT_TLS_CERT_REQUIRED ? "required" : "optional");
        return -1;
    }
    if (o->cert_reqs != PT_TLS_CERT_NONE) {
        SSL_CTX_set_verify(
            s, SSL_VERIFY_PEER | (o->cert_reqs == PT_TLS_CERT_REQUIRED ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0), NULL);
    }
    return 0;
}

pt_tls_ctx_t *
pt_tls_ctx_new(const pt_tls_opts_t *o, char *err, size_t errlen)
{
    pt_tls_ctx_t *ctx = calloc(1, sizeof(*ctx));

    if (bio_method == NULL) {
        bio_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "ponte connection");
        if (bio_method == NULL || !BIO_meth_set_read_ex(bio_method, bio_read)
            || !BIO_meth_set_write_ex(bio_method, bio_write) || !BIO_meth_set_ctrl(bio_method, bio_ctrl)
            || !BIO_meth_set_create(bio_method, bio_create)) {
            snprintf(err, errlen, "cannot set up OpenSSL");
            free(ctx);
            return NULL;
        }
    }
    if (ctx == NULL || (ctx->ssl = SSL_CTX_new(TLS_server_method())) == NULL) {
        snprintf(err, errlen, "cannot set up OpenSSL (out of memory)");
        free(ctx);
        return NULL;
    }
    ctx->h2 = o->h2;
    ctx->h2_only = o->h2_only;
    atomic_init(&ctx->refs, 1);
    SSL_CTX_set_min_proto_version(ctx->ssl, o->min_version == 13 ? TLS1_3_VERSION : TLS1_2_VERSION);
    /* No renegotiation (a client could make the server redo a handshake at will); the server's cipher order;
     * record buffers freed while a connection is idle. */
    SSL_CTX_set_options(ctx->ssl, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_mode(ctx->ssl, SSL_MODE_RELEASE_BUFFERS);
    /* Sessions resume from tickets (RFC 8446 4.6.1, RFC 5077), which keep no state here; the id context lets a
     * session with a verified client certificate resume. */
    SSL_CTX_set_session_id_context(ctx->ssl, (const unsigned char *)"ponte", 5);
    SSL_CTX_set_session_cache_mode(ctx->ssl, SSL_SESS_CACHE_OFF); /* tickets only: no session kept here */
    SSL_CTX_set_alpn_select_cb(ctx->ssl, alpn_cb, ctx);
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx->ssl, ticket_cb);
    if (ctx_load(ctx, o, err, errlen) < 0) {
        pt_tls_ctx_free(ctx);
        return NULL;
    }
    {
        BIO *mem = BIO_new(BIO_s_mem());
        char *p;
        long n;

        if (mem != NULL && PEM_write_bio_X509(mem, SSL_CTX_get0_certificate(ctx->ssl)) == 1
            && (n = BIO_get_mem_data(mem, &p)) > 0 && (ctx->cert_pem = malloc((size_t)n + 1)) != NULL) {
            memcpy(ctx->cert_pem, p, (size_t)n);
            ctx->cert_pem[n] = '\0';
        }
        BIO_free(mem);
    }
    return ctx;
}

pt_tls_ctx_t *
pt_tls_ctx_from_config(const pt_config_t *cfg)
{
    pt_tls_opts_t o = { 0 };
    pt_tls_ctx_t *ctx;
    char err[512];

    o.certfile = cfg->ssl_certfile;
    o.keyfile = cfg->ssl_keyfile;
    o.password = cfg->ssl_keyfile_password;
    o.ca_certs = cfg->ssl_ca_certs;
    o.ciphers = cfg->ssl_ciphers;
    o.cert_reqs = (pt_tls_cert_reqs_t)cfg->ssl_cert_reqs;
    o.min_version = cfg->ssl_min_version;
    o.h2 = cfg->http != PT_HTTP_1;
    o.h2_only = cfg->http == PT_HTTP_2;
    ctx = pt_tls_ctx_new(&o, err, sizeof(err));
    if (ctx == NULL) {
        pt_log_error("cannot serve TLS: %s", err);
    }
    return ctx;
}

void
pt_tls_ctx_free(pt_tls_ctx_t *ctx)
{
    if (ctx != NULL && atomic_fetch_sub(&ctx->refs, 1) == 1) {
        SSL_CTX_free(ctx->ssl);
        free(ctx->cert_pem);
        free(ctx);
    }
}

static void
current_init(void)
{
    uv_mutex_init(&current.lock);
}

void
pt_tls_ctx_use(pt_tls_ctx_t *ctx)
{
    pt_tls_ctx_t *old;

    uv_once(&current.once, current_init);
    uv_mutex_lock(&current.lock);
    old = current.ctx;
    current.ctx = ctx;
    uv_mutex_unlock(&current.lock);
    pt_tls_ctx_free(old); /* freed once its last connection ends */
}

pt_tls_t *
pt_tls_new_current(void)
{
    pt_tls_t *t = NULL;

    uv_once(&current.once, current_init);
    uv_mutex_lock(&current.lock);
    if (current.ctx != NULL) {
        t = pt_tls_new(current.ctx);
    }
    uv_mutex_unlock(&current.lock);
    return t;
}

/* ---- a connection ---- */

pt_tls_t *
pt_tls_new(pt_tls_ctx_t *ctx)
{
    pt_tls_t *t = calloc(1, sizeof(*t));
    BIO *bio;

    if (t == NULL || (t->ssl = SSL_new(ctx->ssl)) == NULL || (bio = BIO_new(bio_method)) == NULL) {
        if (t != NULL) {
            SSL_free(t->ssl);
        }
        free(t);
        return NULL;
    }
    t->ctx = ctx;
    atomic_fetch_add(&ctx->refs, 1);
    BIO_set_data(bio, t);
    SSL_set_bio(t->ssl, bio, bio); /* one BIO both ways, owned by the SSL */
    SSL_set_accept_state(t->ssl);
    return t;
}

void
pt_tls_free(pt_tls_t *t)
{
    if (t != NULL) {
        SSL_free(t->ssl);
        pt_buf_free(&t->out);
        pt_tls_ctx_free((pt_tls_ctx_t *)t->ctx);
        free(t);
    }
}

static pt_tls_status_t
failed(pt_tls_t *t, const char *what)
{
    unsigned long e = ERR_peek_last_error();

    if (e != 0) {
        snprintf(t->error, sizeof(t->error), "%s: %s", what, ERR_reason_error_string(e));
    } else {
        snprintf(t->error, sizeof(t->error), "%s", what);
    }
    ERR_clear_error();
    return PT_TLS_FAILED;
}

pt_tls_status_t
pt_tls_read(pt_tls_t *t, const char *data, size_t len, pt_buf_t *plain)
{
    int r;

    t->in = data;
    t->in_len = len;
    if (!SSL_is_init_finished(t->ssl)) {
        r = SSL_do_handshake(t->ssl);
        if (r <= 0) {
            int e = SSL_get_error(t->ssl, r);

            t->in_len = 0;
            return e == SSL_ERROR_WANT_READ ? PT_TLS_OK : failed(t, "handshake");
        }
    }
    for (;;) {
        size_t n = 0;

        if (pt_buf_reserve(plain, 16 * 1024) < 0) {
            t->in_len = 0;
            return failed(t, "out of memory");
        }
        r = SSL_read_ex(t->ssl, plain->data + plain->len, plain->cap - plain->len, &n);
        if (r == 1) {
            plain->len += n;
            continue;
        }
        switch (SSL_get_error(t->ssl, r)) {
        case SSL_ERROR_WANT_READ: t->in_len = 0; return PT_TLS_OK;
        case SSL_ERROR_ZERO_RETURN: t->in_len = 0; return PT_TLS_CLOSED;
        default: t->in_len = 0; return failed(t, "read");
        }
    }
}

/* One SSL_write: a record per 16 KiB of it. */
static int
write_one(pt_tls_t *t, const char *p, size_t len)
{
    size_t n;

    if (len > 0 && SSL_write_ex(t->ssl, p, len, &n) != 1) {
        failed(t, "write");
        return -1;
    }
    return 0;
}

int
pt_tls_write(pt_tls_t *t, const uv_buf_t *bufs, unsigned nbufs)
{
    char chunk[16 * 1024]; /* small buffers (a head, a chunk's framing) share a record, not one each */
    size_t used = 0;
    unsigned i;
    int r = 0;

    for (i = 0; i < nbufs && r == 0; i++) {
        const char *p = bufs[i].base;
        size_t len = bufs[i].len;

        if (used + len <= sizeof(chunk)) {
            memcpy(chunk + used, p, len);
            used += len;
            continue;
        }
        r = write_one(t, chunk, used);
        used = 0;
        if (r == 0 && len < sizeof(chunk)) {
            memcpy(chunk, p, len);
            used = len;
        } else if (r == 0) {
            r = write_one(t, p, len);
        }
    }
    if (r == 0) {
        r = write_one(t, chunk, used);
    }
    return r;
}

void
pt_tls_close(pt_tls_t *t)
{
    if (SSL_is_init_finished(t->ssl)) {
        SSL_shutdown(t->ssl);
    }
    ERR_clear_error();
}

pt_buf_t *
pt_tls_output(pt_tls_t *t)
{
    return &t->out;
}

const char *
pt_tls_server_cert(const pt_tls_t *t)
{
    return t->ctx->cert_pem ? t->ctx->cert_pem : "";
}

const char *
pt_tls_error(const pt_tls_t *t)
{
    return t->error;
}

bool
pt_tls_ready(const pt_tls_t *t)
{
    return SSL_is_init_finished(t->ssl);
}

const char *
pt_tls_alpn(const pt_tls_t *t)
{
    static const char *const names[] = { "h2", "http/1.1" };
    const unsigned char *p;
    unsigned len;
    size_t i;

    SSL_get0_alpn_selected(t->ssl, &p, &len);
    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (len == strlen(names[i]) && memcmp(p, names[i], len) == 0) {
            return names[i];
        }
    }
    return "";
}

const char *
pt_tls_version(const pt_tls_t *t)
{
    return SSL_get_version(t->ssl);
}

const char *
pt_tls_cipher(const pt_tls_t *t)
{
    const SSL_CIPHER *c = SSL_get_current_cipher(t->ssl);

    return c ? SSL_CIPHER_get_name(c) : "";
}

int
pt_tls_version_number(const pt_tls_t *t)
{
    return SSL_version(t->ssl);
}

int
pt_tls_cipher_number(const pt_tls_t *t)
{
    const SSL_CIPHER *c = SSL_get_current_cipher(t->ssl);

    return c ? (int)SSL_CIPHER_get_protocol_id(c) : 0;
}

bool
pt_tls_client_cert(const pt_tls_t *t, pt_buf_t *pem, pt_buf_t *name, const char **verify_error)
{
    X509 *leaf = SSL_get0_peer_certificate(t->ssl);
    STACK_OF(X509) * chain;
    long v;
    BIO *mem;
    int i;

    *verify_error = "";
    if (leaf == NULL) {
        return false; /* most connections: asked for every request, so nothing more is looked up */
    }
    chain = SSL_get_peer_cert_chain(t->ssl);
    v = SSL_get_verify_result(t->ssl);
    if (v != X509_V_OK) {
        *verify_error = X509_verify_cert_error_string(v);
    }
    mem = BIO_new(BIO_s_mem());
    if (mem == NULL) {
        return true;
    }
    /* The server side's chain leaves out the leaf (SSL_get_peer_cert_chain): the leaf first, then the rest. */
    PEM_write_bio_X509(mem, leaf);
    for (i = 0; chain != NULL && i < sk_X509_num(chain); i++) {
        X509 *x = sk_X509_value(chain, i);

        if (X509_cmp(x, leaf) != 0) {
            PEM_write_bio_X509(mem, x);
        }
    }
    {
        char *p;
        long n = BIO_get_mem_data(mem, &p);

        pt_buf_append(pem, p, (size_t)n);
        (void)BIO_reset(mem);
        X509_NAME_print_ex(mem, X509_get_subject_name(leaf), 0, XN_FLAG_RFC2253);
        n = BIO_get_mem_data(mem, &p);
        pt_buf_append(name, p, (size_t)n);
    }
    BIO_free(mem);
    return true;
}

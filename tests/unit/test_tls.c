/*
 * TLS (server/tls.c) in one process: an OpenSSL client over memory BIOs against pt_tls_t, the bytes carried by
 * hand. Certificates are made here (a CA, a server certificate and a client certificate it signs, and an encrypted
 * key), written to a temporary directory.
 */
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tap.h"
#include "tls.h"

static char dir[64];

static char *
path(const char *name)
{
    static char p[8][128];
    static int k;

    k = (k + 1) % 8;
    snprintf(p[k], sizeof(p[k]), "%s/%s", dir, name);
    return p[k];
}

/* A certificate for cn, signed by (ca, ca_key), or self-signed when ca is NULL. */
static X509 *
make_cert(const char *cn, EVP_PKEY *key, X509 *ca, EVP_PKEY *ca_key, bool is_ca, long days)
{
    X509 *x = X509_new();
    X509_NAME *name = X509_NAME_new();
    X509V3_CTX v3;
    X509_EXTENSION *ext;

    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), (long)(rand() & 0x7fffffff));
    X509_gmtime_adj(X509_getm_notBefore(x), days < 0 ? days * 2 * 86400L : -60);
    X509_gmtime_adj(X509_getm_notAfter(x), days * 86400L);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_subject_name(x, name);
    X509_set_issuer_name(x, ca ? X509_get_subject_name(ca) : name);
    X509_set_pubkey(x, key);
    X509V3_set_ctx(&v3, ca ? ca : x, x, NULL, NULL, 0);
    ext = X509V3_EXT_conf_nid(NULL, &v3, NID_basic_constraints, is_ca ? "critical,CA:TRUE" : "CA:FALSE");
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    if (!is_ca) {
        ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1");
        X509_add_ext(x, ext, -1);
        X509_EXTENSION_free(ext);
    }
    X509_sign(x, ca_key ? ca_key : key, EVP_sha256());
    X509_NAME_free(name);
    return x;
}

static void
write_pem(const char *name, X509 *x, EVP_PKEY *key, const char *password)
{
    FILE *f = fopen(path(name), "w");

    if (x != NULL) {
        PEM_write_X509(f, x);
    }
    if (key != NULL) {
        PEM_write_PrivateKey(f, key, password ? EVP_aes_256_cbc() : NULL, (unsigned char *)password,
                             password ? (int)strlen(password) : 0, NULL, NULL);
    }
    fclose(f);
}

static void
make_files(void)
{
    EVP_PKEY *ca_key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256"),
             *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    EVP_PKEY *ckey = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256"),
             *other = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    X509 *ca = make_cert("ponte test CA", ca_key, NULL, NULL, true, 1);
    X509 *cert = make_cert("localhost", key, ca, ca_key, false, 1);
    X509 *client = make_cert("a client", ckey, ca, ca_key, false, 1);
    X509 *stranger = make_cert("a stranger", other, NULL, NULL, false, 1);
    X509 *expired = make_cert("an expired client", other, ca, ca_key, false, -1);

    write_pem("ca.pem", ca, NULL, NULL);
    write_pem("cert.pem", cert, NULL, NULL);
    write_pem("key.pem", NULL, key, NULL);
    write_pem("both.pem", cert, key, NULL);
    write_pem("key-pw.pem", NULL, key, "s3cret");
    write_pem("client.pem", client, ckey, NULL);
    write_pem("stranger.pem", stranger, other, NULL);
    write_pem("expired.pem", expired, other, NULL);
    write_pem("other-key.pem", NULL, other, NULL);
    X509_free(ca), X509_free(cert), X509_free(client), X509_free(stranger), X509_free(expired);
    EVP_PKEY_free(ca_key), EVP_PKEY_free(key), EVP_PKEY_free(ckey), EVP_PKEY_free(other);
}

/* ---- a client over memory BIOs, and the bytes carried between it and the server ---- */

/* What the server has to send, moved into out (as out.c sends it from pt_tls_output). */
static void
take_output(pt_tls_t *t, pt_buf_t *out)
{
    pt_buf_t *records = pt_tls_output(t);

    pt_buf_append(out, records->data, records->len);
    records->len = 0;
}

typedef struct {
    SSL_CTX *ctx;
    SSL *ssl;
    BIO *in, *out; /* what the server sent the client; what the client sends */
    pt_tls_t *server;
    pt_buf_t plain; /* what the server decrypted */
    pt_tls_status_t status;
} pair_t;

static void
pair_open(pair_t *p, pt_tls_ctx_t *sctx, const char *alpn, size_t alpn_len, const char *client_pem, int max_version)
{
    memset(p, 0, sizeof(*p));
    p->ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_load_verify_locations(p->ctx, path("ca.pem"), NULL);
    SSL_CTX_set_verify(p->ctx, SSL_VERIFY_PEER, NULL);
    if (max_version) {
        SSL_CTX_set_max_proto_version(p->ctx, max_version);
    }
    if (client_pem != NULL) {
        SSL_CTX_use_certificate_file(p->ctx, path(client_pem), SSL_FILETYPE_PEM);
        SSL_CTX_use_PrivateKey_file(p->ctx, path(client_pem), SSL_FILETYPE_PEM);
    }
    p->ssl = SSL_new(p->ctx);
    p->in = BIO_new(BIO_s_mem());
    p->out = BIO_new(BIO_s_mem());
    SSL_set_bio(p->ssl, p->in, p->out);
    SSL_set_tlsext_host_name(p->ssl, "localhost");
    if (alpn != NULL) {
        SSL_set_alpn_protos(p->ssl, (const unsigned char *)alpn, (unsigned)alpn_len);
    }
    SSL_set_connect_state(p->ssl);
    p->server = pt_tls_new(sctx);
}

/* Carries bytes both ways until neither side has more to say. */
static void
pair_pump(pair_t *p)
{
    int rounds;

    for (rounds = 0; rounds < 20; rounds++) {
        char buf[65536];
        int n = BIO_read(p->out, buf, sizeof(buf));
        pt_buf_t to_client = { 0 };

        if (n > 0) {
            p->status = pt_tls_read(p->server, buf, (size_t)n, &p->plain);
        }
        take_output(p->server, &to_client);
        if (to_client.len > 0) {
            BIO_write(p->in, to_client.data, (int)to_client.len);
        }
        pt_buf_free(&to_client);
        if (!SSL_is_init_finished(p->ssl)) {
            SSL_do_handshake(p->ssl);
        }
        if (n <= 0 && BIO_ctrl_pending(p->out) == 0 && to_client.len == 0) {
            break;
        }
    }
}

static void
pair_close(pair_t *p)
{
    SSL_free(p->ssl);
    SSL_CTX_free(p->ctx);
    pt_tls_free(p->server);
    pt_buf_free(&p->plain);
    ERR_clear_error();
}

static pt_tls_ctx_t *
server_ctx(const char *cert, const char *key, const char *password, pt_tls_cert_reqs_t reqs, bool h2, char *err)
{
    pt_tls_opts_t o = { 0 };

    o.certfile = path(cert);
    o.keyfile = key ? path(key) : NULL;
    o.password = password;
    o.ca_certs = reqs != PT_TLS_CERT_NONE ? path("ca.pem") : NULL;
    o.cert_reqs = reqs;
    o.min_version = 12;
    o.h2 = h2;
    return pt_tls_ctx_new(&o, err, 256);
}

/* ---- the tests ---- */

static void
test_round_trip(int version, const char *name)
{
    char err[256] = "", reply[64];
    pt_tls_ctx_t *ctx = server_ctx("cert.pem", "key.pem", NULL, PT_TLS_CERT_NONE, false, err);
    pt_buf_t out = { 0 }, big = { 0 };
    uv_buf_t b[2] = { uv_buf_init((char *)"HTTP/1.1 200 OK\r\n", 17), uv_buf_init((char *)"\r\n", 2) };
    size_t n = 0, got = 0;
    pair_t p;
    int i;

    CHECK(ctx != NULL, "%s: a context from a certificate and its key (%s)", name, err);
    pair_open(&p, ctx, "\x08http/1.1", 9, NULL, version);
    pair_pump(&p);
    CHECK(SSL_is_init_finished(p.ssl) && pt_tls_ready(p.server), "%s: the handshake completes", name);
    CHECK(strcmp(pt_tls_version(p.server), name) == 0, "%s: the version is %s", name, pt_tls_version(p.server));
    CHECK(pt_tls_version_number(p.server) == version, "%s: as a number", name);
    CHECK(pt_tls_cipher_number(p.server) > 0 && pt_tls_cipher(p.server)[0], "%s: a cipher suite (%s)", name,
          pt_tls_cipher(p.server));
    CHECK(strcmp(pt_tls_alpn(p.server), "http/1.1") == 0, "%s: ALPN http/1.1", name);
    SSL_write(p.ssl, "GET / HTTP/1.1\r\n\r\n", 18);
    pair_pump(&p);
    CHECK_MEM(p.plain.data, p.plain.len, "GET / HTTP/1.1\r\n\r\n", "%s: the server reads the request", name);
    CHECK(pt_tls_write(p.server, b, 2) == 0 && (take_output(p.server, &out), out.len > 19),
          "%s: the server writes a response", name);
    BIO_write(p.in, out.data, (int)out.len);
    CHECK(SSL_read_ex(p.ssl, reply, sizeof(reply), &n) == 1 && n == 19
              && memcmp(reply, "HTTP/1.1 200 OK\r\n\r\n", 19) == 0,
          "%s: the client reads it, both buffers in one record stream", name);
    /* 1 MiB each way: records split and joined across the carried chunks. */
    out.len = 0;
    pt_buf_reserve(&big, 1 << 20);
    for (i = 0; i < (1 << 20); i++) {
        big.data[i] = (char)(i % 251);
    }
    big.len = 1 << 20;
    b[0] = uv_buf_init(big.data, (unsigned)big.len);
    CHECK(pt_tls_write(p.server, b, 1) == 0, "%s: 1 MiB out", name);
    take_output(p.server, &out);
    BIO_write(p.in, out.data, (int)out.len);
    for (;;) {
        char chunk[16384];

        if (SSL_read_ex(p.ssl, chunk, sizeof(chunk), &n) != 1) {
            break;
        }
        if (memcmp(chunk, big.data + got, n) != 0) {
            break;
        }
        got += n;
    }
    CHECK(got == big.len, "%s: the client read it all, in order (%zu)", name, got);
    p.plain.len = 0;
    SSL_write(p.ssl, big.data, (int)big.len);
    pair_pump(&p);
    CHECK(p.plain.len == big.len && memcmp(p.plain.data, big.data, big.len) == 0, "%s: 1 MiB in", name);
    SSL_shutdown(p.ssl);
    pair_pump(&p);
    CHECK(p.status == PT_TLS_CLOSED, "%s: close_notify from the client reads as closed", name);
    out.len = 0;
    pt_tls_close(p.server);
    take_output(p.server, &out);
    CHECK(out.len > 0, "%s: the server's close_notify", name);
    pt_buf_free(&out);
    pt_buf_free(&big);
    pair_close(&p);
    pt_tls_ctx_free(ctx);
}

static void
test_alpn(void)
{
    char err[256] = "";
    pt_tls_ctx_t *h1 = server_ctx("both.pem", NULL, NULL, PT_TLS_CERT_NONE, false, err);
    pt_tls_ctx_t *h2 = server_ctx("both.pem", NULL, NULL, PT_TLS_CERT_NONE, true, err);
    pair_t p;

    CHECK(h1 != NULL && h2 != NULL, "the key may sit in the certificate's file (%s)", err);
    pair_open(&p, h2, "\x02h2\x08http/1.1", 12, NULL, 0);
    pair_pump(&p);
    CHECK(strcmp(pt_tls_alpn(p.server), "h2") == 0, "h2 offered and served: h2");
    pair_close(&p);
    pair_open(&p, h1, "\x02h2\x08http/1.1", 12, NULL, 0);
    pair_pump(&p);
    CHECK(strcmp(pt_tls_alpn(p.server), "http/1.1") == 0, "h2 offered, not served: http/1.1");
    pair_close(&p);
    pair_open(&p, h1, "\x06spdy/3", 7, NULL, 0);
    pair_pump(&p);
    CHECK(!pt_tls_ready(p.server) && p.status == PT_TLS_FAILED,
          "only unknown protocols offered: no_application_protocol (RFC 7301 3.2)");
    pair_close(&p);
    pair_open(&p, h1, NULL, 0, NULL, 0);
    pair_pump(&p);
    CHECK(pt_tls_ready(p.server) && strcmp(pt_tls_alpn(p.server), "") == 0, "no ALPN offered: none");
    pair_close(&p);
    pt_tls_ctx_free(h1);
    pt_tls_ctx_free(h2);
}

static void
test_bad_files(void)
{
    char err[256] = "";
    pt_tls_ctx_t *ctx;

    ctx = server_ctx("cert.pem", "key-pw.pem", "s3cret", PT_TLS_CERT_NONE, false, err);
    CHECK(ctx != NULL, "an encrypted key with its password (%s)", err);
    pt_tls_ctx_free(ctx);
    ctx = server_ctx("cert.pem", "key-pw.pem", "wrong", PT_TLS_CERT_NONE, false, err);
    CHECK(ctx == NULL && strstr(err, "is the password right?") != NULL, "a wrong password says so: %s", err);
    ctx = server_ctx("cert.pem", "key-pw.pem", NULL, PT_TLS_CERT_NONE, false, err);
    CHECK(ctx == NULL && strstr(err, "cannot load the key") != NULL, "no password for an encrypted key: %s", err);
    ctx = server_ctx("cert.pem", "other-key.pem", NULL, PT_TLS_CERT_NONE, false, err);
    CHECK(ctx == NULL && strstr(err, "does not match") != NULL, "a key of another certificate: %s", err);
    ctx = server_ctx("missing.pem", "key.pem", NULL, PT_TLS_CERT_NONE, false, err);
    CHECK(ctx == NULL && strstr(err, "cannot load the certificate") != NULL && strstr(err, "missing.pem") != NULL,
          "a missing file is named: %s", err);
    ctx = server_ctx("key.pem", "key.pem", NULL, PT_TLS_CERT_NONE, false, err);
    CHECK(ctx == NULL && strstr(err, "cannot load the certificate") != NULL, "a key where the certificate goes: %s",
          err);
}

static void
test_client_certs(void)
{
    char err[256] = "";
    pt_tls_ctx_t *required = server_ctx("cert.pem", "key.pem", NULL, PT_TLS_CERT_REQUIRED, false, err);
    pt_tls_ctx_t *optional = server_ctx("cert.pem", "key.pem", NULL, PT_TLS_CERT_OPTIONAL, false, err);
    pt_buf_t pem = { 0 }, name = { 0 };
    const char *verr;
    pair_t p;

    CHECK(required != NULL && optional != NULL, "contexts asking for client certificates (%s)", err);
    pair_open(&p, required, NULL, 0, "client.pem", 0);
    pair_pump(&p);
    CHECK(pt_tls_ready(p.server), "required, and one signed by the CA: accepted");
    CHECK(pt_tls_client_cert(p.server, &pem, &name, &verr) && verr[0] == '\0', "its chain is there, verified");
    CHECK(pem.len > 100 && memcmp(pem.data, "-----BEGIN CERTIFICATE-----", 27) == 0, "as PEM");
    CHECK_MEM(name.data, name.len, "CN=a client", "its subject, RFC 4514");
    pair_close(&p);
    pair_open(&p, required, NULL, 0, NULL, 0);
    pair_pump(&p);
    CHECK(!pt_tls_ready(p.server) && p.status == PT_TLS_FAILED, "required, none sent: the handshake fails (%s)",
          pt_tls_error(p.server));
    pair_close(&p);
    pair_open(&p, required, NULL, 0, "stranger.pem", 0);
    pair_pump(&p);
    CHECK(p.status == PT_TLS_FAILED, "required, one the CA did not sign: fails");
    pair_close(&p);
    pair_open(&p, required, NULL, 0, "expired.pem", 0);
    pair_pump(&p);
    CHECK(p.status == PT_TLS_FAILED, "required, an expired one: fails");
    pair_close(&p);
    pair_open(&p, optional, NULL, 0, NULL, 0);
    pair_pump(&p);
    pem.len = name.len = 0;
    CHECK(pt_tls_ready(p.server) && !pt_tls_client_cert(p.server, &pem, &name, &verr), "optional, none sent: accepted");
    pair_close(&p);
    pair_open(&p, optional, NULL, 0, "client.pem", 0);
    pair_pump(&p);
    CHECK(pt_tls_ready(p.server) && pt_tls_client_cert(p.server, &pem, &name, &verr), "optional, one sent: there");
    pair_close(&p);
    pt_buf_free(&pem);
    pt_buf_free(&name);
    pt_tls_ctx_free(required);
    pt_tls_ctx_free(optional);
    {
        pt_tls_opts_t o = { 0 };

        o.certfile = path("both.pem");
        o.cert_reqs = PT_TLS_CERT_REQUIRED;
        CHECK(pt_tls_ctx_new(&o, err, sizeof(err)) == NULL && strstr(err, "needs --ssl-ca-certs") != NULL,
              "client certificates without CAs to check them: refused");
    }
}

/* A session from a fresh handshake (the client reads the ticket the server sent after it), or NULL. */
static SSL_SESSION *
session_of(pt_tls_ctx_t *ctx, int version, SSL_SESSION *resume, bool *reused)
{
    SSL_SESSION *s;
    char byte;
    size_t n;
    pair_t p;

    pair_open(&p, ctx, NULL, 0, NULL, version);
    if (resume != NULL) {
        SSL_set_session(p.ssl, resume);
    }
    pair_pump(&p);
    SSL_read_ex(p.ssl, &byte, 1, &n); /* takes in TLS 1.3's NewSessionTicket, which comes after the handshake */
    *reused = pt_tls_ready(p.server) && SSL_session_reused(p.ssl);
    SSL_shutdown(p.ssl); /* else OpenSSL takes the session for a broken one, not to be resumed */
    s = pt_tls_ready(p.server) ? SSL_get1_session(p.ssl) : NULL;
    pair_close(&p);
    return s;
}

static void
test_tickets(int version, const char *name)
{
    char err[256] = "";
    pt_tls_ctx_t *ctx = server_ctx("both.pem", NULL, NULL, PT_TLS_CERT_NONE, false, err);
    pt_tls_ctx_t *reloaded = server_ctx("both.pem", NULL, NULL, PT_TLS_CERT_NONE, false, err);
    SSL_SESSION *first, *s;
    bool reused;

    first = session_of(ctx, version, NULL, &reused);
    CHECK(first != NULL && !reused, "%s: a full handshake leaves a session", name);
    s = session_of(ctx, version, first, &reused);
    CHECK(reused, "%s: it resumes from its ticket", name);
    SSL_SESSION_free(s);
    s = session_of(reloaded, version, first, &reused);
    CHECK(reused, "%s: and from another context's (a reloaded certificate): one key ring", name);
    SSL_SESSION_free(s);
    pt_tls_tickets_rotate();
    s = session_of(ctx, version, first, &reused);
    CHECK(reused, "%s: after a rotation, the key before still opens it", name);
    SSL_SESSION_free(s);
    pt_tls_tickets_rotate();
    s = session_of(ctx, version, first, &reused);
    CHECK(s != NULL && !reused, "%s: after two, a full handshake instead", name);
    SSL_SESSION_free(s);
    SSL_SESSION_free(first);
    pt_tls_ctx_free(ctx);
    pt_tls_ctx_free(reloaded);
}

static void
test_garbage(void)
{
    char err[256] = "";
    pt_tls_ctx_t *ctx = server_ctx("both.pem", NULL, NULL, PT_TLS_CERT_NONE, false, err);
    pt_tls_t *t = pt_tls_new(ctx);
    pt_buf_t plain = { 0 }, out = { 0 };
    static const char req[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    uv_buf_t b = uv_buf_init((char *)"early", 5);

    CHECK(pt_tls_write(t, &b, 1) < 0, "nothing to write with before the handshake");
    CHECK(pt_tls_read(t, req, sizeof(req) - 1, &plain) == PT_TLS_FAILED && plain.len == 0,
          "plain HTTP to a TLS port fails the handshake (%s)", pt_tls_error(t));
    take_output(t, &out);
    pt_buf_free(&plain);
    pt_buf_free(&out);
    pt_tls_free(t);
    pt_tls_ctx_free(ctx);
}

int
main(void)
{
    snprintf(dir, sizeof(dir), "/tmp/ponte-test-tls-XXXXXX");
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    make_files();
    test_round_trip(TLS1_3_VERSION, "TLSv1.3");
    test_round_trip(TLS1_2_VERSION, "TLSv1.2");
    test_alpn();
    test_tickets(TLS1_3_VERSION, "TLSv1.3");
    test_tickets(TLS1_2_VERSION, "TLSv1.2");
    test_bad_files();
    test_client_certs();
    test_garbage();
    {
        static const char *const names[] = { "ca.pem",     "cert.pem",     "key.pem",     "both.pem",     "key-pw.pem",
                                             "client.pem", "stranger.pem", "expired.pem", "other-key.pem" };
        size_t i;

        for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
            unlink(path(names[i]));
        }
        rmdir(dir);
    }
    return tap_done();
}

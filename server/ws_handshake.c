/*
 * The WebSocket opening handshake (RFC 6455 4.2): which requests open one, what answers a bad one, and the 101.
 */
#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>

#include "resp.h"
#include "ws.h"
#include "ws_internal.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

static const pt_span_t *
header(const pt_request_t *req, const char *name, int *count)
{
    const pt_span_t *found = NULL;
    size_t i;

    *count = 0;
    for (i = 0; i < req->nheaders; i++) {
        if (pt_span_ieq(req->headers[i].name, name)) {
            found = found ? found : &req->headers[i].value;
            (*count)++;
        }
    }
    return found;
}

/* Whether any of the request's `name` headers lists `token`. */
static bool
has_token(const pt_request_t *req, const char *name, const char *token)
{
    size_t i;

    for (i = 0; i < req->nheaders; i++) {
        if (pt_span_ieq(req->headers[i].name, name) && pt_span_has_token(req->headers[i].value, token)) {
            return true;
        }
    }
    return false;
}

/* A Sec-WebSocket-Key is 16 bytes in base64: 22 characters of the alphabet, then "==" (RFC 6455 4.1). */
static bool
key_valid(const pt_span_t *key)
{
    size_t i;

    if (key == NULL || key->len != 24 || key->base[22] != '=' || key->base[23] != '=') {
        return false;
    }
    for (i = 0; i < 22; i++) {
        char ch = key->base[i];

        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '+'
              || ch == '/')) {
            return false;
        }
    }
    return true;
}

pt_ws_kind_t
pt_ws_classify(const pt_request_t *req)
{
    const pt_span_t *key, *version;
    int nkey, nversion;

    if (!pt_span_ieq(req->method, "GET") || req->http_minor < 1 || !has_token(req, "upgrade", "websocket")
        || !has_token(req, "connection", "upgrade")) {
        return PT_WS_NONE;
    }
    version = header(req, "sec-websocket-version", &nversion);
    key = header(req, "sec-websocket-key", &nkey);
    if (version == NULL && key == NULL) {
        return PT_WS_NONE; /* not RFC 6455's handshake (an older draft's, say): served as plain HTTP */
    }
    if (version != NULL && !(nversion == 1 && version->len == 2 && memcmp(version->base, "13", 2) == 0)) {
        return PT_WS_BAD_VERSION;
    }
    if (version == NULL || nkey != 1 || !key_valid(key) || req->content_length > 0 || req->chunked) {
        return PT_WS_BAD_REQUEST;
    }
    return PT_WS_UPGRADE;
}

int
pt_ws_reply_version(pt_buf_t *out)
{
    static const char body[] = "Upgrade Required: this server speaks WebSocket version 13\n";

    return pt_buf_printf(out,
                         "HTTP/1.1 426 Upgrade Required\r\n"
                         "Sec-WebSocket-Version: 13\r\n"
                         "Content-Type: text/plain; charset=utf-8\r\n"
                         "Content-Length: %zu\r\n"
                         "Date: %.*s\r\n"
                         "Server: ponte\r\n"
                         "Connection: close\r\n"
                         "\r\n%s",
                         sizeof(body) - 1, 29, pt_http_date().base, body);
}

/* Whether the client listed `sub` in its Sec-WebSocket-Protocol headers. */
static bool
subprotocol_offered(const pt_request_t *req, const char *sub, size_t len)
{
    size_t i;

    for (i = 0; i < req->nheaders; i++) {
        pt_span_t v = req->headers[i].value;

        if (!pt_span_ieq(req->headers[i].name, "sec-websocket-protocol")) {
            continue;
        }
        while (v.len > 0) {
            pt_span_t item = pt_span_next_item(&v, ',');

            if (item.len == len && memcmp(item.base, sub, len) == 0) {
                return true;
            }
        }
    }
    return false;
}

/* Headers the server writes itself in a 101: an app's own would contradict them. */
static bool
reserved(pt_span_t name)
{
    static const char *const names[] = { "upgrade",
                                         "connection",
                                         "sec-websocket-accept",
                                         "sec-websocket-protocol",
                                         "sec-websocket-extensions",
                                         "content-length",
                                         "transfer-encoding" };
    size_t i;

    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (pt_span_ieq(name, names[i])) {
            return true;
        }
    }
    return false;
}

int
pt_ws_head(const pt_request_t *req, const char *sub, size_t sublen, const char *extensions, const pt_header_t *headers,
           size_t nheaders, pt_buf_t *out)
{
    unsigned char digest[EVP_MAX_MD_SIZE], accept[32];
    unsigned dlen = 0;
    char input[24 + sizeof(WS_GUID)];
    int count;
    const pt_span_t *key = header(req, "sec-websocket-key", &count);
    size_t i;
    int r;

    if (sub != NULL && !subprotocol_offered(req, sub, sublen)) {
        return -EINVAL;
    }
    memcpy(input, key->base, 24);
    memcpy(input + 24, WS_GUID, sizeof(WS_GUID) - 1);
    if (EVP_Digest(input, 24 + sizeof(WS_GUID) - 1, digest, &dlen, EVP_sha1(), NULL) != 1) {
        return -ENOMEM;
    }
    EVP_EncodeBlock(accept, digest, (int)dlen);
    r = pt_buf_printf(out,
                      "HTTP/1.1 101 Switching Protocols\r\n"
                      "Upgrade: websocket\r\n"
                      "Connection: Upgrade\r\n"
                      "Sec-WebSocket-Accept: %s\r\n"
                      "Date: %.*s\r\n"
                      "Server: ponte\r\n",
                      accept, 29, pt_http_date().base);
    if (r == 0 && sub != NULL) {
        r = pt_buf_printf(out, "Sec-WebSocket-Protocol: %.*s\r\n", (int)sublen, sub);
    }
    if (r == 0 && extensions != NULL) {
        r = pt_buf_printf(out, "Sec-WebSocket-Extensions: %s\r\n", extensions);
    }
    for (i = 0; r == 0 && i < nheaders; i++) {
        const pt_header_t *h = &headers[i];

        if (!reserved(h->name) && !pt_span_ieq(h->name, "date") && !pt_span_ieq(h->name, "server")) {
            r = pt_buf_printf(out, "%.*s: %.*s\r\n", (int)h->name.len, h->name.base, (int)h->value.len, h->value.base);
        }
    }
    return r == 0 ? pt_buf_append(out, "\r\n", 2) : r;
}

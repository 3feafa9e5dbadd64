/*
 * wsload: a WebSocket load generator on libuv, for bench/ws. No Debian package generates WebSocket load, and a
 * Python client would be the bottleneck. It checks every byte that comes back.
 *
 *   wsload [-c CONNS] [-d SECONDS] [-s SIZE] [-m echo|broadcast] [-p PATH] HOST PORT
 *
 * echo:      every connection sends a SIZE-byte binary message, waits for it to come back, checks it, sends the next.
 * broadcast: connection 0 sends a message; the server sends it to every connection (the app's job); once all
 *            have it, the next one goes. Each message carries its sequence number.
 * idle:      every connection opens, then holds still; "ready" goes to stderr once all are open (memory checks).
 * Prints one JSON line: messages received per second, and errors (a wrong byte, a close, a reset).
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

typedef struct {
    uv_tcp_t tcp;
    uv_connect_t connect;
    int id;
    bool upgraded;
    char *in;
    size_t in_len, in_cap;
    uint64_t received;
} conn_t;

static struct {
    uv_loop_t *loop;
    const char *host, *path;
    int port, nconns, seconds;
    size_t size;
    bool broadcast, idle;
    conn_t *conns;
    uint8_t *payload; /* what every echo message carries (its first 8 bytes: the sequence number) */
    uint64_t seq, have_seq, received, errors, upgraded;
    uint64_t start_ns;
    bool stopping;
    uv_timer_t timer, linger;
} G;

static void fail(conn_t *c, const char *why);

static void
on_write(uv_write_t *w, int status)
{
    if (status < 0 && !G.stopping) {
        G.errors++;
    }
    free(w);
}

/* Writes a copy of data. */
static void
put(conn_t *c, const void *data, size_t len)
{
    uv_write_t *w = malloc(sizeof(*w) + len);
    uv_buf_t b = uv_buf_init((char *)(w + 1), (unsigned)len);

    memcpy(w + 1, data, len);
    if (uv_write(w, (uv_stream_t *)&c->tcp, &b, 1, on_write) < 0) {
        free(w);
        fail(c, "write");
    }
}

/* A masked client frame (RFC 6455 5.3). */
static void
send_frame(conn_t *c, uint8_t opcode, const uint8_t *p, size_t n)
{
    uint8_t *f = malloc(n + 14), key[4];
    size_t h = 2, i;

    f[0] = 0x80 | opcode;
    if (n < 126) {
        f[1] = 0x80 | (uint8_t)n;
    } else if (n < 65536) {
        f[1] = 0x80 | 126;
        f[2] = (uint8_t)(n >> 8);
        f[3] = (uint8_t)n;
        h = 4;
    } else {
        f[1] = 0x80 | 127;
        for (i = 0; i < 8; i++) {
            f[2 + i] = (uint8_t)((uint64_t)n >> (56 - 8 * i));
        }
        h = 10;
    }
    for (i = 0; i < 4; i++) {
        key[i] = (uint8_t)rand();
    }
    memcpy(f + h, key, 4);
    for (i = 0; i < n; i++) {
        f[h + 4 + i] = p[i] ^ key[i & 3];
    }
    put(c, f, h + 4 + n);
    free(f);
}

static void
send_message(conn_t *c)
{
    uint64_t seq = G.seq;

    memcpy(G.payload, &seq, sizeof(seq));
    send_frame(c, 2, G.payload, G.size);
}

static void
fail(conn_t *c, const char *why)
{
    if (G.stopping) {
        return;
    }
    G.errors++;
    fprintf(stderr, "wsload: connection %d: %s\n", c->id, why);
    if (!uv_is_closing((uv_handle_t *)&c->tcp)) {
        uv_close((uv_handle_t *)&c->tcp, NULL);
    }
}

/* A whole message came: check it, then go on. */
static void
on_message(conn_t *c, const uint8_t *p, size_t n)
{
    uint64_t seq;

    if (G.stopping) {
        return; /* the run is over: what is still in flight is not counted */
    }
    if (n != G.size || memcmp(p + 8, G.payload + 8, n - 8) != 0) {
        fail(c, "a message came back different");
        return;
    }
    memcpy(&seq, p, 8);
    c->received++;
    G.received++;
    if (!G.broadcast) {
        send_message(c); /* echo: each connection has its own message in flight; the sequence does not move */
        return;
    }
    if (seq != G.seq) {
        fail(c, "a broadcast came out of order");
        return;
    }
    if (++G.have_seq == (uint64_t)G.nconns) {
        G.have_seq = 0;
        G.seq++;
        send_message(&G.conns[0]);
    }
}

/* Parses what is buffered into frames. */
static void
parse(conn_t *c)
{
    size_t off = 0;

    for (;;) {
        const uint8_t *b = (const uint8_t *)c->in + off;
        size_t avail = c->in_len - off, h = 2, n;

        if (avail < 2) {
            break;
        }
        n = b[1] & 0x7F;
        if (n == 126) {
            h = 4;
            n = avail >= 4 ? (size_t)b[2] << 8 | b[3] : 0;
        } else if (n == 127) {
            h = 10;
            n = 0;
            for (size_t i = 0; avail >= 10 && i < 8; i++) {
                n = n << 8 | b[2 + i];
            }
        }
        if (avail < h || avail - h < n) {
            break;
        }
        switch (b[0] & 0x0F) {
        case 2: on_message(c, b + h, n); break;
        case 9: send_frame(c, 10, b + h, n); break; /* ping: pong */
        case 10: break;
        default: fail(c, (b[0] & 0x0F) == 8 ? "the server closed" : "an unexpected frame"); return;
        }
        off += h + n;
    }
    memmove(c->in, c->in + off, c->in_len - off);
    c->in_len -= off;
}

static void
on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    conn_t *c = h->data;

    if (c->in_cap - c->in_len < 65536) {
        c->in_cap = c->in_cap * 2 + 65536;
        c->in = realloc(c->in, c->in_cap);
    }
    *buf = uv_buf_init(c->in + c->in_len, (unsigned)(c->in_cap - c->in_len));
}

static void
on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    conn_t *c = s->data;
    char *end;

    if (nread < 0) {
        fail(c, uv_strerror((int)nread));
        return;
    }
    c->in_len += (size_t)nread;
    if (!c->upgraded) {
        if (c->in_len < 4 || (end = memmem(c->in, c->in_len, "\r\n\r\n", 4)) == NULL) {
            return;
        }
        if (c->in_len < 12 || memcmp(c->in, "HTTP/1.1 101", 12) != 0) {
            fail(c, "the handshake was refused");
            return;
        }
        c->upgraded = true;
        end += 4;
        c->in_len -= (size_t)(end - c->in);
        memmove(c->in, end, c->in_len);
        if (G.idle) {
            if (++G.upgraded == (uint64_t)G.nconns) {
                fprintf(stderr, "ready\n");
            }
        } else if (!G.broadcast) {
            send_message(c);
        } else if (++G.upgraded == (uint64_t)G.nconns) {
            G.start_ns = uv_hrtime(); /* everyone is listening: the first broadcast goes */
            send_message(&G.conns[0]);
        }
    }
    parse(c);
}

static void
on_connect(uv_connect_t *req, int status)
{
    conn_t *c = req->data;
    char head[512];
    int n;

    if (status < 0) {
        fail(c, uv_strerror(status));
        return;
    }
    n = snprintf(head, sizeof(head),
                 "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                 G.path, G.host, G.port);
    put(c, head, (size_t)n);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void
on_linger(uv_timer_t *t)
{
    int i;

    for (i = 0; i < G.nconns; i++) {
        if (!uv_is_closing((uv_handle_t *)&G.conns[i].tcp)) {
            uv_close((uv_handle_t *)&G.conns[i].tcp, NULL);
        }
    }
    uv_close((uv_handle_t *)t, NULL);
}

static void
on_done(uv_timer_t *t)
{
    double secs = (double)(uv_hrtime() - G.start_ns) / 1e9;
    int i;

    G.stopping = true;
    printf("{\"mode\": \"%s\", \"connections\": %d, \"open\": %llu, \"size\": %zu, \"seconds\": %.2f, "
           "\"messages\": %llu, \"messages_per_s\": %.0f, \"errors\": %llu}\n",
           G.idle            ? "idle"
               : G.broadcast ? "broadcast"
                             : "echo",
           G.nconns, (unsigned long long)G.upgraded, G.size, secs, (unsigned long long)G.received,
           (double)G.received / secs, (unsigned long long)G.errors);
    /* A polite end, as a real client's: a close frame on each connection, then the sockets close a moment later
     * (a server whose app sees a reset instead may spend the next run logging it). */
    for (i = 0; i < G.nconns; i++) {
        static const uint8_t normal[2] = { 0x03, 0xE8 };

        if (G.conns[i].upgraded && !uv_is_closing((uv_handle_t *)&G.conns[i].tcp)) {
            send_frame(&G.conns[i], 8, normal, 2);
        }
    }
    uv_timer_start(&G.linger, on_linger, 300, 0);
    uv_close((uv_handle_t *)t, NULL);
}

int
main(int argc, char **argv)
{
    struct sockaddr_in addr;
    int opt, i;

    G.nconns = 16;
    G.seconds = 5;
    G.size = 1024;
    G.path = "/echo";
    while ((opt = getopt(argc, argv, "c:d:s:m:p:")) != -1) {
        switch (opt) {
        case 'c': G.nconns = atoi(optarg); break;
        case 'd': G.seconds = atoi(optarg); break;
        case 's': G.size = (size_t)atol(optarg); break;
        case 'm':
            G.broadcast = strcmp(optarg, "broadcast") == 0;
            G.idle = strcmp(optarg, "idle") == 0;
            break;
        case 'p': G.path = optarg; break;
        default:
            fprintf(stderr, "usage: wsload [-c N] [-d S] [-s SIZE] [-m echo|broadcast|idle] [-p PATH] HOST PORT\n");
            return 2;
        }
    }
    if (optind + 2 != argc || G.nconns < 1 || G.size < 8) {
        fprintf(stderr, "usage: wsload [-c N] [-d S] [-s SIZE>=8] [-m echo|broadcast] [-p PATH] HOST PORT\n");
        return 2;
    }
    G.host = argv[optind];
    G.port = atoi(argv[optind + 1]);
    G.loop = uv_default_loop();
    G.payload = malloc(G.size);
    for (size_t k = 0; k < G.size; k++) {
        G.payload[k] = (uint8_t)(k * 31 + 7);
    }
    G.conns = calloc((size_t)G.nconns, sizeof(conn_t));
    uv_ip4_addr(G.host, G.port, &addr);
    for (i = 0; i < G.nconns; i++) {
        conn_t *c = &G.conns[i];

        c->id = i;
        uv_tcp_init(G.loop, &c->tcp);
        uv_tcp_nodelay(&c->tcp, 1);
        c->tcp.data = c;
        c->connect.data = c;
        uv_tcp_connect(&c->connect, &c->tcp, (const struct sockaddr *)&addr, on_connect);
    }
    G.start_ns = uv_hrtime();
    uv_timer_init(G.loop, &G.timer);
    uv_timer_init(G.loop, &G.linger);
    uv_timer_start(&G.timer, on_done, (uint64_t)G.seconds * 1000, 0);
    uv_run(G.loop, UV_RUN_DEFAULT);
    return G.errors > 0 ? 1 : 0;
}

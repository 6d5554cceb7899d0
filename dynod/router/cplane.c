/* The plain-HTTP plane's common request in C: a strict parse and the rewrite of both heads.
 *
 * plane.py calls request() on a read that starts a request and relay_response() for the first read
 * of a dyno's answer (response()'s rewrite between the plane's recv and send, done here). Each
 * either takes the message whole and does what the Python path would have done with it (the
 * RequestHead, the bytes for the dyno; the bytes sent to the client and what the log line and the
 * pool need), or declines: then the bytes go to parse.py's reader as before.
 *
 * Only a strict subset of HTTP/1.x is taken: a known method, a target of plain URL characters,
 * header names of token characters, values of visible ASCII, space and tab, CRLF line ends only,
 * a head of at most 8 KiB (so no line or head limit of parse.py can be reached), at most one
 * Content-Length of digits, no Transfer-Encoding, Upgrade, Expect, obs-fold, NUL or high byte, and
 * the message's end exactly at the end of the read (nothing pipelined behind it). Any byte it is not
 * sure of is a None: it never refuses, so it can never accept what the Python path would refuse.
 * Errors, limits and every uncommon header stay the Python path's.
 *
 * Fixed-size buffers with checked lengths; no allocation but the returned objects. relay_response
 * reads and writes two non-blocking sockets the plane owns, with the GIL held (nothing else runs).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <limits.h>
#include <sys/random.h>
#include <sys/socket.h>

#define MAX_HEAD 8192        /* parse.MAX_LINE: a head this short breaks no line or head limit */
#define MAX_BODY 16384       /* plane._MAX_REQUEST: longer requests go through trio */
#define MAX_FIELDS 100       /* far below parse.MAX_HEADERS; more is declined */
#define MAX_REQUEST_ID 200   /* headers.MAX_REQUEST_ID */
#define MAX_ADDR_PART 64     /* client ip, proto and port strings */
#define OUT_SIZE (MAX_HEAD + 2 * MAX_REQUEST_ID + 4 * MAX_ADDR_PART + 512)
#define RECV_SIZE 65536      /* netio.RECV_SIZE: one read of a dyno's answer, as the Python path reads it */

static const char VIA[] = "1.1 dynod";

typedef struct {
    const char *name;
    Py_ssize_t nlen;
    const char *value;
    Py_ssize_t vlen;
    Py_ssize_t line_start; /* offset of the line in the head */
    Py_ssize_t line_end;   /* offset just past its CRLF */
    int kind;
} field;

/* What a header name means here. */
enum {
    F_OTHER = 0,
    F_CONTENT_LENGTH,
    F_HOST,
    F_CONNECTION,
    F_VIA,
    F_XFF,          /* X-Forwarded-For: appended to */
    F_ROUTER_SET,   /* X-Forwarded-Proto/-Port, X-Request-Start: the router's own, dropped */
    F_REQUEST_ID,
    F_DECLINE,      /* Transfer-Encoding, Upgrade, Expect and the other hop-by-hop ones: Python's */
};

static unsigned char tchar[256];
static unsigned char urlchar[256];

static void init_tables(void)
{
    const char *t = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    for (const char *c = t; *c; c++)
        tchar[(unsigned char)*c] = 1;
    const char *u = "-._~:/?#[]@!$&'()*+,;=%0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    for (const char *c = u; *c; c++)
        urlchar[(unsigned char)*c] = 1;
}

static int ieq(const char *s, Py_ssize_t n, const char *lower)
{
    Py_ssize_t m = (Py_ssize_t)strlen(lower);
    if (n != m)
        return 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 'A' && c <= 'Z')
            c = (unsigned char)(c + 32);
        if (c != (unsigned char)lower[i])
            return 0;
    }
    return 1;
}

static int classify(const char *name, Py_ssize_t n, int request)
{
    switch (n) {
    case 2:
        if (ieq(name, n, "te"))
            return F_DECLINE;
        break;
    case 3:
        if (ieq(name, n, "via"))
            return F_VIA;
        break;
    case 4:
        if (ieq(name, n, "host"))
            return F_HOST; /* parse.py refuses a second Host in responses too */
        break;
    case 6:
        if (ieq(name, n, "expect"))
            return request ? F_DECLINE : F_OTHER;
        break;
    case 7:
        if (ieq(name, n, "upgrade") || ieq(name, n, "trailer"))
            return F_DECLINE;
        break;
    case 10:
        if (ieq(name, n, "connection"))
            return F_CONNECTION;
        if (ieq(name, n, "keep-alive"))
            return F_DECLINE;
        break;
    case 12:
        if (request && ieq(name, n, "x-request-id"))
            return F_REQUEST_ID;
        break;
    case 14:
        if (ieq(name, n, "content-length"))
            return F_CONTENT_LENGTH;
        break;
    case 15:
        if (request && ieq(name, n, "x-forwarded-for"))
            return F_XFF;
        if (request && ieq(name, n, "x-request-start"))
            return F_ROUTER_SET;
        break;
    case 16:
        if (ieq(name, n, "proxy-connection"))
            return F_DECLINE;
        if (request && ieq(name, n, "x-forwarded-port"))
            return F_ROUTER_SET;
        break;
    case 17:
        if (ieq(name, n, "transfer-encoding"))
            return F_DECLINE;
        if (request && ieq(name, n, "x-forwarded-proto"))
            return F_ROUTER_SET;
        break;
    }
    return F_OTHER;
}

/* A parsed head's fields and what they say. */
typedef struct {
    field f[MAX_FIELDS];
    int n;
    Py_ssize_t content_length; /* -1: none */
    int host;                  /* index of Host, -1 */
    int connection;            /* index of Connection, -1 */
    int conn_keep_alive;       /* Connection: keep-alive (any case) */
    int conn_close;
    int via;                   /* index of the last Via, -1 */
    int xff;                   /* index of the last X-Forwarded-For, -1 */
    int request_id;            /* index of the first X-Request-Id, -1 */
    int plain;                 /* no header to rewrite but the one Connection: keep-alive */
} fields;

/* Parse the header lines of head[pos:head_len] (head_len just past the blank line's CRLF).
 * 0 when taken, -1 to decline. */
static int parse_fields(const char *head, Py_ssize_t pos, Py_ssize_t head_len, int request, fields *out)
{
    out->n = 0;
    out->content_length = -1;
    out->host = out->connection = out->via = out->xff = out->request_id = -1;
    out->conn_keep_alive = out->conn_close = 0;
    out->plain = 1;
    while (pos < head_len - 2) {
        Py_ssize_t start = pos;
        const char *name = head + pos;
        while (pos < head_len && tchar[(unsigned char)head[pos]])
            pos++;
        Py_ssize_t nlen = pos - start;
        if (nlen == 0 || pos >= head_len || head[pos] != ':')
            return -1;
        pos++;
        while (pos < head_len && (head[pos] == ' ' || head[pos] == '\t'))
            pos++;
        Py_ssize_t vstart = pos;
        while (pos < head_len) {
            unsigned char c = (unsigned char)head[pos];
            if (c == '\t' || (c >= 0x20 && c < 0x7f))
                pos++;
            else
                break;
        }
        Py_ssize_t vlen = pos - vstart;
        if (pos + 1 >= head_len || head[pos] != '\r' || head[pos + 1] != '\n')
            return -1;
        /* Empty values and trailing whitespace are legal, but not worth matching llhttp's treatment. */
        if (vlen == 0 || head[pos - 1] == ' ' || head[pos - 1] == '\t')
            return -1;
        pos += 2;
        if (out->n >= MAX_FIELDS)
            return -1;
        int i = out->n++;
        field *f = &out->f[i];
        f->name = name;
        f->nlen = nlen;
        f->value = head + vstart;
        f->vlen = vlen;
        f->line_start = start;
        f->line_end = pos;
        f->kind = classify(name, nlen, request);
        switch (f->kind) {
        case F_DECLINE:
            return -1;
        case F_CONTENT_LENGTH: {
            if (out->content_length >= 0 || vlen > 9)
                return -1; /* two of them (even equal ones) are parse.py's to judge */
            Py_ssize_t v = 0;
            for (Py_ssize_t k = 0; k < vlen; k++) {
                char c = f->value[k];
                if (c < '0' || c > '9')
                    return -1;
                v = v * 10 + (c - '0');
            }
            out->content_length = v;
            break;
        }
        case F_HOST:
            if (out->host >= 0)
                return -1; /* parse.py's 400 */
            out->host = i;
            break;
        case F_CONNECTION:
            if (out->connection >= 0)
                return -1;
            out->connection = i;
            if (ieq(f->value, vlen, "keep-alive"))
                out->conn_keep_alive = 1;
            else if (ieq(f->value, vlen, "close"))
                out->conn_close = 1;
            else
                return -1; /* other tokens name more hop-by-hop headers: Python's */
            if (!out->conn_keep_alive)
                out->plain = 0;
            break;
        case F_VIA:
            out->via = i;
            out->plain = 0;
            break;
        case F_XFF:
            out->xff = i;
            out->plain = 0;
            break;
        case F_ROUTER_SET:
            out->plain = 0;
            break;
        case F_REQUEST_ID:
            if (out->request_id < 0)
                out->request_id = i;
            out->plain = 0;
            break;
        }
    }
    if (pos != head_len - 2 || head[pos] != '\r' || head[pos + 1] != '\n')
        return -1;
    return 0;
}

/* Whether the head's Connection line is spelt exactly "Connection: keep-alive", the one parse.py cuts
 * out by bytes (another spelling makes it rebuild the head). */
static int conn_line_exact(const char *head, const fields *fs)
{
    const field *f = &fs->f[fs->connection];
    static const char line[] = "Connection: keep-alive\r\n";
    return f->line_end - f->line_start == (Py_ssize_t)(sizeof line - 1) &&
           memcmp(head + f->line_start, line, sizeof line - 1) == 0;
}

/* ------------------------------------------------------------------ output buffer */
typedef struct {
    char b[OUT_SIZE];
    Py_ssize_t len;
    int overflow;
} outbuf;

static void put(outbuf *o, const char *s, Py_ssize_t n)
{
    if (o->overflow || n > OUT_SIZE - o->len) {
        o->overflow = 1;
        return;
    }
    memcpy(o->b + o->len, s, (size_t)n);
    o->len += n;
}

static void puts_(outbuf *o, const char *s) { put(o, s, (Py_ssize_t)strlen(s)); }

static void put_int(outbuf *o, long long v)
{
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%lld", v);
    put(o, tmp, n);
}

/* ------------------------------------------------------------------ request ids */
/* uuid4 strings as headers.new_request_id makes them: 122 random bits, version 4, RFC 4122 variant. */
static unsigned char random_pool[16 * 128];
static size_t random_pos = sizeof random_pool;

/* A forked child must not hand out its parent's unused ids again: it refills first. */
static void forget_random_pool(void) { random_pos = sizeof random_pool; }

static int new_request_id(char out[36])
{
    static const char hex[] = "0123456789abcdef";
    if (random_pos + 16 > sizeof random_pool) {
        size_t got = 0;
        while (got < sizeof random_pool) {
            ssize_t r = getrandom(random_pool + got, sizeof random_pool - got, 0);
            if (r <= 0)
                return -1;
            got += (size_t)r;
        }
        random_pos = 0;
    }
    char h[32];
    for (int i = 0; i < 16; i++) {
        h[2 * i] = hex[random_pool[random_pos + i] >> 4];
        h[2 * i + 1] = hex[random_pool[random_pos + i] & 15];
    }
    random_pos += 16;
    char *p = out;
    memcpy(p, h, 8); p += 8; *p++ = '-';
    memcpy(p, h + 8, 4); p += 4; *p++ = '-';
    *p++ = '4'; memcpy(p, h + 13, 3); p += 3; *p++ = '-';
    *p++ = "89ab"[(strchr(hex, h[16]) - hex) & 3]; memcpy(p, h + 17, 3); p += 3; *p++ = '-';
    memcpy(p, h + 20, 12);
    return 0;
}

static int request_id_ok(const field *f)
{
    if (f->vlen < 1 || f->vlen > MAX_REQUEST_ID)
        return 0;
    for (Py_ssize_t i = 0; i < f->vlen; i++) {
        unsigned char c = (unsigned char)f->value[i];
        if (c < 0x21 || c > 0x7e)
            return 0;
    }
    return 1;
}

/* ------------------------------------------------------------------ module state */
static PyObject *request_head_type; /* parse.RequestHead, set by configure() */
static PyObject *v11, *v10;         /* "1.1", "1.0" */

static PyObject *cplane_configure(PyObject *self, PyObject *arg)
{
    (void)self;
    if (!PyCallable_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "configure() takes parse.RequestHead");
        return NULL;
    }
    Py_INCREF(arg);
    Py_XSETREF(request_head_type, arg);
    Py_RETURN_NONE;
}

static const char *const METHODS[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", NULL};

static int get_bytes(PyObject *o, const char **s, Py_ssize_t *n)
{
    if (!PyBytes_Check(o)) {
        PyErr_SetString(PyExc_TypeError, "bytes expected");
        return -1;
    }
    *s = PyBytes_AS_STRING(o);
    *n = PyBytes_GET_SIZE(o);
    return 0;
}

/* request(data, client_ip, proto, port, start_ms) -> (RequestHead, upstream head, body, request id) | None */
static PyObject *cplane_request(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "request(data, client_ip, proto, port, start_ms)");
        return NULL;
    }
    const char *data, *ip, *proto, *port;
    Py_ssize_t n, iplen, protolen, portlen;
    if (get_bytes(args[0], &data, &n) < 0 || get_bytes(args[1], &ip, &iplen) < 0 ||
        get_bytes(args[2], &proto, &protolen) < 0 ||
        get_bytes(args[3], &port, &portlen) < 0)
        return NULL;
    long long start_ms = PyLong_AsLongLong(args[4]);
    if (start_ms == -1 && PyErr_Occurred())
        return NULL;
    if (request_head_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "configure() first");
        return NULL;
    }
    if (n > MAX_HEAD + MAX_BODY || iplen > MAX_ADDR_PART || protolen > MAX_ADDR_PART || portlen > MAX_ADDR_PART)
        Py_RETURN_NONE; /* (an address that long is not expected, but is the Python path's to write) */
    const char *end = memmem(data, (size_t)(n < MAX_HEAD ? n : MAX_HEAD), "\r\n\r\n", 4);
    if (end == NULL)
        Py_RETURN_NONE;
    Py_ssize_t head_len = end - data + 4;
    if (head_len > MAX_HEAD)
        Py_RETURN_NONE;

    /* Request line: METHOD SP TARGET SP HTTP/1.x CRLF */
    Py_ssize_t pos = 0;
    Py_ssize_t mlen = 0;
    for (int i = 0; METHODS[i]; i++) {
        Py_ssize_t l = (Py_ssize_t)strlen(METHODS[i]);
        if (head_len > l && memcmp(data, METHODS[i], (size_t)l) == 0 && data[l] == ' ') {
            mlen = l;
            break;
        }
    }
    if (mlen == 0)
        Py_RETURN_NONE;
    pos = mlen + 1;
    Py_ssize_t tstart = pos;
    if (data[pos] != '/')
        Py_RETURN_NONE;
    while (pos < head_len && urlchar[(unsigned char)data[pos]])
        pos++;
    Py_ssize_t tlen = pos - tstart;
    if (pos + 11 > head_len || data[pos] != ' ' || memcmp(data + pos + 1, "HTTP/1.", 7) != 0 ||
        (data[pos + 8] != '1' && data[pos + 8] != '0') || data[pos + 9] != '\r' || data[pos + 10] != '\n')
        Py_RETURN_NONE;
    int v1_1 = data[pos + 8] == '1';
    pos += 11;

    fields fs;
    if (parse_fields(data, pos, head_len, 1, &fs) < 0)
        Py_RETURN_NONE;
    Py_ssize_t cl = fs.content_length < 0 ? 0 : fs.content_length;
    if (cl > MAX_BODY || n != head_len + cl)
        Py_RETURN_NONE; /* the body still coming, or pipelined requests behind it: parse.py queues those */
    int keep_alive = v1_1 ? !fs.conn_close : fs.conn_keep_alive;
    int passable = v1_1 && fs.plain && (!fs.conn_keep_alive || conn_line_exact(data, &fs));

    char idbuf[36];
    const char *rid;
    Py_ssize_t ridlen;
    if (!passable && fs.request_id >= 0 && request_id_ok(&fs.f[fs.request_id])) {
        rid = fs.f[fs.request_id].value;
        ridlen = fs.f[fs.request_id].vlen;
    } else {
        if (new_request_id(idbuf) < 0)
            Py_RETURN_NONE;
        rid = idbuf;
        ridlen = 36;
    }

    /* The dyno's head: headers.upstream_head, byte for byte. */
    static outbuf o;
    o.len = 0;
    o.overflow = 0;
    Py_ssize_t pass_len = 0; /* the passable head's length (it is o.b[:pass_len] + CRLF) */
    if (passable) {
        if (fs.conn_keep_alive) {
            const field *c = &fs.f[fs.connection];
            put(&o, data, c->line_start);
            put(&o, data + c->line_end, head_len - c->line_end);
        } else {
            put(&o, data, head_len);
        }
        pass_len = o.len;
        o.len -= 2;
        puts_(&o, "X-Forwarded-For: ");
        put(&o, ip, iplen);
    } else {
        put(&o, data, mlen + 1 + tlen);
        puts_(&o, " HTTP/1.1\r\n");
        for (int i = 0; i < fs.n; i++) {
            const field *f = &fs.f[i];
            if (f->kind == F_CONNECTION || f->kind == F_VIA || f->kind == F_XFF || f->kind == F_ROUTER_SET ||
                f->kind == F_REQUEST_ID)
                continue;
            put(&o, f->name, f->nlen);
            puts_(&o, ": ");
            put(&o, f->value, f->vlen);
            puts_(&o, "\r\n");
        }
        puts_(&o, "X-Forwarded-For: ");
        if (fs.xff >= 0) {
            put(&o, fs.f[fs.xff].value, fs.f[fs.xff].vlen);
            puts_(&o, ", ");
        }
        put(&o, ip, iplen);
    }
    puts_(&o, "\r\nX-Forwarded-Proto: ");
    put(&o, proto, protolen);
    puts_(&o, "\r\nX-Forwarded-Port: ");
    put(&o, port, portlen);
    puts_(&o, "\r\nX-Request-Start: ");
    put_int(&o, start_ms);
    puts_(&o, "\r\nX-Request-Id: ");
    put(&o, rid, ridlen);
    puts_(&o, "\r\nVia: ");
    if (fs.via >= 0) {
        put(&o, fs.f[fs.via].value, fs.f[fs.via].vlen);
        puts_(&o, ", ");
    }
    puts_(&o, VIA);
    puts_(&o, "\r\n\r\n");
    if (o.overflow)
        Py_RETURN_NONE;

    /* The RequestHead parse.py would have made. */
    PyObject *headers = PyList_New(fs.n);
    if (headers == NULL)
        return NULL;
    for (int i = 0; i < fs.n; i++) {
        PyObject *t = Py_BuildValue("(y#y#)", fs.f[i].name, fs.f[i].nlen, fs.f[i].value, fs.f[i].vlen);
        if (t == NULL) {
            Py_DECREF(headers);
            return NULL;
        }
        PyList_SET_ITEM(headers, i, t);
    }
    PyObject *passable_obj;
    if (passable) {
        /* The passable head is the upstream head's start plus its blank line. */
        passable_obj = PyBytes_FromStringAndSize(NULL, pass_len);
        if (passable_obj != NULL) {
            memcpy(PyBytes_AS_STRING(passable_obj), o.b, (size_t)(pass_len - 2));
            memcpy(PyBytes_AS_STRING(passable_obj) + pass_len - 2, "\r\n", 2);
        }
    } else {
        passable_obj = Py_NewRef(Py_None);
    }
    PyObject *host = fs.host >= 0 ? PyBytes_FromStringAndSize(fs.f[fs.host].value, fs.f[fs.host].vlen)
                                  : PyBytes_FromStringAndSize("", 0);
    PyObject *method = PyBytes_FromStringAndSize(data, mlen);
    PyObject *target = PyBytes_FromStringAndSize(data + tstart, tlen);
    PyObject *up = PyBytes_FromStringAndSize(o.b, o.len);
    PyObject *body = PyBytes_FromStringAndSize(data + head_len, cl);
    PyObject *result = NULL;
    if (passable_obj && host && method && target && up && body) {
        PyObject *hargs[10] = {method, target, v1_1 ? v11 : v10, headers, keep_alive ? Py_True : Py_False,
                               Py_False, PyLong_FromLong(fs.content_length >= 0 ? 1 : 0), host, Py_False,
                               passable_obj};
        if (hargs[6] != NULL) {
            PyObject *head = PyObject_Vectorcall(request_head_type, hargs, 10, NULL);
            Py_DECREF(hargs[6]);
            if (head != NULL) {
                PyObject *rid_obj = PyBytes_FromStringAndSize(rid, ridlen);
                if (rid_obj != NULL) {
                    result = PyTuple_Pack(4, head, up, body, rid_obj);
                    Py_DECREF(rid_obj);
                }
                Py_DECREF(head);
            }
        }
    }
    Py_DECREF(headers);
    Py_XDECREF(passable_obj);
    Py_XDECREF(host);
    Py_XDECREF(method);
    Py_XDECREF(target);
    Py_XDECREF(up);
    Py_XDECREF(body);
    return result;
}

/* The rewrite both response() and relay_response() make: 1 with the client's head in ``o`` (the body
 * is data[head_len:head_len + body_len]), 0 to decline (the bytes are the Python path's). */
static int response_rewrite(const char *data, Py_ssize_t n, int head_only, int client_keep, int client_v10,
                            outbuf *o, int *status_out, Py_ssize_t *head_len_out, Py_ssize_t *body_len_out,
                            int *keep_alive)
{
    const char *end = memmem(data, (size_t)(n < MAX_HEAD ? n : MAX_HEAD), "\r\n\r\n", 4);
    if (end == NULL)
        return 0;
    Py_ssize_t head_len = end - data + 4;
    if (head_len > MAX_HEAD || head_len < 16)
        return 0;
    /* Status line: HTTP/1.x SP DDD [SP reason] CRLF */
    if (memcmp(data, "HTTP/1.", 7) != 0 || (data[7] != '1' && data[7] != '0') || data[8] != ' ')
        return 0;
    int v1_1 = data[7] == '1';
    if (data[9] < '2' || data[9] > '5' || data[10] < '0' || data[10] > '9' || data[11] < '0' || data[11] > '9')
        return 0;
    int status = (data[9] - '0') * 100 + (data[10] - '0') * 10 + (data[11] - '0');
    Py_ssize_t pos = 12;
    Py_ssize_t rstart = pos, rlen = 0;
    if (data[pos] == ' ') {
        pos++;
        rstart = pos;
        if (data[pos] == ' ' || data[pos] == '\t')
            return 0;
        while (pos < head_len) {
            unsigned char c = (unsigned char)data[pos];
            if (c == '\t' || (c >= 0x20 && c < 0x7f))
                pos++;
            else
                break;
        }
        rlen = pos - rstart;
        if (rlen == 0 || data[pos - 1] == ' ' || data[pos - 1] == '\t')
            return 0;
    }
    if (pos + 1 >= head_len || data[pos] != '\r' || data[pos + 1] != '\n')
        return 0;
    pos += 2;
    fields fs;
    if (parse_fields(data, pos, head_len, 0, &fs) < 0)
        return 0;
    Py_ssize_t body_len;
    if (status == 204 || status == 304) {
        if (fs.content_length >= 0 || n != head_len)
            return 0;
        body_len = 0;
    } else if (fs.content_length < 0) {
        return 0; /* close-delimited: trio re-frames it */
    } else if (head_only) {
        if (n != head_len)
            return 0;
        body_len = 0;
    } else {
        if (n != head_len + fs.content_length)
            return 0;
        body_len = fs.content_length;
    }
    *keep_alive = (v1_1 ? !fs.conn_close : fs.conn_keep_alive) && !head_only;
    int passable = v1_1 && fs.plain && (!fs.conn_keep_alive || conn_line_exact(data, &fs));

    o->len = 0;
    o->overflow = 0;
    if (passable && client_keep && !client_v10) {
        if (fs.conn_keep_alive) {
            const field *c = &fs.f[fs.connection];
            put(o, data, c->line_start);
            put(o, data + c->line_end, head_len - c->line_end);
        } else {
            put(o, data, head_len);
        }
        o->len -= 2;
        puts_(o, "Via: ");
        puts_(o, VIA);
        puts_(o, "\r\n\r\n");
    } else {
        puts_(o, "HTTP/1.1 ");
        put_int(o, status);
        puts_(o, " ");
        put(o, data + rstart, rlen);
        puts_(o, "\r\n");
        for (int i = 0; i < fs.n; i++) {
            const field *f = &fs.f[i];
            if (f->kind == F_CONNECTION || f->kind == F_VIA)
                continue;
            put(o, f->name, f->nlen);
            puts_(o, ": ");
            put(o, f->value, f->vlen);
            puts_(o, "\r\n");
        }
        if (!client_keep)
            puts_(o, "Connection: close\r\n");
        else if (client_v10)
            puts_(o, "Connection: keep-alive\r\n");
        puts_(o, "Via: ");
        if (fs.via >= 0) {
            put(o, fs.f[fs.via].value, fs.f[fs.via].vlen);
            puts_(o, ", ");
        }
        puts_(o, VIA);
        puts_(o, "\r\n\r\n");
    }
    if (o->overflow)
        return 0;
    *status_out = status;
    *head_len_out = head_len;
    *body_len_out = body_len;
    return 1;
}

/* response(data, head_only, client_keep_alive, client_http_1_0)
 *   -> (bytes for the client, status, body length, keep_alive) | None
 * The response to one request, whole in ``data``: headers.client_head's bytes and the body. */
static PyObject *cplane_response(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "response(data, head_only, client_keep_alive, client_http_1_0)");
        return NULL;
    }
    const char *data;
    Py_ssize_t n;
    if (get_bytes(args[0], &data, &n) < 0)
        return NULL;
    int head_only = PyObject_IsTrue(args[1]);
    int client_keep = PyObject_IsTrue(args[2]);
    int client_v10 = PyObject_IsTrue(args[3]);
    if (head_only < 0 || client_keep < 0 || client_v10 < 0)
        return NULL;
    static outbuf o;
    int status, keep_alive;
    Py_ssize_t head_len, body_len;
    if (!response_rewrite(data, n, head_only, client_keep, client_v10, &o, &status, &head_len, &body_len,
                          &keep_alive))
        Py_RETURN_NONE;
    PyObject *out = PyBytes_FromStringAndSize(NULL, o.len + body_len);
    if (out == NULL)
        return NULL;
    memcpy(PyBytes_AS_STRING(out), o.b, (size_t)o.len);
    memcpy(PyBytes_AS_STRING(out) + o.len, data + head_len, (size_t)body_len);
    return Py_BuildValue("(NinO)", out, status, body_len, keep_alive ? Py_True : Py_False);
}

/* relay_response(dyno_fd, client_fd, head_only, client_keep_alive, client_http_1_0)
 *   -> None | bytes | (status, body length, keep_alive, unsent, bytes read)
 * The plane's first read of a dyno's answer, its rewrite and its send to the client, in one call
 * (the plane's recv, response() and send, without the two Python objects between them). None: the
 * socket had nothing (EAGAIN). bytes: what the read gave when the rewrite declines it, b"" at the
 * dyno's end or on a read error (as the plane's recv has it): the Python path goes on with them.
 * A tuple: the response was whole and went to the client; ``unsent`` is b"" when the client's socket
 * took it all, the rest when it took part or none (the plane keeps it for EPOLLOUT), None when the
 * send failed (the client is gone). Only called when nothing waits to go to the client before it. */
static char relay_in[RECV_SIZE];
static char relay_out[OUT_SIZE + RECV_SIZE];

static PyObject *cplane_relay_response(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError,
                        "relay_response(dyno_fd, client_fd, head_only, client_keep_alive, client_http_1_0)");
        return NULL;
    }
    long dyno_fd = PyLong_AsLong(args[0]);
    long client_fd = PyLong_AsLong(args[1]);
    if ((dyno_fd == -1 || client_fd == -1) && PyErr_Occurred())
        return NULL;
    if (dyno_fd < 0 || dyno_fd > INT_MAX || client_fd < 0 || client_fd > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "relay_response: a file descriptor out of range");
        return NULL;
    }
    int head_only = PyObject_IsTrue(args[2]);
    int client_keep = PyObject_IsTrue(args[3]);
    int client_v10 = PyObject_IsTrue(args[4]);
    if (head_only < 0 || client_keep < 0 || client_v10 < 0)
        return NULL;
    ssize_t got;
    for (;;) {
        got = recv((int)dyno_fd, relay_in, sizeof relay_in, 0);
        if (got >= 0 || errno != EINTR)
            break;
        if (PyErr_CheckSignals() < 0) /* as socket.recv does on EINTR (PEP 475) */
            return NULL;
    }
    if (got < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            Py_RETURN_NONE;
        return PyBytes_FromStringAndSize("", 0); /* the plane's recv: an OSError reads as the end */
    }
    static outbuf o;
    int status, keep_alive;
    Py_ssize_t head_len, body_len;
    if (got == 0 || !response_rewrite(relay_in, got, head_only, client_keep, client_v10, &o, &status, &head_len,
                                      &body_len, &keep_alive))
        return PyBytes_FromStringAndSize(relay_in, got);
    Py_ssize_t total = o.len + body_len;
    memcpy(relay_out, o.b, (size_t)o.len);
    memcpy(relay_out + o.len, relay_in + head_len, (size_t)body_len);
    ssize_t sent;
    for (;;) {
        sent = send((int)client_fd, relay_out, (size_t)total, MSG_NOSIGNAL);
        if (sent >= 0 || errno != EINTR)
            break;
        if (PyErr_CheckSignals() < 0)
            return NULL;
    }
    PyObject *unsent;
    if (sent < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
        unsent = Py_None;
        Py_INCREF(unsent);
    } else {
        if (sent < 0)
            sent = 0;
        unsent = PyBytes_FromStringAndSize(relay_out + sent, total - sent);
        if (unsent == NULL)
            return NULL;
    }
    return Py_BuildValue("(inONn)", status, body_len, keep_alive ? Py_True : Py_False, unsent, (Py_ssize_t)got);
}

/* ------------------------------------------------------------------ log batches */
/* A growable buffer for one batch of log lines (bounded by the worker's --log-buffer lines). */
typedef struct {
    char *b;
    size_t len, cap;
} growbuf;

static int grow_put(growbuf *g, const char *s, size_t n)
{
    if (g->len + n > g->cap) {
        size_t cap = g->cap ? g->cap : 65536;
        while (cap < g->len + n)
            cap *= 2;
        char *b = realloc(g->b, cap);
        if (b == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        g->b = b;
        g->cap = cap;
    }
    memcpy(g->b + g->len, s, n);
    g->len += n;
    return 0;
}

#define GROW_LIT(g, lit) grow_put((g), (lit), sizeof(lit) - 1)

/* logline._NEEDS_ESCAPING's complement: printable ASCII but the quote and the backslash. */
static int plain_bytes(PyObject *o)
{
    if (!PyBytes_CheckExact(o))
        return 0;
    const unsigned char *s = (const unsigned char *)PyBytes_AS_STRING(o);
    Py_ssize_t n = PyBytes_GET_SIZE(o);
    for (Py_ssize_t i = 0; i < n; i++)
        if (s[i] < 0x20 || s[i] > 0x7e || s[i] == '"' || s[i] == '\\')
            return 0;
    return 1;
}

/* logline._ms_bytes: "" for None, else "%dms" % round(seconds * 1000) (round half to even, as
 * Python's round and nearbyint in the default rounding mode both do). 0, or -1 to decline. */
static int ms_text(PyObject *o, char out[32])
{
    if (o == Py_None) {
        out[0] = 0;
        return 0;
    }
    if (!PyFloat_CheckExact(o))
        return -1;
    double v = PyFloat_AS_DOUBLE(o) * 1000.0;
    if (!isfinite(v) || fabs(v) > 1e15)
        return -1;
    snprintf(out, 32, "%lldms", (long long)nearbyint(v));
    return 0;
}

/* One access record as logline.access_message's one-step form, or 1 when it needs the Python
 * path (an error code, an unknown size, bytes to escape, an app name JSON must escape). */
static int access_record(growbuf *g, PyObject *t)
{
    if (!PyTuple_CheckExact(t) || PyTuple_GET_SIZE(t) != 13)
        return 1;
    PyObject *app = PyTuple_GET_ITEM(t, 0);
    PyObject *status = PyTuple_GET_ITEM(t, 9), *nbytes = PyTuple_GET_ITEM(t, 10);
    PyObject *fwd = PyTuple_GET_ITEM(t, 5), *protocol = PyTuple_GET_ITEM(t, 11);
    if (PyTuple_GET_ITEM(t, 12) != Py_None || !PyLong_CheckExact(status) || !PyLong_CheckExact(nbytes) ||
        !PyUnicode_CheckExact(app) || !PyUnicode_IS_ASCII(app) || !PyBytes_CheckExact(fwd) ||
        !PyBytes_CheckExact(protocol))
        return 1;
    const unsigned char *a = PyUnicode_1BYTE_DATA(app);
    Py_ssize_t alen = PyUnicode_GET_LENGTH(app);
    for (Py_ssize_t i = 0; i < alen; i++)
        if (a[i] < 0x20 || a[i] > 0x7e || a[i] == '"' || a[i] == '\\')
            return 1;
    for (int i = 1; i <= 6; i++)
        if (i != 5 && !plain_bytes(PyTuple_GET_ITEM(t, i)))
            return 1;
    char connect[32], service[32];
    if (ms_text(PyTuple_GET_ITEM(t, 7), connect) < 0 || ms_text(PyTuple_GET_ITEM(t, 8), service) < 0)
        return 1;
    int overflow = 0;
    long long st = PyLong_AsLongLongAndOverflow(status, &overflow);
    if (overflow)
        return 1;
    long long nb = PyLong_AsLongLongAndOverflow(nbytes, &overflow);
    if (overflow)
        return 1;
    char numbers[64];
    int nn = snprintf(numbers, sizeof numbers, " status=%lld bytes=%lld protocol=", st, nb);
#define B(i) PyBytes_AS_STRING(PyTuple_GET_ITEM(t, i)), (size_t)PyBytes_GET_SIZE(PyTuple_GET_ITEM(t, i))
    if (GROW_LIT(g, "{\"type\":\"log\",\"app\":\"") < 0 || grow_put(g, (const char *)a, (size_t)alen) < 0 ||
        GROW_LIT(g, "\",\"line\":\"at=info method=") < 0 || grow_put(g, B(1)) < 0 ||
        GROW_LIT(g, " path=\\\"") < 0 || grow_put(g, B(2)) < 0 || GROW_LIT(g, "\\\" host=") < 0 ||
        grow_put(g, B(3)) < 0 || GROW_LIT(g, " request_id=") < 0 || grow_put(g, B(4)) < 0 ||
        GROW_LIT(g, " fwd=\\\"") < 0 || grow_put(g, B(5)) < 0 || GROW_LIT(g, "\\\" dyno=") < 0 ||
        grow_put(g, B(6)) < 0 || GROW_LIT(g, " connect=") < 0 || grow_put(g, connect, strlen(connect)) < 0 ||
        GROW_LIT(g, " service=") < 0 || grow_put(g, service, strlen(service)) < 0 ||
        grow_put(g, numbers, (size_t)nn) < 0 || grow_put(g, B(11)) < 0 || GROW_LIT(g, "\"}\n") < 0)
        return -1;
#undef B
    return 0;
}

/* access_batch(pending, fallback) -> bytes: worker.LogBatcher.take_batch's join, each access record
 * formatted here when it is the common line, else by fallback(*record) (logline.access_message). */
static PyObject *cplane_access_batch(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 2 || !PyList_Check(args[0]) || !PyCallable_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "access_batch(pending: list, fallback)");
        return NULL;
    }
    PyObject *pending = args[0];
    growbuf g = {NULL, 0, 0};
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(pending); i++) {
        PyObject *item = PyList_GET_ITEM(pending, i);
        if (PyBytes_CheckExact(item)) {
            if (grow_put(&g, PyBytes_AS_STRING(item), (size_t)PyBytes_GET_SIZE(item)) < 0)
                goto fail;
            continue;
        }
        size_t mark = g.len;
        int r = access_record(&g, item);
        if (r < 0)
            goto fail;
        if (r == 0)
            continue;
        g.len = mark; /* nothing of a declined record stays */
        if (!PyTuple_Check(item)) {
            PyErr_SetString(PyExc_TypeError, "access_batch: bytes or access records expected");
            goto fail;
        }
        Py_INCREF(item); /* the fallback may run any Python, which could change the list */
        PyObject *line = PyObject_Call(args[1], item, NULL);
        Py_DECREF(item);
        if (line == NULL)
            goto fail;
        if (!PyBytes_Check(line)) {
            Py_DECREF(line);
            PyErr_SetString(PyExc_TypeError, "access_batch: the fallback must return bytes");
            goto fail;
        }
        int put_rc = grow_put(&g, PyBytes_AS_STRING(line), (size_t)PyBytes_GET_SIZE(line));
        Py_DECREF(line);
        if (put_rc < 0)
            goto fail;
    }
    PyObject *out = PyBytes_FromStringAndSize(g.b ? g.b : "", (Py_ssize_t)g.len);
    free(g.b);
    return out;
fail:
    free(g.b);
    return NULL;
}

static PyMethodDef methods[] = {
    {"access_batch", (PyCFunction)(void (*)(void))cplane_access_batch, METH_FASTCALL,
     "access_batch(pending, fallback) -> bytes: a log batch, common lines formatted in C."},
    {"configure", cplane_configure, METH_O, "configure(RequestHead): the class request() returns heads of."},
    {"request", (PyCFunction)(void (*)(void))cplane_request, METH_FASTCALL,
     "request(data, client_ip, proto, port, start_ms) -> (RequestHead, upstream head, body, request id) or None."},
    {"response", (PyCFunction)(void (*)(void))cplane_response, METH_FASTCALL,
     "response(data, head_only, client_keep_alive, client_http_1_0) -> (client bytes, status, body length, "
     "keep_alive) or None."},
    {"relay_response", (PyCFunction)(void (*)(void))cplane_relay_response, METH_FASTCALL,
     "relay_response(dyno_fd, client_fd, head_only, client_keep_alive, client_http_1_0) -> None (EAGAIN), "
     "bytes read (declined, end, error) or (status, body length, keep_alive, unsent, bytes read)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "dynod.router.cplane",
    "The plain-HTTP plane's common request in C: strict parse and rewrite, or None.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit_cplane(void)
{
    init_tables();
    pthread_atfork(NULL, NULL, forget_random_pool);
    v11 = PyUnicode_InternFromString("1.1");
    v10 = PyUnicode_InternFromString("1.0");
    if (v11 == NULL || v10 == NULL)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddIntConstant(m, "RECV_SIZE", RECV_SIZE) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

/*
 * loadgen: a small keep-alive HTTP/1.1 load generator for AF_UNIX sockets.
 *
 * Why it exists: dockerd answers GET /_ping in ~130 us at concurrency 1 and
 * ~30k req/s at concurrency 16 on a 2-core machine.  A Python client tops out
 * well below that, so the client would be what we measure.  This one is a
 * single thread driving N non-blocking connections through epoll (the wrk
 * model): no thread switches, one write and usually one read per request.
 *
 * Modes:
 *   -m get:/PATH          GET PATH on every request (fixed request bytes)
 *   -m create-delete      POST /containers/create with the body in -b FILE,
 *                         then DELETE /containers/ID?force=1; one latency
 *                         sample per create+delete cycle
 *
 * Bounded: stops after -n requests (or cycles) or -d seconds, whichever
 * comes first (-n defaults to 1000 without -d).  The first -w requests per run are warm-up and not recorded.
 * Prints one JSON object on stdout.
 *
 * Build: gcc -O2 -o loadgen loadgen.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 4096

enum phase { PH_CREATE, PH_DELETE };

struct conn {
    int fd;
    char *buf;          /* response bytes received so far */
    size_t len, cap;
    const char *req;    /* request being sent */
    size_t req_len, req_off;
    char *owned_req;    /* heap request (DELETE with an id) */
    enum phase phase;
    double t_start;     /* start of the request (or cycle) */
    int retried;
};

static const char *sock_path;
static int n_conns = 1;
static long max_requests = -1; /* -1: 1000, or unbounded when -d is given */
static double max_seconds = 0;
static long warmup = 0;
static char *get_req;
static size_t get_req_len;
static char *create_req;
static size_t create_req_len;
static int mode_create_delete;

static long started, completed, recorded, errors, reconnects;
static double *lat;  /* microseconds */
static size_t lat_cap;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *msg) {
    fprintf(stderr, "loadgen: %s: %s\n", msg, strerror(errno));
    exit(2);
}

static int connect_unix(void) {
    /* A blocking connect: on AF_UNIX it waits for room in the backlog
     * instead of failing with EAGAIN. */
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strncpy(sa.sun_path, sock_path, sizeof(sa.sun_path) - 1);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) die("connect");
    if (fcntl(fd, F_SETFL, O_NONBLOCK) < 0) die("fcntl");
    return fd;
}

static void record(double us) {
    if (recorded == (long)lat_cap) {
        lat_cap = lat_cap ? lat_cap * 2 : 65536;
        lat = realloc(lat, lat_cap * sizeof(double));
        if (!lat) die("realloc");
    }
    lat[recorded++] = us;
}

/* Case-insensitive search for a header inside [hdr, hdr+n). */
static const char *find_header(const char *hdr, size_t n, const char *name) {
    size_t nl = strlen(name);
    for (size_t i = 0; i + nl < n; i++) {
        if ((i == 0 || hdr[i - 1] == '\n') && strncasecmp(hdr + i, name, nl) == 0)
            return hdr + i + nl;
    }
    return NULL;
}

/*
 * Returns the total size of the response once complete, 0 if more bytes are
 * needed, -1 if it cannot be parsed.  *status receives the status code.
 */
static long response_size(const char *b, size_t n, int *status) {
    const char *end = memmem(b, n, "\r\n\r\n", 4);
    if (!end) return 0;
    size_t hlen = end - b + 4;
    if (n < 12 || strncmp(b, "HTTP/1.", 7) != 0) return -1;
    *status = atoi(b + 9);
    if (*status == 204 || *status == 304 || *status < 200) return hlen;
    const char *v = find_header(b, hlen, "content-length:");
    if (v) {
        long cl = strtol(v, NULL, 10);
        return n >= hlen + cl ? (long)(hlen + cl) : 0;
    }
    v = find_header(b, hlen, "transfer-encoding:");
    if (v && strcasestr(v, "chunked") && strcasestr(v, "chunked") < end) {
        size_t off = hlen;
        for (;;) {
            const char *eol = memmem(b + off, n - off, "\r\n", 2);
            if (!eol) return 0;
            long sz = strtol(b + off, NULL, 16);
            off = eol - b + 2;
            if (sz == 0) {
                /* no trailers from dockerd: expect the final CRLF */
                if (n < off + 2) return 0;
                return off + 2;
            }
            off += sz + 2;
            if (off > n) return 0;
        }
    }
    return -1; /* no length: would need read-until-close, never used here */
}

static void set_request(struct conn *c, const char *req, size_t len) {
    c->req = req;
    c->req_len = len;
    c->req_off = 0;
    c->len = 0;
}

static void start_next(struct conn *c) {
    c->retried = 0;
    c->t_start = now();
    started++;
    if (mode_create_delete) {
        c->phase = PH_CREATE;
        set_request(c, create_req, create_req_len);
    } else {
        set_request(c, get_req, get_req_len);
    }
}

static int want_more(double t0) {
    if (started >= max_requests + warmup) return 0;
    if (max_seconds > 0 && now() - t0 >= max_seconds) return 0;
    return 1;
}

/* Try to write what is left of the request; returns -1 on a dead socket. */
static int flush_request(struct conn *c) {
    while (c->req_off < c->req_len) {
        ssize_t w = send(c->fd, c->req + c->req_off, c->req_len - c->req_off, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOTCONN) return 0;
            return -1;
        }
        c->req_off += w;
    }
    return 0;
}

static void reconnect(int ep, struct conn *c) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = connect_unix();
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl");
    reconnects++;
    c->req_off = 0;
    c->len = 0;
}

/* A complete response arrived: returns 1 if the connection goes on, 0 if idle. */
static int on_response(struct conn *c, int status, double t0) {
    double t = now();
    if (mode_create_delete && c->phase == PH_CREATE && status == 201) {
        char *id = memmem(c->buf, c->len, "\"Id\":\"", 6);
        if (id) {
            id += 6;
            char *q = memchr(id, '"', c->buf + c->len - id);
            if (q) {
                free(c->owned_req);
                if (asprintf(&c->owned_req,
                             "DELETE /containers/%.*s?force=1 HTTP/1.1\r\nHost: docker\r\n\r\n",
                             (int)(q - id), id) < 0)
                    die("asprintf");
                c->phase = PH_DELETE;
                set_request(c, c->owned_req, strlen(c->owned_req));
                return 1;
            }
        }
        status = 599; /* created but no id found */
    }
    completed++;
    if (status < 200 || status >= 300) {
        if (!errors) /* the first one says what went wrong; the count says how often */
            fprintf(stderr, "first error response: %.*s\n",
                    (int)strcspn(c->buf, "\r\n"), c->buf);
        errors++;
    }
    if (completed > warmup) record((t - c->t_start) * 1e6);
    if (want_more(t0)) {
        start_next(c);
        return 1;
    }
    return 0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double p) {
    if (!recorded) return 0;
    size_t i = (size_t)(p / 100.0 * (recorded - 1) + 0.5);
    return lat[i];
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) die(path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc(n + 1);
    if (!b || fread(b, 1, n, f) != (size_t)n) die("read body");
    fclose(f);
    *len = n;
    return b;
}

static void usage(void) {
    fprintf(stderr,
            "usage: loadgen -s SOCKET -m get:/PATH|create-delete [-b BODYFILE]\n"
            "               [-c CONNS] [-n REQUESTS] [-d SECONDS] [-w WARMUP]\n");
    exit(2);
}

int main(int argc, char **argv) {
    const char *mode = NULL, *body_file = NULL;
    int opt;
    while ((opt = getopt(argc, argv, "s:m:b:c:n:d:w:")) != -1) {
        switch (opt) {
        case 's': sock_path = optarg; break;
        case 'm': mode = optarg; break;
        case 'b': body_file = optarg; break;
        case 'c': n_conns = atoi(optarg); break;
        case 'n': max_requests = atol(optarg); break;
        case 'd': max_seconds = atof(optarg); break;
        case 'w': warmup = atol(optarg); break;
        default: usage();
        }
    }
    if (!sock_path || !mode || n_conns < 1 || n_conns > MAX_CONNS) usage();
    if (max_requests < 0) max_requests = max_seconds > 0 ? 1000000000L : 1000;
    if (strncmp(mode, "get:", 4) == 0) {
        if (asprintf(&get_req, "GET %s HTTP/1.1\r\nHost: docker\r\nUser-Agent: dsfw-bench\r\n\r\n",
                     mode + 4) < 0)
            die("asprintf");
        get_req_len = strlen(get_req);
    } else if (strcmp(mode, "create-delete") == 0 && body_file) {
        size_t blen;
        char *body = read_file(body_file, &blen);
        char hdr[256];
        int hl = snprintf(hdr, sizeof hdr,
                          "POST /containers/create HTTP/1.1\r\nHost: docker\r\n"
                          "User-Agent: dsfw-bench\r\nContent-Type: application/json\r\n"
                          "Content-Length: %zu\r\n\r\n", blen);
        create_req = malloc(hl + blen);
        memcpy(create_req, hdr, hl);
        memcpy(create_req + hl, body, blen);
        create_req_len = hl + blen;
        mode_create_delete = 1;
    } else {
        usage();
    }

    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    struct conn *conns = calloc(n_conns, sizeof(struct conn));
    double t0 = now();
    int active = 0;
    for (int i = 0; i < n_conns; i++) {
        struct conn *c = &conns[i];
        c->cap = 65536;
        c->buf = malloc(c->cap);
        c->fd = connect_unix();
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl");
        if (want_more(t0)) {
            start_next(c);
            active++;
        } else {
            c->req = NULL;
        }
    }
    /* The measured window starts once every connection is up. */
    double t_measure = warmup ? 0 : t0;
    long completed_at_measure = 0;
    struct epoll_event evs[256];
    while (active > 0) {
        int n = epoll_wait(ep, evs, 256, 10000);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        if (n == 0) {
            fprintf(stderr, "loadgen: no progress for 10 s, giving up\n");
            errors += active;
            break;
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (!c->req) continue;
            if (flush_request(c) < 0) goto dead;
            if (!(evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))) continue;
            for (;;) {
                if (c->cap - c->len < 16384) {
                    c->cap *= 2;
                    c->buf = realloc(c->buf, c->cap);
                    if (!c->buf) die("realloc");
                }
                ssize_t r = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
                if (r < 0) {
                    if (errno == EAGAIN || errno == EWOULDBLOCK) break;
                    goto dead;
                }
                if (r == 0) goto dead;
                c->len += r;
                int status = 0;
                long sz = response_size(c->buf, c->len, &status);
                if (sz < 0) {
                    fprintf(stderr, "loadgen: unparseable response: %.200s\n", c->buf);
                    errors++;
                    goto dead;
                }
                if (sz == 0) continue;
                if (completed == warmup && !t_measure) {
                    t_measure = now();
                    completed_at_measure = completed;
                }
                if (!on_response(c, status, t0)) {
                    c->req = NULL;
                    active--;
                    break;
                }
                if (flush_request(c) < 0) goto dead;
            }
            continue;
        dead:
            /* The server closed (or reset) the connection: reconnect and
             * resend once; a second failure in a row counts as an error. */
            if (c->retried) {
                if (!errors)
                    fprintf(stderr, "first error: connection closed twice in a row\n");
                errors++;
                completed++;
                if (!want_more(t0)) {
                    c->req = NULL;
                    active--;
                    continue;
                }
                start_next(c); /* give up on this request: a fresh one */
            } else {
                c->retried = 1;
            }
            reconnect(ep, c);
        }
    }
    double t_end = now();
    if (!t_measure) t_measure = t0;
    qsort(lat, recorded, sizeof(double), cmp_double);
    double sum = 0;
    for (long i = 0; i < recorded; i++) sum += lat[i];
    double elapsed = t_end - t_measure;
    long measured = completed - completed_at_measure;
    printf("{\"conns\": %d, \"requests\": %ld, \"errors\": %ld, \"reconnects\": %ld, "
           "\"elapsed_s\": %.6f, \"rps\": %.1f, \"mean_us\": %.1f, \"p50_us\": %.1f, "
           "\"p90_us\": %.1f, \"p99_us\": %.1f, \"max_us\": %.1f}\n",
           n_conns, recorded, errors, reconnects, elapsed,
           elapsed > 0 ? measured / elapsed : 0.0, recorded ? sum / recorded : 0.0,
           pct(50), pct(90), pct(99), recorded ? lat[recorded - 1] : 0.0);
    return 0;
}

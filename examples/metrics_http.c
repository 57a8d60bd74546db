/* SPDX-License-Identifier: MIT */
/*
 * metrics_http.c - a pool under load, with its statistics served over HTTP
 * for Prometheus (/metrics, text format 0.0.4, the conninfo's hosts included)
 * and for people and scripts (/metrics.json, /hosts.json).  A scrape is one pool_get_stats snapshot, formatted with
 * pool_stats_format; nothing here holds a pool lock.
 *
 *   ./metrics_http [CONNINFO] [-l address] [-p port] [-t threads] [-d seconds]
 *
 * CONNINFO defaults to $DATABASE_URL and may carry pool_* settings
 * (postgresql://...?pool_max_size=8).  -p 0 picks a free port; the address
 * actually bound is printed first, as "listening on http://ADDR:PORT/metrics".
 * -d 0 (the default) serves until SIGINT or SIGTERM.  At the end it prints
 * the wait and hold percentiles the callers measured themselves (exact, from
 * every sample) next to what the pool's histograms say.  Try:
 *   curl -s http://127.0.0.1:9188/metrics | promtool check metrics
 */
#define _POSIX_C_SOURCE 200809L
#include <pgpool.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static pool_t *pool;
static atomic_bool stop;

/* Every wait and hold a worker measured itself, in microseconds. */
typedef struct samples {
    uint64_t *wait, *hold;
    size_t n, cap;
} samples_t;

#define MAX_SAMPLES_PER_THREAD 4000000

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void keep(samples_t *s, uint64_t wait, uint64_t hold)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 4096;
        if (cap > MAX_SAMPLES_PER_THREAD)
            return;
        uint64_t *w = realloc(s->wait, cap * sizeof *w);
        if (w)
            s->wait = w;
        uint64_t *h = realloc(s->hold, cap * sizeof *h);
        if (h)
            s->hold = h;
        if (!w || !h)
            return;
        s->cap = cap;
    }
    s->wait[s->n] = wait;
    s->hold[s->n++] = hold;
}

static void on_signal(int sig)
{
    (void)sig;
    atomic_store(&stop, true);
}

/* The load: short queries, each holding a connection about a millisecond. */
static void *worker(void *arg)
{
    samples_t *mine = arg;
    unsigned seed = (unsigned)(uintptr_t)mine;
    while (!atomic_load(&stop)) {
        uint64_t t0 = now_us();
        PGconn *conn = pool_getconn(pool);
        uint64_t t1 = now_us();
        if (!conn)
            continue; /* counted by the pool: acquire_timeouts, acquire_errors */
        char sql[96];
        snprintf(sql, sizeof sql, "SELECT count(*) FROM generate_series(1, %u)",
                 1000 + rand_r(&seed) % 20000);
        PQclear(PQexec(conn, sql));
        uint64_t t2 = now_us();
        pool_putconn(pool, conn);
        keep(mine, t1 - t0, t2 - t1);
    }
    return NULL;
}

static int by_value(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The exact q-quantile of v[0..n), sorted here: the ceil(q*n)-th smallest. */
static uint64_t exact_percentile(uint64_t *v, size_t n, double q)
{
    qsort(v, n, sizeof *v, by_value);
    size_t rank = (size_t)(q * (double)n);
    if ((double)rank < q * (double)n)
        rank++;
    return v[rank > 0 ? rank - 1 : 0];
}

/* Callers' own figures next to the pool's histograms. */
static void report(samples_t *per_thread, int threads)
{
    size_t n = 0;
    for (int i = 0; i < threads; i++)
        n += per_thread[i].n;
    uint64_t *wait = malloc((n + 1) * sizeof *wait), *hold = malloc((n + 1) * sizeof *hold);
    pool_stats_t st;
    if (!wait || !hold || n == 0 || pool_get_stats(pool, &st) != POOL_OK) {
        free(wait);
        free(hold);
        return;
    }
    for (int i = 0, k = 0; i < threads; i++)
        for (size_t j = 0; j < per_thread[i].n; j++, k++) {
            wait[k] = per_thread[i].wait[j];
            hold[k] = per_thread[i].hold[j];
        }
    const double qs[] = {0.5, 0.9, 0.99};
    printf("%zu checkouts; percentiles in us: measured by the callers (exact) | pool histogram "
           "(bucket upper bound)\n", n);
    for (size_t i = 0; i < sizeof qs / sizeof qs[0]; i++)
        printf("  p%-4g wait %8llu | %8llu    hold %8llu | %8llu\n", qs[i] * 100,
               (unsigned long long)exact_percentile(wait, n, qs[i]),
               (unsigned long long)pool_hist_percentile(&st.wait_hist, qs[i]),
               (unsigned long long)exact_percentile(hold, n, qs[i]),
               (unsigned long long)pool_hist_percentile(&st.hold_hist, qs[i]));
    free(wait);
    free(hold);
}

/* The conninfo's hosts (open connections, down, connects, failures and
   evictions of each), formatted after `before` bytes of body; NULL on failure. */
static char *append_hosts(char *body, int before, pool_format_t fmt)
{
    pool_host_stats_t hs[16];
    int n = pool_get_host_stats(pool, hs, 16);
    if (n < 0) {
        free(body);
        return NULL;
    }
    n = n < 16 ? n : 16;
    int need = pool_host_stats_format(hs, n, fmt, "demo", NULL, 0);
    char *grown = need >= 0 ? realloc(body, (size_t)before + (size_t)need + 1) : NULL;
    if (!grown) {
        free(body);
        return NULL;
    }
    pool_host_stats_format(hs, n, fmt, "demo", grown + before, (size_t)need + 1);
    return grown;
}

/* The body for path, malloc'd, or NULL for an unknown path: /metrics (the
   pool's metrics and its hosts'), /metrics.json, /hosts.json. */
static char *render(const char *path, const char **type)
{
    pool_format_t fmt;
    bool hosts_only = strcmp(path, "/hosts.json") == 0;
    if (strcmp(path, "/metrics") == 0) {
        fmt = POOL_FORMAT_PROMETHEUS;
        *type = "text/plain; version=0.0.4; charset=utf-8";
    } else if (strcmp(path, "/metrics.json") == 0 || hosts_only) {
        fmt = POOL_FORMAT_JSON;
        *type = "application/json";
    } else {
        return NULL;
    }
    if (hosts_only)
        return append_hosts(NULL, 0, fmt);
    pool_stats_t st;
    if (pool_get_stats(pool, &st) != POOL_OK)
        return NULL;
    int need = pool_stats_format(&st, fmt, "demo", NULL, 0); /* size it first */
    char *body = need >= 0 ? malloc((size_t)need + 1) : NULL;
    if (!body)
        return NULL;
    pool_stats_format(&st, fmt, "demo", body, (size_t)need + 1);
    return fmt == POOL_FORMAT_PROMETHEUS ? append_hosts(body, need, fmt) : body;
}

static void send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

/* One request per connection: read the request head (at most 4 kB, 2 s),
   answer, close. */
static void serve(int fd)
{
    char req[4096] = "";
    size_t n = 0;
    while (n < sizeof req - 1 && !strstr(req, "\r\n\r\n")) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 2000) <= 0)
            return;
        ssize_t r = recv(fd, req + n, sizeof req - 1 - n, 0);
        if (r <= 0)
            return;
        n += (size_t)r;
        req[n] = '\0';
    }
    char method[8] = "", path[256];
    const char *type = "text/plain; charset=utf-8";
    char *body = NULL;
    const char *status = "400 Bad Request";
    if (sscanf(req, "%7s %255s", method, path) == 2) {
        char *query = strchr(path, '?');
        if (query)
            *query = '\0';
        if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
            status = "405 Method Not Allowed";
        else if ((body = render(path, &type)))
            status = "200 OK";
        else
            status = "404 Not Found";
    }
    const char *text = body ? body : status;
    char head[256];
    int hn = snprintf(head, sizeof head,
                      "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                      "Connection: close\r\n\r\n",
                      status, body ? type : "text/plain; charset=utf-8", strlen(text));
    send_all(fd, head, (size_t)hn);
    if (strcmp(method, "HEAD") != 0)
        send_all(fd, text, strlen(text));
    free(body);
}

static int listen_on(const char *addr, int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (fd < 0 || inet_pton(AF_INET, addr, &sa.sin_addr) != 1 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 16) != 0) {
        perror("metrics_http: listen");
        return -1;
    }
    socklen_t len = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &len);
    printf("listening on http://%s:%d/metrics\n", addr, ntohs(sa.sin_port));
    fflush(stdout);
    return fd;
}

int main(int argc, char **argv)
{
    const char *conninfo = getenv("DATABASE_URL"), *addr = "127.0.0.1";
    int port = 9188, threads = 8, seconds = 0;
    for (int i = 1; i < argc; i++) {
        if (i + 1 < argc && strcmp(argv[i], "-l") == 0)
            addr = argv[++i];
        else if (i + 1 < argc && strcmp(argv[i], "-p") == 0)
            port = atoi(argv[++i]);
        else if (i + 1 < argc && strcmp(argv[i], "-t") == 0)
            threads = atoi(argv[++i]);
        else if (i + 1 < argc && strcmp(argv[i], "-d") == 0)
            seconds = atoi(argv[++i]);
        else if (argv[i][0] != '-')
            conninfo = argv[i];
        else {
            fprintf(stderr, "usage: %s [CONNINFO] [-l address] [-p port] [-t threads] [-d seconds]\n",
                    argv[0]);
            return 2;
        }
    }
    if (!conninfo || threads < 1 || threads > 256) {
        fprintf(stderr, "metrics_http: give a conninfo or set DATABASE_URL; 1-256 threads\n");
        return 2;
    }

    pool_config_t cfg;
    pool_config_init(&cfg);
    cfg.conninfo = conninfo;
    cfg.min_size = 2;
    cfg.max_size = 4;
    cfg.acquire_timeout_ms = 2000;
    char err[512];
    pool = pool_create(&cfg, err, sizeof err);
    if (!pool) {
        fprintf(stderr, "metrics_http: %s\n", err);
        return 1;
    }
    int lfd = listen_on(addr, port);
    if (lfd < 0) {
        pool_destroy(pool);
        return 1;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    pthread_t tid[256];
    samples_t *per_thread = calloc((size_t)threads, sizeof *per_thread);
    if (!per_thread) {
        pool_destroy(pool);
        return 1;
    }
    for (int i = 0; i < threads; i++)
        pthread_create(&tid[i], NULL, worker, &per_thread[i]);

    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (!atomic_load(&stop)) {
        struct pollfd p = {.fd = lfd, .events = POLLIN};
        if (poll(&p, 1, 200) > 0) {
            int fd = accept(lfd, NULL, NULL);
            if (fd >= 0) {
                serve(fd);
                close(fd);
            }
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (seconds > 0 && now.tv_sec - t0.tv_sec >= seconds)
            atomic_store(&stop, true);
    }
    for (int i = 0; i < threads; i++)
        pthread_join(tid[i], NULL);
    close(lfd);
    report(per_thread, threads);
    for (int i = 0; i < threads; i++) {
        free(per_thread[i].wait);
        free(per_thread[i].hold);
    }
    free(per_thread);
    pool_destroy(pool);
    return 0;
}

/* SPDX-License-Identifier: MIT */
/*
 * test_impostor.c - a port that answers, but not as PostgreSQL: garbage, an
 * HTTP reply, an authentication request nobody knows, a huge error, an
 * endless one, silence, one byte every 50 ms, and a server that echoes the
 * password it was sent.  Callers fail within their deadline with a message
 * that never shows the password, no socket is left open, and the pool works
 * as soon as the port leads to the real server again (the impostor then
 * forwards to it).
 */
#include "harness.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define SECRET "hunter2secret"

typedef enum act {
    ACT_FORWARD, ACT_GARBAGE, ACT_HTTP, ACT_UNKNOWN_AUTH, ACT_HUGE_ERROR, ACT_ENDLESS_ERROR,
    ACT_SILENCE, ACT_TRICKLE, ACT_ECHO_PASSWORD,
} act_t;

static const char *act_names[] = {"forward", "garbage", "HTTP reply", "unknown authentication",
                                  "huge error", "endless error", "silence", "one byte every 50 ms",
                                  "password echoed"};

typedef struct impostor {
    int listen_fd, port;
    atomic_int act;
    atomic_int active; /* connection threads alive */
    atomic_bool stop;
    pthread_t thread;
} impostor_t;

typedef struct conn_arg {
    impostor_t *im;
    int fd;
    act_t act;
} conn_arg_t;

static bool send_all(int fd, const void *buf, size_t n)
{
    for (size_t off = 0; off < n;) {
        ssize_t w = send(fd, (const char *)buf + off, n - off, MSG_NOSIGNAL);
        if (w <= 0)
            return false;
        off += (size_t)w;
    }
    return true;
}

/* Waits (bounded by stop) until the client hangs up. */
static void until_hangup(impostor_t *im, int fd)
{
    char buf[4096];
    while (!atomic_load(&im->stop)) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 50) > 0 && recv(fd, buf, sizeof buf, 0) <= 0)
            return;
    }
}

static bool read_n(int fd, void *buf, size_t n)
{
    for (size_t off = 0; off < n;) {
        ssize_t r = recv(fd, (char *)buf + off, n - off, 0);
        if (r <= 0)
            return false;
        off += (size_t)r;
    }
    return true;
}

/* A message the client sends after the startup packet: type, then body. */
static bool read_message(int fd, char *type, char *body, size_t cap)
{
    uint32_t len;
    if (!read_n(fd, type, 1) || !read_n(fd, &len, 4))
        return false;
    len = ntohl(len);
    if (len < 4 || len - 4 >= cap)
        return false;
    body[len - 4] = '\0';
    return read_n(fd, body, len - 4);
}

static void put32(char *p, uint32_t v)
{
    v = htonl(v);
    memcpy(p, &v, 4);
}

static void forward(impostor_t *im, int client)
{
    const char *path = getenv("PGPOOL_TEST_SOCKET");
    int server = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", path ? path : "");
    if (server < 0 || connect(server, (struct sockaddr *)&a, sizeof a) != 0) {
        if (server >= 0)
            close(server);
        return;
    }
    char buf[65536];
    while (!atomic_load(&im->stop)) {
        struct pollfd p[2] = {{.fd = client, .events = POLLIN}, {.fd = server, .events = POLLIN}};
        if (poll(p, 2, 50) <= 0)
            continue;
        int from = p[0].revents ? client : server, to = from == client ? server : client;
        ssize_t n = recv(from, buf, sizeof buf, 0);
        if (n <= 0 || !send_all(to, buf, (size_t)n))
            break;
    }
    close(server);
}

static void *serve(void *arg)
{
    conn_arg_t *ca = arg;
    impostor_t *im = ca->im;
    int fd = ca->fd;
    char body[8192], type;
    uint32_t len = 0;
    if (ca->act == ACT_FORWARD) {
        forward(im, fd);
        goto done;
    }
    /* The startup packet (sslmode=disable: no SSLRequest first). */
    if (!read_n(fd, &len, 4) || ntohl(len) < 8 || ntohl(len) > sizeof body ||
        !read_n(fd, body, ntohl(len) - 4))
        goto done;
    switch (ca->act) {
    case ACT_GARBAGE: {
        char junk[64];
        for (size_t i = 0; i < sizeof junk; i++)
            junk[i] = (char)(i * 37 + 11);
        send_all(fd, junk, sizeof junk);
        until_hangup(im, fd);
        break;
    }
    case ACT_HTTP: {
        const char *r = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        send_all(fd, r, strlen(r));
        break;
    }
    case ACT_UNKNOWN_AUTH: {
        char m[9] = {'R'};
        put32(m + 1, 8);
        put32(m + 5, 99);
        send_all(fd, m, sizeof m);
        until_hangup(im, fd);
        break;
    }
    case ACT_HUGE_ERROR:
    case ACT_ENDLESS_ERROR: {
        size_t n = ca->act == ACT_HUGE_ERROR ? 1000000 : 0x7ffffff0;
        char head[5 + 8] = {'E'};
        put32(head + 1, (uint32_t)(n + 4));
        memcpy(head + 5, "SFATAL\0M", 8);
        if (!send_all(fd, head, sizeof head))
            break;
        char chunk[4096];
        memset(chunk, 'x', sizeof chunk);
        for (size_t sent = 8; sent < n && !atomic_load(&im->stop);) {
            size_t k = n - sent < sizeof chunk ? n - sent : sizeof chunk;
            if (!send_all(fd, chunk, k))
                break;
            sent += k;
        }
        until_hangup(im, fd);
        break;
    }
    case ACT_SILENCE:
        until_hangup(im, fd);
        break;
    case ACT_TRICKLE: {
        /* AuthenticationOk, then NoticeResponse after NoticeResponse, a byte
           every 50 ms: valid, and never done. */
        char ok[9] = {'R'};
        put32(ok + 1, 8);
        put32(ok + 5, 0);
        char m[5 + 14] = {'N'};
        put32(m + 1, 4 + 14);
        memcpy(m + 5, "SNOTICE\0Mslow\0\0", 14);
        for (size_t i = 0; !atomic_load(&im->stop); i++) {
            const char *b = i < sizeof ok ? &ok[i] : &m[(i - sizeof ok) % sizeof m];
            if (!send_all(fd, b, 1))
                break;
            struct pollfd p = {.fd = fd, .events = POLLIN};
            if (poll(&p, 1, 50) > 0 && recv(fd, body, sizeof body, MSG_DONTWAIT) == 0)
                break;
        }
        break;
    }
    case ACT_ECHO_PASSWORD: {
        char m[9] = {'R'};
        put32(m + 1, 8);
        put32(m + 5, 3); /* AuthenticationCleartextPassword */
        if (!send_all(fd, m, sizeof m) || !read_message(fd, &type, body, sizeof body) || type != 'p')
            break;
        char e[512];
        int k = snprintf(e + 5, sizeof e - 5, "SFATAL%cC28P01%cMpassword \"%s\" is wrong%c", 0, 0,
                         body, 0);
        e[0] = 'E';
        e[5 + k] = '\0';
        put32(e + 1, (uint32_t)(4 + k + 1));
        send_all(fd, e, (size_t)(5 + k + 1));
        until_hangup(im, fd);
        break;
    }
    case ACT_FORWARD:
        break;
    }
done:
    close(fd);
    free(ca);
    atomic_fetch_sub(&im->active, 1);
    return NULL;
}

static void *accept_loop(void *arg)
{
    impostor_t *im = arg;
    while (!atomic_load(&im->stop)) {
        struct pollfd p = {.fd = im->listen_fd, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0)
            continue;
        int fd = accept4(im->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        conn_arg_t *ca = malloc(sizeof *ca);
        *ca = (conn_arg_t){.im = im, .fd = fd, .act = (act_t)atomic_load(&im->act)};
        atomic_fetch_add(&im->active, 1);
        pthread_t t;
        pthread_create(&t, NULL, serve, ca);
        pthread_detach(t);
    }
    return NULL;
}

static impostor_t *impostor_start(void)
{
    impostor_t *im = calloc(1, sizeof *im);
    im->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_int_equal(bind(im->listen_fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(im->listen_fd, 64), 0);
    assert_int_equal(getsockname(im->listen_fd, (struct sockaddr *)&a, &len), 0);
    im->port = ntohs(a.sin_port);
    pthread_create(&im->thread, NULL, accept_loop, im);
    return im;
}

static bool impostor_idle(void *im)
{
    return atomic_load(&((impostor_t *)im)->active) == 0;
}

static void impostor_stop(impostor_t *im)
{
    atomic_store(&im->stop, true);
    pthread_join(im->thread, NULL);
    test_wait_for(impostor_idle, im, 5000);
    close(im->listen_fd);
    free(im);
}


static void test_an_impostor_fails_callers_in_time_and_the_pool_recovers(void **state)
{
    impostor_t *im = impostor_start();
    int baseline = test_count_sockets();
    char conninfo[256];
    snprintf(conninfo, sizeof conninfo,
             "host=127.0.0.1 port=%d dbname=postgres user=postgres password=" SECRET
             " sslmode=disable application_name=impostor",
             im->port);
    test_log_t log = {0};
    pool_config_t cfg;
    pool_config_init(&cfg);
    cfg.conninfo = conninfo;
    cfg.min_size = 0;
    cfg.max_size = 2;
    cfg.connect_timeout_ms = 500;
    cfg.on_log = test_log_cb;
    cfg.arg = &log;
    for (act_t act = ACT_GARBAGE; act <= ACT_ECHO_PASSWORD; act++) {
        atomic_store(&im->act, (int)act);
        pool_t *pool = test_pool_create(&cfg);
        test_getconn_t g = test_getconn_timed(pool, 2000);
        print_message("%-24s %4lld ms  %s: %.150s\n", act_names[act], (long long)g.took_ms,
                      pool_strerror(g.err), g.msg);
        assert_null(g.conn);
        assert_true(g.err == POOL_ECONNECT || g.err == POOL_ETIMEDOUT);
        assert_true(g.took_ms < 2000 + 1000);
        assert_true(strlen(g.msg) > 20);
        assert_null(strstr(g.msg, SECRET));
        for (const char *p = g.msg; *p; p++)
            assert_false((unsigned char)*p < 0x20 || *p == 0x7f || (unsigned char)*p >= 0xf5);
        assert_true(g.msg[strlen(g.msg) - 1] != ':');

        /* The port leads to the real server again: the same pool recovers. */
        atomic_store(&im->act, ACT_FORWARD);
        PGconn *c = pool_getconn_timeout(pool, 10000);
        if (!c)
            fail_msg("%s: no recovery: %s", act_names[act], pool_errmsg());
        assert_int_equal(test_query_int(c, "SELECT 1"), 1);
        pool_putconn(pool, c);
        pool_destroy(pool);
        /* Nothing left open on our side: the impostor sees every hang-up. */
        assert_true(test_wait_for(impostor_idle, im, 5000));
        assert_int_equal(test_count_sockets(), baseline);
    }
    assert_false(test_log_contains(&log, SECRET));
    assert_true(test_log_contains(&log, "is wrong")); /* the echo was logged, scrubbed */
    impostor_stop(im);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_an_impostor_fails_callers_in_time_and_the_pool_recovers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

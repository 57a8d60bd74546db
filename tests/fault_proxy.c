/* SPDX-License-Identifier: MIT */
/*
 * fault_proxy.c - see fault_proxy.h.  One thread, one poll() loop; the
 * control calls only set fields and wake the loop through a pipe, so every
 * socket is opened, read, written and closed by the proxy thread alone.
 */
#include "fault_proxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_PAIRS 512

typedef struct pair {
    int client, server;
} pair_t;

struct fault_proxy {
    char socket_path[108];
    int listen_fd, port;
    int wake[2];                 /* control calls write a byte here */
    pthread_t thread;
    atomic_int mode, latency_ms, nconns;
    atomic_bool reset_requested, stop;
    pair_t pairs[MAX_PAIRS];     /* proxy thread only */
    int npairs;                  /* proxy thread only */
};

static void hard_close(int fd)
{
    struct linger lg = {1, 0}; /* close with RST, not FIN */
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
}

static void drop_pair(fault_proxy_t *p, int i, bool reset)
{
    if (reset) {
        hard_close(p->pairs[i].client);
        hard_close(p->pairs[i].server);
    } else {
        close(p->pairs[i].client);
        close(p->pairs[i].server);
    }
    p->pairs[i] = p->pairs[--p->npairs];
    atomic_store(&p->nconns, p->npairs);
}

static int connect_server(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0)
        return fd;
    if (fd >= 0)
        close(fd);
    return -1;
}

static void accept_one(fault_proxy_t *p)
{
    int c = accept4(p->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (c < 0)
        return;
    if (atomic_load(&p->mode) == PROXY_REFUSE || p->npairs == MAX_PAIRS) {
        hard_close(c);
        return;
    }
    int s = connect_server(p->socket_path);
    if (s < 0) {
        hard_close(c);
        return;
    }
    p->pairs[p->npairs++] = (pair_t){c, s};
    atomic_store(&p->nconns, p->npairs);
}

/* Moves one chunk from `from` to `to`; false when the pair is done. */
static bool forward(fault_proxy_t *p, int from, int to)
{
    char buf[65536];
    ssize_t n = read(from, buf, sizeof buf);
    if (n <= 0)
        return false;
    int ms = atomic_load(&p->latency_ms);
    if (ms > 0) {
        struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
        nanosleep(&ts, NULL);
    }
    for (ssize_t off = 0; off < n;) {
        ssize_t w = send(to, buf + off, (size_t)(n - off), MSG_NOSIGNAL);
        if (w <= 0)
            return false;
        off += w;
    }
    return true;
}

static void *proxy_main(void *arg)
{
    fault_proxy_t *p = arg;
    struct pollfd pfd[2 + 2 * MAX_PAIRS];
    while (!atomic_load(&p->stop)) {
        bool flowing = atomic_load(&p->mode) != PROXY_SILENT;
        int n = 0;
        pfd[n++] = (struct pollfd){.fd = p->wake[0], .events = POLLIN};
        pfd[n++] = (struct pollfd){.fd = p->listen_fd, .events = POLLIN};
        for (int i = 0; i < p->npairs && flowing; i++) {
            pfd[n++] = (struct pollfd){.fd = p->pairs[i].client, .events = POLLIN};
            pfd[n++] = (struct pollfd){.fd = p->pairs[i].server, .events = POLLIN};
        }
        if (poll(pfd, (nfds_t)n, -1) < 0 && errno != EINTR)
            break;
        if (pfd[0].revents) {
            char drain[64];
            (void)!read(p->wake[0], drain, sizeof drain);
        }
        if (atomic_exchange(&p->reset_requested, false)) {
            while (p->npairs > 0)
                drop_pair(p, p->npairs - 1, true);
            continue;
        }
        if (pfd[1].revents)
            accept_one(p);
        /* Walk backwards: drop_pair moves the last pair into the hole. */
        for (int i = (n - 2) / 2 - 1; i >= 0; i--) {
            struct pollfd *c = &pfd[2 + 2 * i], *s = &pfd[3 + 2 * i];
            bool ok = true;
            if (c->revents)
                ok = forward(p, p->pairs[i].client, p->pairs[i].server);
            if (ok && s->revents)
                ok = forward(p, p->pairs[i].server, p->pairs[i].client);
            if (!ok)
                drop_pair(p, i, false);
        }
    }
    while (p->npairs > 0)
        drop_pair(p, p->npairs - 1, false);
    return NULL;
}

static void wake(fault_proxy_t *p)
{
    (void)!write(p->wake[1], "x", 1);
}

fault_proxy_t *proxy_start(const char *socket_path)
{
    fault_proxy_t *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    snprintf(p->socket_path, sizeof p->socket_path, "%s", socket_path);
    p->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (p->listen_fd < 0 || bind(p->listen_fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        listen(p->listen_fd, 128) != 0 ||
        getsockname(p->listen_fd, (struct sockaddr *)&a, &len) != 0 ||
        pipe2(p->wake, O_CLOEXEC | O_NONBLOCK) != 0) {
        if (p->listen_fd >= 0)
            close(p->listen_fd);
        free(p);
        return NULL;
    }
    p->port = ntohs(a.sin_port);
    if (pthread_create(&p->thread, NULL, proxy_main, p) != 0) {
        close(p->listen_fd);
        close(p->wake[0]);
        close(p->wake[1]);
        free(p);
        return NULL;
    }
    return p;
}

int proxy_port(const fault_proxy_t *p)
{
    return p->port;
}

void proxy_set_mode(fault_proxy_t *p, proxy_mode_t mode)
{
    atomic_store(&p->mode, (int)mode);
    wake(p);
}

void proxy_set_latency_ms(fault_proxy_t *p, int ms)
{
    atomic_store(&p->latency_ms, ms);
    wake(p);
}

void proxy_reset_all(fault_proxy_t *p)
{
    atomic_store(&p->reset_requested, true);
    wake(p);
}

int proxy_connections(fault_proxy_t *p)
{
    return atomic_load(&p->nconns);
}

void proxy_stop(fault_proxy_t *p)
{
    if (!p)
        return;
    atomic_store(&p->stop, true);
    wake(p);
    pthread_join(p->thread, NULL);
    close(p->listen_fd);
    close(p->wake[0]);
    close(p->wake[1]);
    free(p);
}

/* SPDX-License-Identifier: MIT */
/*
 * fault_proxy.h - a small fault-injection TCP proxy for the tests.
 *
 * Listens on 127.0.0.1 on a free port and forwards each connection to the test
 * server's Unix socket, from a thread of its own.  A test can make the network
 * go silent (connections stay open, nothing passes, new ones hang in the
 * handshake), refuse new connections, reset every open one mid-whatever, add
 * latency, and let traffic flow again.
 */
#ifndef PGPOOL_FAULT_PROXY_H
#define PGPOOL_FAULT_PROXY_H

typedef enum proxy_mode {
    PROXY_FORWARD, /* pass bytes both ways */
    PROXY_SILENT,  /* keep and accept connections, pass nothing */
    PROXY_REFUSE,  /* reset every new connection at once; open ones keep flowing */
} proxy_mode_t;

typedef struct fault_proxy fault_proxy_t;

/* Starts a proxy to the Unix socket at socket_path; NULL on failure. */
fault_proxy_t *proxy_start(const char *socket_path);
int proxy_port(const fault_proxy_t *p);
void proxy_set_mode(fault_proxy_t *p, proxy_mode_t mode);
void proxy_set_latency_ms(fault_proxy_t *p, int ms); /* each chunk, each way */
void proxy_reset_all(fault_proxy_t *p);              /* RST every open connection, now */
int proxy_connections(fault_proxy_t *p);             /* open client connections */
void proxy_stop(fault_proxy_t *p);

#endif

/* SPDX-License-Identifier: MIT */
/*
 * format.c - pool_stats_format: a stats snapshot as Prometheus text (format
 * 0.0.4) or as one JSON object, written snprintf-style into the caller's
 * buffer, so a caller can size it with a first call of length 0.
 */
#include "pool_internal.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>

/* Appends to a fixed buffer, counting what the whole text needs. */
typedef struct out {
    char *buf;
    size_t len;  /* capacity, NUL included */
    size_t need; /* length of the whole text so far */
} out_t;

static void put(out_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(out_t *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *dst = o->need < o->len ? o->buf + o->need : NULL;
    int n = vsnprintf(dst, dst ? o->len - o->need : 0, fmt, ap);
    va_end(ap);
    if (n > 0)
        o->need += (size_t)n;
}

static void put_char(out_t *o, char c)
{
    if (o->need + 1 < o->len)
        o->buf[o->need] = c;
    o->need++;
}

/* Microseconds as seconds, exactly: 1500000 -> "1.500000". */
static void put_seconds(out_t *o, uint64_t us)
{
    put(o, "%llu.%06llu", (unsigned long long)(us / 1000000), (unsigned long long)(us % 1000000));
}

/* A Prometheus label value: backslash, double quote and newline escaped. */
static void put_label_value(out_t *o, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            put(o, "\\%c", *s);
        else if (*s == '\n')
            put(o, "\\n");
        else
            put_char(o, *s);
    }
}

/* A JSON string body (RFC 8259): quote, backslash and control characters escaped. */
static void put_json_string(out_t *o, const char *s)
{
    put_char(o, '"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            put(o, "\\%c", c);
        else if (c < 0x20)
            put(o, "\\u%04x", c);
        else
            put_char(o, (char)c);
    }
    put_char(o, '"');
}

/* ---- Prometheus ---------------------------------------------------------- */

static void prom_head(out_t *o, const char *metric, const char *type, const char *help)
{
    put(o, "# HELP pgpool_%s %s\n# TYPE pgpool_%s %s\n", metric, help, metric, type);
}

static void prom_label(out_t *o, const char *metric, const char *name)
{
    put(o, "pgpool_%s{pool=\"", metric);
    put_label_value(o, name);
    put(o, "\"");
}

static void prom_value(out_t *o, const char *metric, const char *type, const char *help,
                       const char *name, uint64_t value)
{
    prom_head(o, metric, type, help);
    prom_label(o, metric, name);
    put(o, "} %llu\n", (unsigned long long)value);
}

static void prom_seconds(out_t *o, const char *metric, const char *type, const char *help,
                         const char *name, uint64_t us)
{
    prom_head(o, metric, type, help);
    prom_label(o, metric, name);
    put(o, "} ");
    put_seconds(o, us);
    put(o, "\n");
}

static void prom_hist(out_t *o, const char *metric, const char *help, const char *name,
                      const pool_hist_t *h)
{
    char bucket[64], sum[64], count[64];
    snprintf(bucket, sizeof bucket, "%s_bucket", metric);
    snprintf(sum, sizeof sum, "%s_sum", metric);
    snprintf(count, sizeof count, "%s_count", metric);
    prom_head(o, metric, "histogram", help);
    uint64_t cumulative = 0;
    for (int i = 0; i < POOL_HIST_BUCKETS - 1; i++) {
        cumulative += h->bucket[i];
        prom_label(o, bucket, name);
        put(o, ",le=\"");
        put_seconds(o, (uint64_t)1 << i);
        put(o, "\"} %llu\n", (unsigned long long)cumulative);
    }
    prom_label(o, bucket, name);
    put(o, ",le=\"+Inf\"} %llu\n", (unsigned long long)h->count);
    prom_label(o, sum, name);
    put(o, "} ");
    put_seconds(o, h->sum_us);
    put(o, "\n");
    prom_label(o, count, name);
    put(o, "} %llu\n", (unsigned long long)h->count);
}

/* Whether the caller's snapshot (of `size` bytes, from an older header
   maybe) holds the field: one it lacks is left out, not printed as 0. */
#define HAS(field) POOL_HAS_FIELD(pool_stats_t, field, size)

static void format_prometheus(out_t *o, const pool_stats_t *s, size_t size, const char *name)
{
    prom_head(o, "connections", "gauge", "Open connections and attempts in flight, by state.");
    const char *states[] = {"idle", "in_use", "connecting"};
    int values[] = {s->idle, s->in_use, s->connecting};
    for (int i = 0; i < 3; i++) {
        prom_label(o, "connections", name);
        put(o, ",state=\"%s\"} %d\n", states[i], values[i]);
    }
    prom_value(o, "waiting", "gauge", "Callers waiting in line: pool_getconn, and pool_getconn_async requests.", name, (uint64_t)s->waiting);
    prom_value(o, "min_size", "gauge", "Configured min_size.", name, (uint64_t)s->min_size);
    prom_value(o, "max_size", "gauge", "Configured max_size.", name, (uint64_t)s->max_size);
    prom_value(o, "max_overflow", "gauge", "Configured max_overflow.", name, (uint64_t)s->max_overflow);
    if (HAS(effective_max))
        prom_value(o, "effective_max", "gauge",
                   "The ceiling in force: max_size + max_overflow, or lower after the server refused.",
                   name, (uint64_t)s->effective_max);

    const struct {
        const char *metric, *help;
        uint64_t value;
        bool present;
    } counters[] = {
        {"acquired_total", "Connections handed out by pool_getconn and pool_getconn_async.", s->acquired, true},
        {"acquire_timeouts_total", "pool_getconn calls that timed out.", s->acquire_timeouts, true},
        {"acquire_errors_total", "pool_getconn calls that failed otherwise.", s->acquire_errors, true},
        {"connects_total", "Connections opened.", s->connects, true},
        {"connect_errors_total", "Failed attempts to open a connection.", s->connect_errors, true},
        {"closed_total", "Connections closed, for any reason.", s->closed, true},
        {"closed_broken_total", "Connections closed because dead or unusable.", s->closed_broken, true},
        {"closed_idle_total", "Connections closed by idle_timeout_ms.", s->closed_idle, true},
        {"closed_lifetime_total", "Connections closed by max_lifetime_ms.", s->closed_lifetime, true},
        {"pings_total", "Round-trip validations run.", s->pings, true},
        {"rollbacks_total", "Connections returned inside a transaction, rolled back.", s->rollbacks, true},
        {"leaks_total", "Checkouts that passed leak_timeout_ms.", s->leaks, true},
        {"closed_role_total", "Connections closed because the server no longer matched target_session_attrs.",
         s->closed_role, HAS(closed_role)},
        {"evictions_total", "Host-wide evictions after a connection to the host failed.", s->evictions, HAS(evictions)},
        {"closed_evicted_total", "Connections closed because retired by an eviction or pool_evict.",
         s->closed_evicted, HAS(closed_evicted)},
        {"server_refusals_total", "Connects the server refused for lack of slots (SQLSTATE 53300).",
         s->server_refusals, HAS(server_refusals)},
    };
    for (size_t i = 0; i < sizeof counters / sizeof counters[0]; i++)
        if (counters[i].present)
            prom_value(o, counters[i].metric, "counter", counters[i].help, name, counters[i].value);
    prom_seconds(o, "wait_time_seconds_total", "counter", "Time callers spent in pool_getconn.",
                 name, s->wait_us_total);
    prom_seconds(o, "wait_time_max_seconds", "gauge", "Longest time one call spent in pool_getconn.",
                 name, s->wait_us_max);
    prom_seconds(o, "hold_time_seconds_total", "counter", "Time connections spent checked out.",
                 name, s->hold_us_total);
    if (!HAS(connect_hist))
        return; /* the histograms came together */
    prom_hist(o, "wait_seconds", "Time from asking for a connection to getting one (or failing).", name, &s->wait_hist);
    prom_hist(o, "hold_seconds", "Checkout to return.", name, &s->hold_hist);
    prom_hist(o, "connect_seconds", "Opening one connection, on_connect included.", name,
              &s->connect_hist);
}

/* ---- JSON ----------------------------------------------------------------- */

static void json_hist(out_t *o, const char *key, const pool_hist_t *h)
{
    put(o, ",\"%s\":{\"count\":%llu,\"sum_us\":%llu,\"buckets\":[", key,
        (unsigned long long)h->count, (unsigned long long)h->sum_us);
    for (int i = 0; i < POOL_HIST_BUCKETS; i++)
        put(o, "%s%llu", i ? "," : "", (unsigned long long)h->bucket[i]);
    put(o, "]}");
}

static void format_json(out_t *o, const pool_stats_t *s, size_t size, const char *name)
{
    put(o, "{\"pool\":");
    put_json_string(o, name);
    put(o, ",\"total\":%d,\"idle\":%d,\"in_use\":%d,\"connecting\":%d,\"waiting\":%d"
           ",\"min_size\":%d,\"max_size\":%d,\"max_overflow\":%d",
        s->total, s->idle, s->in_use, s->connecting, s->waiting, s->min_size, s->max_size,
        s->max_overflow);
    const struct {
        const char *key;
        uint64_t value;
        bool present;
    } counters[] = {
        {"acquired", s->acquired, true},
        {"acquire_timeouts", s->acquire_timeouts, true},
        {"acquire_errors", s->acquire_errors, true},
        {"connects", s->connects, true},
        {"connect_errors", s->connect_errors, true},
        {"closed", s->closed, true},
        {"closed_broken", s->closed_broken, true},
        {"closed_idle", s->closed_idle, true},
        {"closed_lifetime", s->closed_lifetime, true},
        {"pings", s->pings, true},
        {"rollbacks", s->rollbacks, true},
        {"leaks", s->leaks, true},
        {"closed_role", s->closed_role, HAS(closed_role)},
        {"evictions", s->evictions, HAS(evictions)},
        {"closed_evicted", s->closed_evicted, HAS(closed_evicted)},
        {"effective_max", (uint64_t)s->effective_max, HAS(effective_max)},
        {"server_refusals", s->server_refusals, HAS(server_refusals)},
        {"wait_us_total", s->wait_us_total, true},
        {"wait_us_max", s->wait_us_max, true},
        {"hold_us_total", s->hold_us_total, true},
    };
    for (size_t i = 0; i < sizeof counters / sizeof counters[0]; i++)
        if (counters[i].present)
            put(o, ",\"%s\":%llu", counters[i].key, (unsigned long long)counters[i].value);
    if (HAS(connect_hist)) {
        json_hist(o, "wait_hist", &s->wait_hist);
        json_hist(o, "hold_hist", &s->hold_hist);
        json_hist(o, "connect_hist", &s->connect_hist);
    }
    put(o, "}\n");
}

/* ---- per host ------------------------------------------------------------- */

/* Host i of the caller's array of `size`-byte elements, as a whole one of ours. */
static pool_host_stats_t host_at(const pool_host_stats_t *hs, int i, size_t size)
{
    pool_host_stats_t h;
    pool__copy_in(&h, sizeof h, (const char *)hs + (size_t)i * size, size);
    h.host[sizeof h.host - 1] = h.port[sizeof h.port - 1] = '\0';
    return h;
}

static void format_hosts_prometheus(out_t *o, const pool_host_stats_t *hs, int n, size_t size,
                                    const char *name)
{
    const char *metrics[] = {"host_connections", "host_down", "host_connects_total",
                             "host_connect_errors_total", "host_evictions_total"};
    const char *types[] = {"gauge", "gauge", "counter", "counter", "counter"};
    const char *helps[] = {
        "Open connections, by host of the conninfo.",
        "1 while the host's last attempt failed and it is tried after the others.",
        "Connections opened, by host.",
        "Failed attempts to open a connection, by host.",
        "Host-wide evictions, by host.",
    };
    for (int m = 0; m < 5; m++) {
        prom_head(o, metrics[m], types[m], helps[m]);
        for (int i = 0; i < n; i++) {
            pool_host_stats_t h = host_at(hs, i, size);
            uint64_t v[] = {(uint64_t)h.open, (uint64_t)h.down, h.connects, h.connect_errors,
                            h.evictions};
            prom_label(o, metrics[m], name);
            put(o, ",host=\"");
            put_label_value(o, h.host);
            put(o, "\",port=\"");
            put_label_value(o, h.port);
            put(o, "\"} %llu\n", (unsigned long long)v[m]);
        }
    }
}

static void format_hosts_json(out_t *o, const pool_host_stats_t *hs, int n, size_t size,
                              const char *name)
{
    put(o, "{\"pool\":");
    put_json_string(o, name);
    put(o, ",\"hosts\":[");
    for (int i = 0; i < n; i++) {
        pool_host_stats_t h = host_at(hs, i, size);
        put(o, "%s{\"host\":", i ? "," : "");
        put_json_string(o, h.host);
        put(o, ",\"port\":");
        put_json_string(o, h.port);
        put(o, ",\"open\":%d,\"down\":%d,\"connects\":%llu,\"connect_errors\":%llu,\"evictions\":%llu}",
            h.open, h.down, (unsigned long long)h.connects, (unsigned long long)h.connect_errors,
            (unsigned long long)h.evictions);
    }
    put(o, "]}\n");
}

/* ---- entry points ---------------------------------------------------------- */

/* The checks both entry points share; NULL when the arguments are good. */
static const char *bad_arguments(pool_format_t fmt, const char *name, const char *buf, size_t len)
{
    return !name ? "name is NULL"
           : !buf && len > 0 ? "buf is NULL but len is not 0"
           : fmt != POOL_FORMAT_PROMETHEUS && fmt != POOL_FORMAT_JSON ? "unknown format"
                                                                         : NULL;
}

/* Terminates the text and returns its length, snprintf-style. */
static int finish(const out_t *o, const char *what)
{
    if (o->len > 0)
        o->buf[o->need < o->len ? o->need : o->len - 1] = '\0';
    if (o->need > INT_MAX) {
        pool__set_error(POOL_EINVAL, "%s: text longer than INT_MAX", what);
        return -1;
    }
    return (int)o->need;
}

int pool_stats_format_sized(const pool_stats_t *caller_s, size_t size, pool_format_t fmt,
                            const char *name, char *buf, size_t len)
{
    const char *bad = !caller_s                   ? "stats is NULL"
                      : size < POOL_STATS_SIZE_MIN ? "stats size is smaller than any pgpool header's"
                                                   : bad_arguments(fmt, name, buf, len);
    if (bad) {
        pool__set_error(POOL_EINVAL, "pool_stats_format: %s", bad);
        return -1;
    }
    pool_stats_t s; /* whole, so that no read goes past the caller's struct */
    pool__copy_in(&s, sizeof s, caller_s, size);
    out_t o = {.buf = buf, .len = len, .need = 0};
    if (fmt == POOL_FORMAT_PROMETHEUS)
        format_prometheus(&o, &s, size, name);
    else
        format_json(&o, &s, size, name);
    return finish(&o, "pool_stats_format");
}

/* The caller's array has elements of `size` bytes; each is read into a whole
   one of ours as it is printed. */
int pool_host_stats_format_sized(const pool_host_stats_t *hs, int n, size_t size,
                                 pool_format_t fmt, const char *name, char *buf, size_t len)
{
    const char *bad = n < 0                          ? "n is negative"
                      : !hs && n > 0                 ? "hosts is NULL but n is not 0"
                      : size < POOL_HOST_STATS_SIZE_1_0 ? "host stats size is smaller than any pgpool header's"
                                                     : bad_arguments(fmt, name, buf, len);
    if (bad) {
        pool__set_error(POOL_EINVAL, "pool_host_stats_format: %s", bad);
        return -1;
    }
    out_t o = {.buf = buf, .len = len, .need = 0};
    if (fmt == POOL_FORMAT_PROMETHEUS)
        format_hosts_prometheus(&o, hs, n, size, name);
    else
        format_hosts_json(&o, hs, n, size, name);
    return finish(&o, "pool_host_stats_format");
}

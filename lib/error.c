/* SPDX-License-Identifier: MIT */
/*
 * error.c - per-thread errors, messages, logging and password scrubbing.
 *
 * A failed call records a code and a message for its own thread, like errno.
 * Every message and log line goes through pool_scrub() so that no password
 * from the conninfo ever leaves the library, even where libpq echoes part of
 * the conninfo back.
 */
#include "pool_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local pool_err_t tl_code;
static _Thread_local char tl_msg[POOL_MSG_LEN];

const char *pool_strerror(pool_err_t err)
{
    switch (err) {
#define POOL_STRERROR_CASE(name, text) \
    case name:                         \
        return text;
        POOL_ERRNO_MAP(POOL_STRERROR_CASE)
#undef POOL_STRERROR_CASE
    }
    return "unknown error";
}

pool_err_t pool_errcode(void)
{
    return tl_code;
}

const char *pool_errmsg(void)
{
    return tl_msg;
}

void pool__set_error_msg(pool_err_t code, const char *msg)
{
    tl_code = code;
    snprintf(tl_msg, sizeof tl_msg, "%s", msg);
}

void pool__set_error(pool_err_t code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    tl_code = code;
    vsnprintf(tl_msg, sizeof tl_msg, fmt, ap);
    va_end(ap);
}

/* Replaces every occurrence of the pool's password in msg (a buffer of
   POOL_MSG_LEN bytes) with asterisks. */
static void pool_scrub(const pool_t *pool, char *msg)
{
    const char *pw = pool ? pool->password : NULL;
    if (!pw || !*pw || !strstr(msg, pw))
        return;
    char out[POOL_MSG_LEN];
    size_t o = 0, pwlen = strlen(pw);
    for (const char *p = msg; *p && o + 1 < sizeof out;) {
        if (strncmp(p, pw, pwlen) == 0) {
            const char *mask = "********";
            for (; *mask && o + 1 < sizeof out; mask++)
                out[o++] = *mask;
            p += pwlen;
        } else {
            out[o++] = *p++;
        }
    }
    out[o] = '\0';
    memcpy(msg, out, o + 1);
}

/* Copies a libpq message on one line: each run of newlines, tabs and spaces
   becomes one space, none at the end; then scrubs it. dst holds POOL_MSG_LEN
   bytes. */
void pool__copy_libpq_message(const pool_t *pool, char *dst, size_t len, const char *libpq_msg)
{
    const char *src = libpq_msg && *libpq_msg ? libpq_msg : "unknown libpq error";
    size_t n = 0;
    for (; *src && n + 1 < len; src++) {
        bool space = *src == ' ' || *src == '\n' || *src == '\t' || *src == '\r';
        if (space && (n == 0 || dst[n - 1] == ' '))
            continue;
        dst[n++] = space ? ' ' : *src;
    }
    while (n > 0 && dst[n - 1] == ' ')
        n--;
    dst[n] = '\0';
    pool_scrub(pool, dst);
}

static void default_log(int level, const char *msg)
{
    if (level > POOL_LOG_WARN)
        return;
    fprintf(stderr, "pgpool: %s: %s\n", level == POOL_LOG_ERROR ? "error" : "warning", msg);
}

/* Never call with pool->lock held: on_log may call back into the pool. */
void pool__log(const pool_t *pool, int level, const char *fmt, ...)
{
    char msg[POOL_MSG_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pool_scrub(pool, msg);
    if (pool && pool->cfg.on_log)
        pool->cfg.on_log(level, msg, pool->cfg.arg);
    else
        default_log(level, msg);
}

/* The value of keyword `key` in a keyword/value conninfo, or of the password
   part of a URI, found without libpq: for conninfo strings that libpq refused
   to parse but whose password must still not appear in the error. */
static char *password_by_hand(const char *conninfo)
{
    const char *scheme = strstr(conninfo, "://");
    if (scheme) {
        const char *start = scheme + 3, *at = strchr(start, '@');
        const char *colon = at ? memchr(start, ':', (size_t)(at - start)) : NULL;
        if (colon && at > colon + 1)
            return strndup(colon + 1, (size_t)(at - colon - 1));
        const char *q = strstr(conninfo, "password=");
        if (q) {
            q += strlen("password=");
            return strndup(q, strcspn(q, "&#"));
        }
        return NULL;
    }
    const char *p = strstr(conninfo, "password");
    if (!p)
        return NULL;
    p += strlen("password");
    p += strspn(p, " \t\n");
    if (*p != '=')
        return NULL;
    p++;
    p += strspn(p, " \t\n");
    if (*p == '\'') {
        p++;
        return strndup(p, strcspn(p, "'"));
    }
    size_t n = strcspn(p, " \t\n");
    return n ? strndup(p, n) : NULL;
}

/* The password in conninfo, malloc'd, or NULL when it has none. */
char *pool__password_of(const char *conninfo)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &err);
    PQfreemem(err);
    if (!opts)
        return password_by_hand(conninfo);
    char *pw = NULL;
    for (PQconninfoOption *o = opts; o->keyword && !pw; o++)
        if (strcmp(o->keyword, "password") == 0 && o->val && *o->val)
            pw = strdup(o->val);
    PQconninfoFree(opts);
    return pw;
}

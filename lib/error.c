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

/* Every occurrence of secret in msg (POOL_MSG_LEN bytes) becomes ********. */
void pool__scrub_secret(char *msg, const char *pw)
{
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

static void pool_scrub(const pool_t *pool, char *msg)
{
    pool__scrub_secret(msg, pool ? pool->password : NULL);
}

/* The length of the UTF-8 sequence at s (1 for ASCII), or 0 when it is not one. */
static int utf8_length(const char *s)
{
    unsigned char c = (unsigned char)s[0];
    int n = c < 0x80 ? 1 : c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3
                                                      : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
    for (int i = 1; i < n; i++)
        if (((unsigned char)s[i] & 0xc0) != 0x80)
            return 0;
    return n;
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
        /* A server that does not speak the protocol gets its bytes quoted
           by libpq as they came: control bytes and what is not UTF-8
           become '?'. */
        unsigned char ch = (unsigned char)*src;
        int seq = utf8_length(src);
        if (space)
            dst[n++] = ' ';
        else if (ch < 0x20 || ch == 0x7f || seq == 0)
            dst[n++] = '?';
        else if (n + (size_t)seq < len) {
            memcpy(dst + n, src, (size_t)seq);
            n += (size_t)seq;
            src += seq - 1;
        } else
            break;
    }
    while (n > 0 && dst[n - 1] == ' ')
        n--;
    dst[n] = '\0';
    if (n > 0 && dst[n - 1] == ':' && n + sizeof " (no reason given)" <= len)
        memcpy(dst + n, " (no reason given)", sizeof " (no reason given)");
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
static const char *password_by_hand(const char *conninfo, size_t *len)
{
    const char *scheme = strstr(conninfo, "://");
    if (scheme) {
        const char *start = scheme + 3, *at = strchr(start, '@');
        const char *colon = at ? memchr(start, ':', (size_t)(at - start)) : NULL;
        if (colon && at > colon + 1) {
            *len = (size_t)(at - colon - 1);
            return colon + 1;
        }
        const char *q = strstr(conninfo, "password=");
        if (!q)
            return NULL;
        q += strlen("password=");
        *len = strcspn(q, "&#");
        return q;
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
        *len = strcspn(p, "'");
        return p;
    }
    *len = strcspn(p, " \t\n");
    return *len ? p : NULL;
}

/* Whether a message from libpq (or the C library below it) says memory ran
   out: libpq's own "out of memory", getaddrinfo's "Memory allocation
   failure", strerror(ENOMEM).  English only: a libpq run under another
   language says it in words this cannot read, and the failure stays
   POOL_ECONNECT. */
bool pool__says_out_of_memory(const char *msg)
{
    return strstr(msg, "out of memory") || strstr(msg, "Memory allocation failure") ||
           strstr(msg, "Cannot allocate memory");
}

/* Whether PQconninfoParse failed for lack of memory, from the message it
   left: "out of memory" leads it then, or it had no room for one at all.
   (A syntax error quotes the conninfo, so only the start counts.) */
bool pool__parse_out_of_memory(const char *err)
{
    return !err || strncmp(err, "out of memory", 13) == 0;
}

/* The password in conninfo, malloc'd into *pw (NULL when it has none).
   False when memory ran out: then nothing can be scrubbed of it, and the
   caller must not show anything the conninfo could have echoed. */
bool pool__password_of(const char *conninfo, char **pw)
{
    *pw = NULL;
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &err);
    bool nomem = !opts && pool__parse_out_of_memory(err);
    PQfreemem(err);
    if (nomem)
        return false;
    if (!opts) {
        size_t len = 0;
        const char *p = password_by_hand(conninfo, &len);
        return !p || (*pw = strndup(p, len)) != NULL;
    }
    bool ok = true;
    for (PQconninfoOption *o = opts; o->keyword; o++)
        if (strcmp(o->keyword, "password") == 0 && o->val && *o->val) {
            ok = (*pw = strdup(o->val)) != NULL;
            break;
        }
    PQconninfoFree(opts);
    return ok;
}

/* Copies msg into dst with the conninfo's password masked, for messages
   made before a pool exists.  POOL_ENOMEM (dst says so) when the password
   could not be found for lack of memory: then msg is not shown at all. */
pool_err_t pool__copy_scrubbed(const char *conninfo, char *dst, size_t len, const char *msg)
{
    pool_t scrubber = {.password = NULL};
    if (!pool__password_of(conninfo, &scrubber.password)) {
        snprintf(dst, len, "out of memory");
        return POOL_ENOMEM;
    }
    pool__copy_libpq_message(&scrubber, dst, len, msg);
    free(scrubber.password);
    return POOL_OK;
}

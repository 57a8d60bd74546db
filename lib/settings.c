/* SPDX-License-Identifier: MIT */
/*
 * settings.c - pool settings carried in the conninfo (pool_max_size=20 ...).
 *
 * An operator's DATABASE_URL can size and time the pool.  Only our own pool_*
 * keys are taken out here: the URI's query string, or the keyword/value pairs,
 * is split the way libpq itself splits it, and every other key is handed on
 * verbatim, so libpq (PQconninfoParse) still validates and interprets all of
 * its own options.  Nothing here knows what a host, port or sslmode means.
 */
#include "pool_internal.h"

#include <ctype.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum setting_kind { SETTING_COUNT, SETTING_DURATION, SETTING_BOOL, SETTING_TEXT } setting_kind_t;

typedef struct setting {
    const char *key;
    setting_kind_t kind;
    size_t offset;       /* of the int field in pool_config_t (not for TEXT) */
    int least;           /* smallest value allowed */
    bool forever;        /* -1 is allowed too (wait forever) */
} setting_t;

#define FIELD(name) offsetof(pool_config_t, name)
static const setting_t settings[] = {
    {"pool_min_size", SETTING_COUNT, FIELD(min_size), 0, false},
    {"pool_max_size", SETTING_COUNT, FIELD(max_size), 1, false},
    {"pool_max_overflow", SETTING_COUNT, FIELD(max_overflow), 0, false},
    {"pool_acquire_timeout", SETTING_DURATION, FIELD(acquire_timeout_ms), 0, true},
    {"pool_connect_timeout", SETTING_DURATION, FIELD(connect_timeout_ms), 1, false},
    {"pool_idle_timeout", SETTING_DURATION, FIELD(idle_timeout_ms), 0, false},
    {"pool_max_lifetime", SETTING_DURATION, FIELD(max_lifetime_ms), 0, false},
    {"pool_pre_ping", SETTING_BOOL, FIELD(pre_ping), 0, false},
    {"pool_ping_idle", SETTING_DURATION, FIELD(ping_idle_ms), 0, false},
    {"pool_max_waiting", SETTING_COUNT, FIELD(max_waiting), 0, false},
    {"pool_leak_timeout", SETTING_DURATION, FIELD(leak_timeout_ms), 0, false},
    {"pool_reset_query", SETTING_TEXT, 0, 0, false},
    {"pool_return_in_background", SETTING_BOOL, FIELD(return_in_background), 0, false},
    {"pool_lifetime_jitter", SETTING_DURATION, FIELD(lifetime_jitter_ms), 0, false},
    {"pool_fair_share", SETTING_BOOL, FIELD(fair_share), 0, false},
};
#undef FIELD

/* Ours to take out: the pool_* keys, and load_balance_hosts, which pgpool
   does itself (hosts.c) and libpq 15 would reject. */
static bool is_pool_key(const char *key, size_t len)
{
    return (len >= 5 && memcmp(key, "pool_", 5) == 0) ||
           (len == 18 && memcmp(key, "load_balance_hosts", 18) == 0);
}

/* A whole number, then for durations an optional unit.  Returns false with
   the reason in err. */
static bool parse_number(const setting_t *s, const char *val, int *out, char *err, size_t errlen)
{
    static const struct { const char *unit; long long ms; } units[] = {
        {"ms", 1}, {"s", 1000}, {"min", 60000}, {"h", 3600000},
    };
    if (s->forever && strcmp(val, "-1") == 0) {
        *out = -1;
        return true;
    }
    const char *p = val;
    long long n = 0;
    if (!isdigit((unsigned char)*p)) {
        snprintf(err, errlen, "\"%.40s\" is not a whole number%s", val,
                 s->kind == SETTING_DURATION ? " with a unit (ms, s, min, h)" : "");
        return false;
    }
    for (; isdigit((unsigned char)*p); p++) {
        n = n * 10 + (*p - '0');
        if (n > INT_MAX) {
            snprintf(err, errlen, "\"%.40s\" is too large", val);
            return false;
        }
    }
    long long scale = 1;
    if (*p && s->kind == SETTING_DURATION) {
        scale = 0;
        for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
            if (strcmp(p, units[i].unit) == 0)
                scale = units[i].ms;
    }
    if (*p == '.' || *p == ',') {
        snprintf(err, errlen, "\"%.40s\" is not a whole number (no fractions)", val);
        return false;
    }
    if (*p && scale == 0) {
        snprintf(err, errlen, "\"%.40s\" has an unknown unit (ms, s, min or h)", val);
        return false;
    }
    if (*p && s->kind != SETTING_DURATION) {
        snprintf(err, errlen, "\"%.40s\" is not a whole number", val);
        return false;
    }
    if (n * scale > INT_MAX) {
        snprintf(err, errlen, "\"%.40s\" is too large (at most %d ms)", val, INT_MAX);
        return false;
    }
    if (n * scale < s->least) {
        snprintf(err, errlen, "\"%.40s\" is out of range (at least %d%s)", val, s->least,
                 s->forever ? ", or -1 for ever" : "");
        return false;
    }
    *out = (int)(n * scale);
    return true;
}

static bool parse_bool(const char *val, int *out)
{
    static const struct { const char *word; int value; } words[] = {
        {"1", 1}, {"on", 1}, {"true", 1}, {"0", 0}, {"off", 0}, {"false", 0},
    };
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        if (strcasecmp(val, words[i].word) == 0) {
            *out = words[i].value;
            return true;
        }
    return false;
}

static pool_err_t out_of_memory(char *err, size_t errlen)
{
    snprintf(err, errlen, "out of memory while reading the conninfo's pool settings");
    return POOL_ENOMEM;
}

/* Applies one pool_* key to out.  POOL_EINVAL with a message naming the key,
   or POOL_ENOMEM. */
static pool_err_t apply_setting(pool_settings_t *out, const char *key, const char *val, char *err,
                                size_t errlen)
{
    if (strcmp(key, "load_balance_hosts") == 0) {
        if (strcmp(val, "random") != 0 && strcmp(val, "disable") != 0) {
            snprintf(err, errlen, "invalid load_balance_hosts in the conninfo: \"%.40s\" is not "
                     "one of disable, random", val);
            return POOL_EINVAL;
        }
        out->load_balance_random = strcmp(val, "random") == 0;
        return POOL_OK;
    }
    const setting_t *s = NULL;
    for (size_t i = 0; i < sizeof settings / sizeof settings[0] && !s; i++)
        if (strcmp(key, settings[i].key) == 0)
            s = &settings[i];
    if (!s) {
        snprintf(err, errlen,
                 "unknown pool setting \"%.64s\" in the conninfo (known: pool_min_size, "
                 "pool_max_size, pool_max_overflow, pool_acquire_timeout, pool_connect_timeout, "
                 "pool_idle_timeout, pool_max_lifetime, pool_pre_ping, pool_ping_idle, "
                 "pool_max_waiting, pool_leak_timeout, pool_reset_query, "
                 "pool_return_in_background, pool_lifetime_jitter, pool_fair_share)", key);
        return POOL_EINVAL;
    }
    out->applied++;
    if (s->kind == SETTING_TEXT) {
        char *copy = *val ? strdup(val) : NULL;
        if (*val && !copy)
            return out_of_memory(err, errlen);
        free(out->reset_query);
        out->reset_query = copy;
        out->cfg.reset_query = copy; /* empty: no reset query */
        return POOL_OK;
    }
    int *field = (int *)(void *)((char *)&out->cfg + s->offset);
    char why[160];
    if (s->kind == SETTING_BOOL) {
        if (parse_bool(val, field))
            return POOL_OK;
        snprintf(why, sizeof why, "\"%.40s\" is not one of 0, 1, on, off, true, false", val);
    } else if (parse_number(s, val, field, why, sizeof why)) {
        return POOL_OK;
    }
    snprintf(err, errlen, "invalid %s in the conninfo: %s", key, why);
    return POOL_EINVAL;
}

/* ---- the URI form: postgresql://...?key=value&... ----------------------- */

static size_t uri_prefix_length(const char *s)
{
    if (strncmp(s, "postgresql://", 13) == 0)
        return 13;
    if (strncmp(s, "postgres://", 11) == 0)
        return 11;
    return 0;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)tolower((unsigned char)c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Percent-decodes src[0..len) into a new string, as libpq does (no '+' for
   space; %00 refused).  NULL on a bad escape, or with *nomem set. */
static char *percent_decode(const char *src, size_t len, bool *nomem)
{
    char *dst = malloc(len + 1), *d = dst;
    if (!dst) {
        *nomem = true;
        return NULL;
    }
    for (size_t i = 0; i < len; i++) {
        if (src[i] != '%') {
            *d++ = src[i];
            continue;
        }
        int hi = i + 2 < len ? hex_value(src[i + 1]) : -1;
        int lo = i + 2 < len ? hex_value(src[i + 2]) : -1;
        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
            free(dst);
            return NULL;
        }
        *d++ = (char)(hi * 16 + lo);
        i += 2;
    }
    *d = '\0';
    return dst;
}

/* Where the query string starts, found the way libpq's URI parser walks
   there: user credentials (up to an '@' before any '/') and a bracketed IPv6
   host may contain a '?'.  NULL: no query string. */
static const char *uri_query(const char *uri)
{
    const char *p = uri + uri_prefix_length(uri);
    const char *at = p + strcspn(p, "@/");
    if (*at == '@')
        p = at + 1;
    do { /* host[:port], separated by commas */
        if (*p == ',')
            p++;
        if (*p == '[') {
            p = strchr(p, ']');
            if (!p)
                return NULL; /* libpq rejects the URI */
        }
        p += strcspn(p, ":/?,");
        if (*p == ':')
            p += strcspn(p, "/?,");
    } while (*p == ',');
    if (*p == '/')
        p += strcspn(p, "?");
    return *p == '?' ? p : NULL;
}

/* Appends src[0..len) to the string being built at *end. */
static void append(char **end, const char *src, size_t len)
{
    memcpy(*end, src, len);
    *end += len;
    **end = '\0';
}

static pool_err_t split_uri(const char *uri, pool_settings_t *out, char *err, size_t errlen)
{
    const char *query = uri_query(uri);
    size_t keep = query ? (size_t)(query - uri) : strlen(uri);
    char *rest = malloc(strlen(uri) + 1), *end = rest;
    if (!rest)
        return out_of_memory(err, errlen);
    append(&end, uri, keep);
    out->conninfo = rest;
    bool first = true, nomem = false;
    for (const char *p = query ? query + 1 : ""; *p;) {
        size_t len = strcspn(p, "&");
        const char *eq = memchr(p, '=', len);
        char *key = eq ? percent_decode(p, (size_t)(eq - p), &nomem) : NULL;
        if (key && is_pool_key(key, strlen(key))) {
            char *val = percent_decode(eq + 1, len - (size_t)(eq + 1 - p), &nomem);
            pool_err_t rc = val ? apply_setting(out, key, val, err, errlen) : POOL_EINVAL;
            if (!val && !nomem)
                snprintf(err, errlen, "invalid %s in the conninfo: bad percent-encoding", key);
            free(key);
            free(val);
            if (nomem)
                return out_of_memory(err, errlen);
            if (rc != POOL_OK)
                return rc;
        } else if (nomem) {
            return out_of_memory(err, errlen); /* it may have been one of ours */
        } else {
            /* libpq's own key (or text it will reject itself): verbatim */
            free(key);
            append(&end, first ? "?" : "&", 1);
            append(&end, p, len);
            first = false;
        }
        p += len;
        if (*p == '&')
            p++;
    }
    return POOL_OK;
}

/* ---- the keyword/value form: key = value key='quoted value' ... ---------- */

/* Unquotes and unescapes the value at p (quoted: after its opening quote)
   into dst (NULL: only count), as libpq's conninfo_parse reads it.  Returns
   the end of the value (past a closing quote) with its length in *len, or
   NULL for an unterminated quoted string. */
static const char *unquote(const char *p, bool quoted, char *dst, size_t *len)
{
    size_t n = 0;
    for (;;) {
        if (!*p && quoted)
            return NULL;
        if (!*p || (!quoted && isspace((unsigned char)*p)))
            break;
        if (quoted && *p == '\'') {
            p++;
            break;
        }
        if (*p == '\\' && !*++p)
            continue; /* a backslash ends the string: as if unescaped */
        if (dst)
            dst[n] = *p;
        n++, p++;
    }
    if (dst)
        dst[n] = '\0';
    *len = n;
    return p;
}

typedef enum kv_status { KV_OK, KV_SYNTAX, KV_NOMEM } kv_status_t;

/* One "key = value" pair as libpq's conninfo_parse reads it: the pair's end
   in *next, the unquoted value (malloc'd, its own length: the walk stays
   linear in the conninfo) in *value.  KV_SYNTAX where libpq would report a
   syntax error. */
static kv_status_t kv_next(const char *p, const char **key, size_t *keylen, char **value,
                           const char **next)
{
    *key = p;
    while (*p && *p != '=' && !isspace((unsigned char)*p))
        p++;
    *keylen = (size_t)(p - *key);
    while (isspace((unsigned char)*p))
        p++;
    if (*p != '=')
        return KV_SYNTAX;
    p++;
    while (isspace((unsigned char)*p))
        p++;
    bool quoted = *p == '\'';
    p += quoted;
    size_t len;
    if (!(*next = unquote(p, quoted, NULL, &len)))
        return KV_SYNTAX;
    if (!(*value = malloc(len + 1)))
        return KV_NOMEM;
    unquote(p, quoted, *value, &len);
    return KV_OK;
}

/* Takes the pool_* pair (key, value) out: applies it, or says why not. */
static pool_err_t take_pair(pool_settings_t *out, const char *key, size_t keylen,
                            const char *value, char *err, size_t errlen)
{
    char name[64];
    snprintf(name, sizeof name, "%.*s", (int)(keylen < 63 ? keylen : 63), key);
    if (keylen >= sizeof name) {
        snprintf(err, errlen, "unknown pool setting \"%s...\" in the conninfo", name);
        return POOL_EINVAL;
    }
    return apply_setting(out, name, value, err, errlen);
}

static pool_err_t split_keyword_value(const char *conninfo, pool_settings_t *out, char *err,
                                      size_t errlen)
{
    /* Pairs are joined by one space; libpq needs none after a quoted value
       ('a'b=c), so the rest can be longer than the input, never twice. */
    char *rest = malloc(2 * strlen(conninfo) + 2), *end = rest;
    if (!rest)
        return out_of_memory(err, errlen);
    /* A leading space keeps libpq reading keyword/value pairs should what
       is left begin like a URI; it is dropped again where not needed. */
    append(&end, " ", 1);
    out->conninfo = rest;
    for (const char *p = conninfo;;) {
        while (isspace((unsigned char)*p))
            p++;
        if (!*p)
            break;
        const char *key, *next;
        size_t keylen;
        char *value = NULL;
        kv_status_t st = kv_next(p, &key, &keylen, &value, &next);
        if (st == KV_NOMEM)
            return out_of_memory(err, errlen);
        pool_err_t rc = POOL_OK;
        if (st == KV_OK && is_pool_key(key, keylen))
            rc = take_pair(out, key, keylen, value, err, errlen);
        else if (end != rest + 1)
            append(&end, " ", 1);
        free(value);
        if (rc != POOL_OK)
            return rc;
        if (st == KV_SYNTAX) {
            /* libpq will refuse the rest and say why: hand it on as it is. */
            append(&end, p, strlen(p));
            break;
        }
        if (!is_pool_key(key, keylen))
            append(&end, p, (size_t)(next - p));
        p = next;
    }
    if (uri_prefix_length(rest + 1) == 0)
        memmove(rest, rest + 1, strlen(rest));
    return POOL_OK;
}

/* ---- entry point -------------------------------------------------------- */

int pool__settings_from_conninfo(const pool_config_t *cfg, pool_settings_t *out, char *errbuf,
                           size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (!cfg || !cfg->conninfo)
        return POOL_OK; /* pool__config_validate says what is missing */
    out->cfg = *cfg;
    pool_err_t rc = uri_prefix_length(cfg->conninfo) > 0
                        ? split_uri(cfg->conninfo, out, errbuf, errlen)
                        : split_keyword_value(cfg->conninfo, out, errbuf, errlen);
    if (rc != POOL_OK) {
        pool__settings_free(out);
        return (int)rc;
    }
    out->cfg.conninfo = out->conninfo;
    return POOL_OK;
}

void pool__settings_free(pool_settings_t *s)
{
    free(s->conninfo);
    free(s->reset_query);
    s->conninfo = s->reset_query = NULL;
}

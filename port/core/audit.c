/*
 * The audit log (audit.h, docs/state.md): a SHA-256 chain of JSON lines,
 * each record sealed with an HMAC-SHA-256 when a key is configured, and an
 * anchor file beside it that holds the last record outside the log.
 *
 * Appending (one mutex for threads, a POSIX record lock for processes):
 * the anchor with the new record is written to a temporary file, fsync()ed
 * and renamed over the anchor (directory fsync()ed), then the record is
 * written with one write() on an O_APPEND descriptor and fsync()ed. So
 * the anchor is never behind the file: a file with records past the
 * anchor was written by someone else; a file one record short of the
 * anchor is a crash between the two writes (or a removed last line), and
 * the anchor has the record to put back.
 *
 * Opening (and any append that finds the file changed under it) walks the
 * whole chain: prev links, seq, the scheme of each record, the MACs of the
 * keys held, and the anchor. A torn last line is cut and kept (base64) in
 * an "audit_repaired" record; anything else that does not hold moves the
 * log and its anchor aside and starts a new chain with "audit_chain_broken".
 *
 * MACs use keys derived from the configured secret: one for records, one
 * for the anchor (so neither can pass for the other) and one for the key
 * id that records name. A record's MAC covers its line with the mac member
 * removed (the text before ,"mac":" plus the closing brace).
 */
#include "audit.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base.h"
#include "self_heal/common.h"

#define AUDIT_LINE_MAX (1024 * 1024)
#define AUDIT_HEX_LEN 64
#define AUDIT_ID_LEN 16
#define AUDIT_KEY_MAX 4096
#define AUDIT_ACTION_MAX 64
#define AUDIT_EVENTS_MAX 100
#define AUDIT_WITNESS_MAX 1000
#define AUDIT_ANCHOR_MAX (2 * AUDIT_LINE_MAX + 4096)
#define AUDIT_TORN_KEEP (512 * 1024)
#define AUDIT_READ_BLOCK (1024 * 1024)
#define AUDIT_REASON_MAX 320

#define SCHEME_SHA256 "sha256"
#define SCHEME_HMAC "hmac-sha256"

static const char zero_hash[AUDIT_HEX_LEN + 1] =
    "0000000000000000000000000000000000000000000000000000000000000000";

/* A sealed text ends with ,"mac":"<64 hex>"} */
static const char mac_member[] = ",\"mac\":\"";
#define MAC_MEMBER_LEN (sizeof(mac_member) - 1)
#define MAC_TAIL_LEN (MAC_MEMBER_LEN + AUDIT_HEX_LEN + 2)

/* ------------------------------------------------------------ helpers */

static int read_exact(int fd, void *buf, size_t len, off_t at)
{
    char *p = buf;
    while (len > 0) {
        ssize_t n = pread(fd, p, len, at);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
        at += n;
    }
    return 0;
}

static int write_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int lock_file(int fd, short type)
{
    struct flock fl;
    memset(&fl, 0, sizeof(fl));
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    for (;;) {
        if (fcntl(fd, F_SETLKW, &fl) == 0)
            return 0;
        if (errno != EINTR)
            return -1;
    }
}

/* Now in UTC: RFC 3339 for records, or compact for file names. */
static void format_time(char *buf, size_t len, int compact)
{
    time_t now = (time_t)port_now();
    struct tm tm;
    size_t n = 0;
    if (gmtime_r(&now, &tm) != NULL)
        n = compact ? strftime(buf, len, "%Y%m%dT%H%M%SZ", &tm)
                    : strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (n == 0)
        snprintf(buf, len, "%s", compact ? "19700101T000000Z" : "1970-01-01T00:00:00Z");
}

static int is_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

static int hex_string(json_t *v, size_t len)
{
    return json_is_string(v) && json_string_length(v) == len && is_hex(json_string_value(v), len);
}

/* The anchor's path for a log path: ".jsonl" becomes ".anchor", any other
 * name gets ".anchor" appended. */
static int anchor_path_of(char *out, size_t outlen, const char *path)
{
    size_t n = strlen(path);
    const char *ext = ".jsonl";
    size_t el = strlen(ext);
    int w = n > el && strcmp(path + n - el, ext) == 0
                ? snprintf(out, outlen, "%.*s.anchor", (int)(n - el), path)
                : snprintf(out, outlen, "%s.anchor", path);
    return w < 0 || (size_t)w >= outlen ? -1 : 0;
}

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash != NULL ? slash + 1 : path;
}

/* ------------------------------------------------------------ keys */

typedef struct akey {
    unsigned char rec[32]; /* MACs records */
    unsigned char anc[32]; /* MACs the anchor */
    char id[AUDIT_ID_LEN + 1];
} akey;

typedef struct keyring {
    akey k[2]; /* k[0] MACs new records when signing */
    size_t n;
    int signing;
} keyring;

static int derive(unsigned char out[32], const void *key, size_t len, const char *label)
{
    unsigned int n = 0;
    return HMAC(EVP_sha256(), key, (int)len, (const unsigned char *)label, strlen(label), out,
                &n) != NULL &&
                   n == 32
               ? 0
               : -1;
}

static int akey_init(akey *k, const char *secret, size_t len)
{
    unsigned char id[32];
    int rc = len >= AUDIT_KEY_MIN && len <= AUDIT_KEY_MAX &&
                     derive(k->rec, secret, len, "self-heal audit record") == 0 &&
                     derive(k->anc, secret, len, "self-heal audit anchor") == 0 &&
                     derive(id, secret, len, "self-heal audit key id") == 0
                 ? 0
                 : -1;
    if (rc == 0) {
        char hex[65];
        sh_hex_encode(hex, id, sizeof(id));
        memcpy(k->id, hex, AUDIT_ID_LEN);
        k->id[AUDIT_ID_LEN] = '\0';
    }
    OPENSSL_cleanse(id, sizeof(id));
    return rc;
}

static int keyring_init(keyring *r, const audit_keys *keys, char *err, size_t errlen)
{
    memset(r, 0, sizeof(*r));
    if (keys == NULL)
        return 0;
    if (keys->key != NULL) {
        if (akey_init(&r->k[0], keys->key, keys->key_len) != 0) {
            sh_errf(err, errlen, "audit key: at least %d and at most %d bytes", AUDIT_KEY_MIN,
                    AUDIT_KEY_MAX);
            return -1;
        }
        r->n = 1;
        r->signing = 1;
    }
    if (keys->previous != NULL) {
        if (akey_init(&r->k[r->n], keys->previous, keys->previous_len) != 0) {
            OPENSSL_cleanse(r, sizeof(*r));
            sh_errf(err, errlen, "previous audit key: at least %d and at most %d bytes",
                    AUDIT_KEY_MIN, AUDIT_KEY_MAX);
            return -1;
        }
        if (r->n == 0 || strcmp(r->k[0].id, r->k[1].id) != 0)
            r->n++;
    }
    return 0;
}

static const akey *keyring_find(const keyring *r, const char *id)
{
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->k[i].id, id) == 0)
            return &r->k[i];
    return NULL;
}

static int mac_hex(const unsigned char key[32], const void *data, size_t len,
                   char out[AUDIT_HEX_LEN + 1])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (HMAC(EVP_sha256(), key, 32, data, len, md, &n) == NULL || n != 32)
        return -1;
    sh_hex_encode(out, md, n);
    return 0;
}

/* The compact text of obj; with a key its closing brace becomes
 * ,"mac":"<HMAC of the text as dumped>"}. malloc'd, NULL on failure. */
static char *seal(json_t *obj, const unsigned char *key, size_t *len_out)
{
    char *text = json_dumps(obj, JSON_COMPACT);
    if (text == NULL)
        return NULL;
    size_t len = strlen(text);
    if (key != NULL) {
        char mac[AUDIT_HEX_LEN + 1];
        char *grown = mac_hex(key, text, len, mac) == 0 ? realloc(text, len + MAC_TAIL_LEN) : NULL;
        if (grown == NULL) {
            free(text);
            return NULL;
        }
        text = grown;
        snprintf(text + len - 1, MAC_TAIL_LEN + 2, "%s%s\"}", mac_member, mac);
        len = len - 1 + MAC_TAIL_LEN;
    }
    *len_out = len;
    return text;
}

/* Whether sealed text (mutable; restored) carries a MAC that verifies
 * under key: 1 yes, 0 no, -1 no mac member at its end. */
static int sealed_ok(char *text, size_t len, const unsigned char *key)
{
    if (len < MAC_TAIL_LEN + 2 ||
        memcmp(text + len - MAC_TAIL_LEN, mac_member, MAC_MEMBER_LEN) != 0 ||
        text[len - 2] != '"' || text[len - 1] != '}')
        return -1;
    size_t body = len - MAC_TAIL_LEN;
    char saved = text[body];
    char mac[AUDIT_HEX_LEN + 1];
    text[body] = '}';
    int rc = mac_hex(key, text, body + 1, mac);
    text[body] = saved;
    if (rc != 0)
        return 0;
    return CRYPTO_memcmp(mac, text + len - AUDIT_HEX_LEN - 2, AUDIT_HEX_LEN) == 0;
}

int audit_keys_from_config(json_t *config, audit_keys *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    json_t *audit = json_object_get(config, "audit");
    if (audit == NULL || json_is_null(audit))
        return 0;
    if (!json_is_object(audit)) {
        sh_errf(err, errlen, "audit must be an object");
        return -1;
    }
    const char *names[2] = {"key_env", "previous_key_env"};
    for (int i = 0; i < 2; i++) {
        json_t *v = json_object_get(audit, names[i]);
        if (v == NULL || json_is_null(v))
            continue;
        const char *name = json_string_value(v);
        int ok = name != NULL && name[0] != '\0' && json_string_length(v) <= 128 &&
                 !(name[0] >= '0' && name[0] <= '9');
        for (const char *p = name; ok && *p; p++)
            ok = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
                 *p == '_';
        if (!ok) {
            sh_errf(err, errlen, "audit.%s must name an environment variable", names[i]);
            return -1;
        }
        const char *secret = port_secret(name);
        if (i == 0 && (secret == NULL || strlen(secret) < AUDIT_KEY_MIN)) {
            sh_errf(err, errlen,
                    "audit.key_env names %s, which is %s: the audit key must be at least %d "
                    "bytes",
                    name, secret == NULL ? "unset or empty" : "too short", AUDIT_KEY_MIN);
            return -1;
        }
        if (secret == NULL)
            continue; /* no previous key this time */
        if (i == 0) {
            out->key = secret;
            out->key_len = strlen(secret);
        } else {
            out->previous = secret;
            out->previous_len = strlen(secret);
        }
    }
    return 0;
}

/* ------------------------------------------------------------ anchor */

typedef struct anchor {
    int present;     /* the file exists */
    char error[200]; /* present but unusable: why */
    json_t *json;
    long long seq;
    char head[AUDIT_HEX_LEN + 1];
    const char *line; /* into json */
    size_t line_len;
    int keyed;
    char key_id[AUDIT_ID_LEN + 1];
    int mac; /* 1 verified, 0 not checked (key not held), -1 does not verify */
} anchor;

static void anchor_free(anchor *a)
{
    json_decref(a->json);
    memset(a, 0, sizeof(*a));
}

static void anchor_parse(anchor *a, char *text, size_t len, const keyring *keys)
{
    json_t *j = json_loadb(text, len, JSON_REJECT_DUPLICATES, NULL);
    json_t *seq = json_object_get(j, "seq");
    json_t *head = json_object_get(j, "head");
    json_t *line = json_object_get(j, "line");
    json_t *chain = json_object_get(j, "chain");
    a->json = j;
    if (!json_is_integer(seq) || json_integer_value(seq) < 0 ||
        !json_equal(seq, json_object_get(j, "records")) || !hex_string(head, AUDIT_HEX_LEN) ||
        !json_is_string(line) || !json_is_string(chain)) {
        snprintf(a->error, sizeof(a->error), "the anchor is not a valid anchor object");
        return;
    }
    a->seq = (long long)json_integer_value(seq);
    memcpy(a->head, json_string_value(head), sizeof(a->head));
    a->line = json_string_value(line);
    a->line_len = json_string_length(line);
    if ((a->seq == 0) != (a->line_len == 0) || (a->seq == 0 && strcmp(a->head, zero_hash) != 0)) {
        snprintf(a->error, sizeof(a->error), "the anchor's record does not fit its seq");
        return;
    }
    if (strcmp(json_string_value(chain), SCHEME_HMAC) == 0) {
        json_t *id = json_object_get(j, "key_id");
        if (!hex_string(id, AUDIT_ID_LEN) ||
            !hex_string(json_object_get(j, "mac"), AUDIT_HEX_LEN)) {
            snprintf(a->error, sizeof(a->error), "the keyed anchor lacks its key_id or mac");
            return;
        }
        a->keyed = 1;
        memcpy(a->key_id, json_string_value(id), sizeof(a->key_id));
        const akey *k = keyring_find(keys, a->key_id);
        if (k != NULL)
            a->mac = sealed_ok(text, len, k->anc) == 1 ? 1 : -1;
    } else if (strcmp(json_string_value(chain), SCHEME_SHA256) != 0) {
        snprintf(a->error, sizeof(a->error), "the anchor names an unknown chain scheme");
    }
}

static void anchor_load(anchor *a, const char *path, const keyring *keys)
{
    memset(a, 0, sizeof(*a));
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        if (errno != ENOENT) {
            a->present = 1;
            snprintf(a->error, sizeof(a->error), "the anchor cannot be read: %s", strerror(errno));
        }
        return;
    }
    a->present = 1;
    struct stat sb;
    char *text = NULL;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size > AUDIT_ANCHOR_MAX) {
        snprintf(a->error, sizeof(a->error), "the anchor is not a regular file of at most %d bytes",
                 AUDIT_ANCHOR_MAX);
    } else if ((text = malloc((size_t)sb.st_size + 1)) == NULL ||
               read_exact(fd, text, (size_t)sb.st_size, 0) != 0) {
        snprintf(a->error, sizeof(a->error), "the anchor cannot be read");
    } else {
        size_t len = (size_t)sb.st_size;
        if (len > 0 && text[len - 1] == '\n')
            len--; /* written with a newline */
        anchor_parse(a, text, len, keys);
    }
    free(text);
    close(fd);
}

/* ------------------------------------------------------------ scanning */

/* A validating scanner for record lines (RFC 8259, UTF-8 checked, nesting
 * bounded) that keeps only the top-level members the walk needs: building
 * jansson objects costs ten times as much as hashing the line. */

#define JS_DEPTH 512

typedef struct span {
    const char *p; /* a string's contents (between the quotes), else the token */
    size_t n;
    char type;   /* 0 absent, 's' string, 'i' integer, 'r' other number, 'o', 'a', 't', 'f', 'z' */
    int escaped; /* a string with backslash escapes */
} span;

static const char *js_ws(const char *p, const char *e)
{
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static const char *js_string(const char *p, const char *e, span *s)
{
    const char *start = ++p;
    int esc = 0;
    while (p < e) {
        unsigned char c = (unsigned char)*p;
        if (c == '"') {
            if (s != NULL)
                *s = (span){start, (size_t)(p - start), 's', esc};
            return p + 1;
        }
        if (c < 0x20)
            return NULL;
        if (c == '\\') {
            esc = 1;
            if (++p >= e)
                return NULL;
            if (*p == 'u') {
                if (e - p < 5)
                    return NULL;
                for (int i = 1; i <= 4; i++)
                    if (!is_digit(p[i]) && !((p[i] | 0x20) >= 'a' && (p[i] | 0x20) <= 'f'))
                        return NULL;
                p += 5;
            } else if (strchr("\"\\/bfnrt", *p) != NULL && *p != '\0') {
                p++;
            } else {
                return NULL;
            }
            continue;
        }
        size_t k = c < 0x80 ? 1 : sh_utf8_seq_len((const unsigned char *)p, (size_t)(e - p));
        if (k == 0)
            return NULL;
        p += k;
    }
    return NULL;
}

static const char *js_number(const char *p, const char *e, span *s)
{
    const char *start = p;
    int integer = 1;
    if (p < e && *p == '-')
        p++;
    if (p < e && *p == '0')
        p++;
    else if (p < e && *p >= '1' && *p <= '9')
        while (p < e && is_digit(*p))
            p++;
    else
        return NULL;
    if (p < e && *p == '.') {
        integer = 0;
        if (++p >= e || !is_digit(*p))
            return NULL;
        while (p < e && is_digit(*p))
            p++;
    }
    if (p < e && (*p == 'e' || *p == 'E')) {
        integer = 0;
        if (++p < e && (*p == '+' || *p == '-'))
            p++;
        if (p >= e || !is_digit(*p))
            return NULL;
        while (p < e && is_digit(*p))
            p++;
    }
    if (s != NULL)
        *s = (span){start, (size_t)(p - start), integer ? 'i' : 'r', 0};
    return p;
}

static const char *js_value(const char *p, const char *e, int depth, span *s);

/* An object or array at p; each member's name and value go to `member`
 * (for the top level) when given. */
static const char *js_container(const char *p, const char *e, int depth,
                                void (*member)(void *, const span *, const span *), void *arg,
                                span *s)
{
    if (depth >= JS_DEPTH)
        return NULL;
    const char *start = p;
    char close = *p == '{' ? '}' : ']';
    p = js_ws(p + 1, e);
    if (p < e && *p == close)
        goto done;
    for (;;) {
        span key = {0}, val = {0};
        if (close == '}') {
            if (p >= e || *p != '"' || (p = js_string(p, e, &key)) == NULL)
                return NULL;
            p = js_ws(p, e);
            if (p >= e || *p != ':')
                return NULL;
            p = js_ws(p + 1, e);
        }
        if ((p = js_value(p, e, depth + 1, &val)) == NULL)
            return NULL;
        if (member != NULL)
            member(arg, &key, &val);
        p = js_ws(p, e);
        if (p < e && *p == ',') {
            p = js_ws(p + 1, e);
            continue;
        }
        if (p < e && *p == close)
            break;
        return NULL;
    }
done:
    if (s != NULL)
        *s = (span){start, (size_t)(p + 1 - start), close == '}' ? 'o' : 'a', 0};
    return p + 1;
}

static const char *js_literal(const char *p, const char *e, const char *word, char type, span *s)
{
    size_t n = strlen(word);
    if ((size_t)(e - p) < n || memcmp(p, word, n) != 0)
        return NULL;
    if (s != NULL)
        *s = (span){p, n, type, 0};
    return p + n;
}

static const char *js_value(const char *p, const char *e, int depth, span *s)
{
    if (p >= e)
        return NULL;
    switch (*p) {
    case '"':
        return js_string(p, e, s);
    case '{':
    case '[':
        return js_container(p, e, depth, NULL, NULL, s);
    case 't':
        return js_literal(p, e, "true", 't', s);
    case 'f':
        return js_literal(p, e, "false", 'f', s);
    case 'n':
        return js_literal(p, e, "null", 'z', s);
    default:
        return js_number(p, e, s);
    }
}

/* The top-level members of a record the walk reads. */
typedef struct rec_scan {
    span seq, at, action, prev, chain, key_id, mac, from_key;
    int dup;     /* one of them twice */
    int escaped; /* a member name with escapes */
} rec_scan;

static void rec_member(void *arg, const span *key, const span *val)
{
    rec_scan *r = arg;
    static const char *const names[] = {"seq",   "at",     "action", "prev",
                                        "chain", "key_id", "mac",    "from_key"};
    span *slots[] = {&r->seq,   &r->at,     &r->action, &r->prev,
                     &r->chain, &r->key_id, &r->mac,    &r->from_key};
    if (key->escaped)
        r->escaped = 1;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (key->n == strlen(names[i]) && memcmp(key->p, names[i], key->n) == 0) {
            if (slots[i]->type != 0)
                r->dup = 1;
            *slots[i] = *val;
            return;
        }
    }
}

/* 0 when line is one JSON object (its members in r), -1 when not. */
static int scan_record(const char *line, size_t len, rec_scan *r)
{
    memset(r, 0, sizeof(*r));
    const char *e = line + len;
    const char *p = js_ws(line, e);
    if (p >= e || *p != '{')
        return -1;
    p = js_container(p, e, 0, rec_member, r, NULL);
    return p != NULL && js_ws(p, e) == e ? 0 : -1;
}

static int span_is(const span *s, const char *text)
{
    return s->type == 's' && !s->escaped && s->n == strlen(text) && memcmp(s->p, text, s->n) == 0;
}

static int span_hex(const span *s, size_t len)
{
    return s->type == 's' && s->n == len && is_hex(s->p, len);
}

/* ------------------------------------------------------------ the walk */

typedef struct witness {
    long long seq;
    char head[AUDIT_HEX_LEN + 1];
    size_t len;
} witness;

/* What a pass over the log found: where the chain stands after each line,
 * what the keys prove, and the first thing that does not hold. MACs are
 * checked lazily: the last record of a held key vouches for everything
 * before it (its MAC covers its prev), so only its MAC is checked, and
 * all of them only to find the first bad one when it fails. */
typedef struct walk {
    const keyring *keys;
    EVP_MD *sha256;
    EVP_MD_CTX *md;
    int strict;           /* check every MAC as it comes */
    long long anchor_seq; /* -1: no anchor */
    const witness *wit;
    size_t nwit, wi;
    json_t *events; /* the log's own records (audit_*), at most AUDIT_EVENTS_MAX */
    long long events_total;

    long long seq;
    char head[AUDIT_HEX_LEN + 1];
    off_t end;      /* offset after the last complete line */
    off_t last_off; /* where the last complete line starts */
    size_t last_len;
    int era;                       /* 0 no scheme yet (legacy), 1 sha256, 2 hmac-sha256 */
    char key_id[AUDIT_ID_LEN + 1]; /* key of the last keyed record */
    long long held_seq;            /* last record of a held key (its MAC vouches for the rest) */
    off_t held_off;
    size_t held_len;
    const akey *held_key;
    long long authenticated; /* held_seq once its MAC verified */
    long long unauth_from;   /* first keyed record after held_seq of a key not held */
    char unauth_key[AUDIT_ID_LEN + 1];
    char head_at_anchor[AUDIT_HEX_LEN + 1];

    long long broken_at; /* 0 while the chain holds */
    char reason[AUDIT_REASON_MAX];
    off_t torn_len; /* bytes after the last newline */
} walk;

static int walk_init(walk *w, const keyring *keys, long long anchor_seq)
{
    memset(w, 0, sizeof(*w));
    w->keys = keys;
    w->anchor_seq = anchor_seq;
    memcpy(w->head, zero_hash, sizeof(w->head));
    memcpy(w->head_at_anchor, zero_hash, sizeof(w->head_at_anchor));
    w->events = json_array();
    w->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    w->md = EVP_MD_CTX_new();
    return w->events != NULL && w->sha256 != NULL && w->md != NULL ? 0 : -1;
}

static void walk_free(walk *w)
{
    json_decref(w->events);
    EVP_MD_CTX_free(w->md);
    EVP_MD_free(w->sha256);
    w->events = NULL;
    w->md = NULL;
    w->sha256 = NULL;
}

static void walk_fail(walk *w, long long at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void walk_fail(walk *w, long long at, const char *fmt, ...)
{
    if (w->broken_at != 0)
        return;
    w->broken_at = at;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->reason, sizeof(w->reason), fmt, ap);
    va_end(ap);
}

static int walk_hash(walk *w, const char *line, size_t len, char out[AUDIT_HEX_LEN + 1])
{
    unsigned char md[32];
    unsigned int n = 0;
    if (EVP_DigestInit_ex2(w->md, w->sha256, NULL) != 1 ||
        EVP_DigestUpdate(w->md, line, len) != 1 || EVP_DigestFinal_ex(w->md, md, &n) != 1 ||
        n != 32)
        return -1;
    sh_hex_encode(out, md, n);
    return 0;
}

static void mac_failed(walk *w, long long n, const char *id)
{
    walk_fail(w, n,
              "the MAC does not verify with key %s: the record was forged or edited without the "
              "key",
              id);
}

/* A keyed record: its key, the key change rule and (strict) its MAC. */
static void walk_keyed(walk *w, const rec_scan *r, char *line, size_t len, off_t off, long long n)
{
    if (!span_hex(&r->key_id, AUDIT_ID_LEN) || !span_hex(&r->mac, AUDIT_HEX_LEN)) {
        walk_fail(w, n, "a keyed record without a key_id and mac");
        return;
    }
    if (r->mac.p != line + len - AUDIT_HEX_LEN - 2 || len < MAC_TAIL_LEN + 2 ||
        memcmp(line + len - MAC_TAIL_LEN, mac_member, MAC_MEMBER_LEN) != 0) {
        walk_fail(w, n, "the mac is not the record's last member");
        return;
    }
    char kid[AUDIT_ID_LEN + 1];
    memcpy(kid, r->key_id.p, AUDIT_ID_LEN);
    kid[AUDIT_ID_LEN] = '\0';
    int change = span_is(&r->action, "audit_key_changed");
    if (w->era == 2 && strcmp(kid, w->key_id) != 0 &&
        !(change && span_is(&r->from_key, w->key_id))) {
        walk_fail(w, n, "the key changes from %s to %s without an audit_key_changed record",
                  w->key_id, kid);
        return;
    }
    if (w->era < 2 && w->seq > 0 && !(change && r->from_key.type == 'z')) {
        walk_fail(w, n, "the first keyed record after unkeyed ones is not audit_key_changed");
        return;
    }
    const akey *k = keyring_find(w->keys, kid);
    if (k != NULL) {
        if (w->strict && sealed_ok(line, len, k->rec) != 1) {
            mac_failed(w, n, kid);
            return;
        }
        w->held_seq = n;
        w->held_off = off;
        w->held_len = len;
        w->held_key = k;
        w->unauth_from = 0;
    } else if (w->unauth_from == 0) {
        w->unauth_from = n;
        memcpy(w->unauth_key, kid, sizeof(w->unauth_key));
    }
    w->era = 2;
    memcpy(w->key_id, kid, sizeof(w->key_id));
}

/* One of the log's own records, kept (without its chain members and the
 * base64 of torn bytes) for the report. */
static void walk_event(walk *w, const char *line, size_t len)
{
    w->events_total++;
    if (w->events == NULL || json_array_size(w->events) >= AUDIT_EVENTS_MAX)
        return;
    json_t *e = json_loadb(line, len, 0, NULL);
    const char *drop[] = {"prev", "chain", "key_id", "mac", "dropped_base64"};
    for (size_t i = 0; e != NULL && i < sizeof(drop) / sizeof(drop[0]); i++)
        json_object_del(e, drop[i]);
    if (e != NULL)
        json_array_append_new(w->events, e);
}

/* Checks one complete line (without newline; mutable, restored) found at
 * offset off (-1: not in the file) as the next record and advances. */
static void walk_line(walk *w, char *line, size_t len, off_t off)
{
    long long n = w->seq + 1;
    rec_scan r;
    char num[24];
    snprintf(num, sizeof(num), "%lld", n);
    if (len == 0) {
        walk_fail(w, n, "empty line");
    } else if (scan_record(line, len, &r) != 0) {
        walk_fail(w, n, "not a JSON object");
    } else if (r.dup || r.escaped) {
        walk_fail(w, n, "a record member twice, or a member name with escapes");
    } else if (r.prev.type != 's' || r.prev.escaped || r.prev.n != AUDIT_HEX_LEN ||
               memcmp(r.prev.p, w->head, AUDIT_HEX_LEN) != 0) {
        if (n == 1)
            walk_fail(w, n, "prev is not the 64 zeros of the first record");
        else
            walk_fail(w, n, "prev does not match the SHA-256 of line %lld", n - 1);
    } else if (r.seq.type != 'i' || r.seq.n != strlen(num) || memcmp(r.seq.p, num, r.seq.n) != 0) {
        walk_fail(w, n, "seq is not %lld", n);
    } else if (r.action.type != 's' || r.at.type != 's') {
        walk_fail(w, n, "missing action or at");
    } else if (r.chain.type == 0) {
        if (w->era > 0)
            walk_fail(w, n, "a record without a chain scheme after records with one");
    } else if (span_is(&r.chain, SCHEME_SHA256)) {
        if (w->era == 2)
            walk_fail(w, n, "an unkeyed record after keyed ones (a downgrade)");
        else
            w->era = 1;
    } else if (span_is(&r.chain, SCHEME_HMAC)) {
        walk_keyed(w, &r, line, len, off, n);
    } else {
        walk_fail(w, n, "unknown chain scheme");
    }
    if (w->broken_at != 0)
        return;
    if (r.action.n >= 6 && memcmp(r.action.p, "audit_", 6) == 0)
        walk_event(w, line, len);
    if (walk_hash(w, line, len, w->head) != 0) {
        walk_fail(w, n, "cannot hash the record");
        return;
    }
    w->seq = n;
    if (n == w->anchor_seq)
        memcpy(w->head_at_anchor, w->head, sizeof(w->head));
    for (; w->wi < w->nwit && w->wit[w->wi].seq <= n; w->wi++) {
        const witness *x = &w->wit[w->wi];
        if (x->seq == n && strncmp(w->head, x->head, x->len) != 0) {
            walk_fail(w, n,
                      "record %lld is not the one whose head was published (head %.16s...): the "
                      "log was rewritten",
                      n, x->head);
            return;
        }
    }
}

/* Reads the file from the start and walks every complete line; a last
 * line without newline is counted in torn_len. -1 on a read error. */
static int walk_pass(walk *w, int fd, char *err, size_t errlen)
{
    size_t cap = AUDIT_LINE_MAX + 1 + AUDIT_READ_BLOCK;
    char *buf = malloc(cap);
    if (buf == NULL) {
        sh_errf(err, errlen, "audit log: out of memory");
        return -1;
    }
    size_t have = 0;
    off_t pos = 0; /* file offset of buf[0] */
    while (w->broken_at == 0) {
        ssize_t got = pread(fd, buf + have, cap - have, pos + (off_t)have);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            sh_errf(err, errlen, "audit log read: %s", strerror(errno));
            free(buf);
            return -1;
        }
        have += (size_t)got;
        size_t start = 0;
        char *nl;
        while (w->broken_at == 0 && (nl = memchr(buf + start, '\n', have - start)) != NULL) {
            size_t len = (size_t)(nl - (buf + start));
            if (len > AUDIT_LINE_MAX) {
                walk_fail(w, w->seq + 1, "line too long");
                break;
            }
            walk_line(w, buf + start, len, pos + (off_t)start);
            if (w->broken_at == 0) {
                w->last_off = pos + (off_t)start;
                w->last_len = len;
                w->end = pos + (off_t)(start + len + 1);
            }
            start += len + 1;
        }
        memmove(buf, buf + start, have - start);
        pos += (off_t)start;
        have -= start;
        if (w->broken_at != 0)
            break;
        if (have > AUDIT_LINE_MAX) {
            walk_fail(w, w->seq + 1, "line too long");
            break;
        }
        if (got == 0) {
            w->torn_len = (off_t)have;
            break;
        }
    }
    free(buf);
    return 0;
}

/* A whole walk: one pass, then the MAC of the last record of a held key;
 * when it fails, a second pass checking every MAC finds the first bad one. */
static int walk_fd(walk *w, int fd, char *err, size_t errlen)
{
    walk first = *w;
    if (walk_pass(w, fd, err, errlen) != 0)
        return -1;
    if (w->held_seq == 0)
        return 0;
    char *line = malloc(w->held_len + 1);
    int ok = line != NULL && read_exact(fd, line, w->held_len, w->held_off) == 0 &&
             sealed_ok(line, w->held_len, w->held_key->rec) == 1;
    free(line);
    if (ok) {
        w->authenticated = w->held_seq;
        return 0;
    }
    /* again from the start, every MAC checked */
    long long held = w->held_seq;
    json_decref(w->events);
    EVP_MD_CTX *md = w->md;
    EVP_MD *sha = w->sha256;
    *w = first;
    w->events = json_array();
    w->md = md;
    w->sha256 = sha;
    w->strict = 1;
    if (walk_pass(w, fd, err, errlen) != 0)
        return -1;
    if (w->broken_at == 0 || w->broken_at > held) {
        w->broken_at = 0;
        mac_failed(w, held, w->held_key != NULL ? w->held_key->id : "?");
    }
    return 0;
}

/* How the walked file stands against its anchor. */
enum { REL_OK, REL_PENDING, REL_BROKEN };

/* Whether the anchor's record is the next record of the walked file (it
 * was written to the anchor, then lost from the file). */
static int anchor_is_next(const walk *w, const anchor *a)
{
    if (a->seq != w->seq + 1)
        return 0;
    walk next = *w;
    next.events = NULL;
    next.wi = next.nwit; /* witnesses are for the file */
    next.broken_at = 0;
    next.strict = 1;
    char *copy = malloc(a->line_len + 1);
    if (copy == NULL)
        return 0;
    memcpy(copy, a->line, a->line_len + 1);
    walk_line(&next, copy, a->line_len, -1);
    free(copy);
    return next.broken_at == 0 && strcmp(next.head, a->head) == 0;
}

static int judge(walk *w, const anchor *a)
{
    long long n = w->seq;
    int held = w->keys->n > 0;
    if (w->broken_at != 0)
        return REL_BROKEN;
    if (held && w->era == 2 && w->unauth_from != 0) {
        walk_fail(w, w->unauth_from,
                  "records %lld..%lld are MAC'd with key %s, which is not held: they are not "
                  "authenticated (a key change needs the old key in audit.previous_key_env)",
                  w->unauth_from, n, w->unauth_key);
        return REL_BROKEN;
    }
    if (!a->present) {
        if (w->era > 0)
            walk_fail(w, n + 1,
                      "no anchor for a log whose records carry a chain scheme: the anchor "
                      "was deleted");
        return w->broken_at != 0 ? REL_BROKEN : REL_OK;
    }
    if (a->error[0] != '\0') {
        walk_fail(w, n + 1, "%s", a->error);
    } else if (a->mac < 0) {
        walk_fail(w, n + 1, "the anchor's MAC does not verify: the anchor was edited");
    } else if (a->keyed && a->mac == 0 && held) {
        walk_fail(w, n + 1, "the anchor is MAC'd with key %s, which is not held", a->key_id);
    } else if (w->era == 2 && !a->keyed) {
        walk_fail(w, n + 1, "the anchor is unkeyed but the log is keyed: a forged anchor");
    } else if (n == a->seq) {
        if (strcmp(w->head_at_anchor, a->head) != 0)
            walk_fail(w, n,
                      "record %lld is not the one the anchor holds: the last record was edited "
                      "or the log replaced",
                      n);
    } else if (n > a->seq) {
        if (strcmp(w->head_at_anchor, a->head) != 0)
            walk_fail(w, a->seq > 0 ? a->seq : 1,
                      "record %lld is not the one the anchor holds: the log was rewritten", a->seq);
        else
            walk_fail(w, a->seq + 1,
                      "records %lld..%lld were appended without the anchor moving: the port did "
                      "not write them",
                      a->seq + 1, n);
    } else if (anchor_is_next(w, a)) {
        walk_fail(w, n + 1,
                  "the file ends at record %lld but the anchor holds record %lld: the last "
                  "record was removed, or the port stopped between writing the anchor and the "
                  "record (opening the log restores it from the anchor)",
                  n, a->seq);
        return REL_PENDING;
    } else {
        walk_fail(w, n + 1,
                  "truncated: the anchor says %lld records, the file has %lld: records "
                  "%lld..%lld were removed",
                  a->seq, n, n + 1, a->seq);
    }
    return w->broken_at != 0 ? REL_BROKEN : REL_OK;
}

static const char *scheme_name(const walk *w)
{
    if (w->seq == 0)
        return "empty";
    return w->era == 2 ? SCHEME_HMAC : w->era == 1 ? SCHEME_SHA256 : "sha256 (legacy records)";
}

/* ------------------------------------------------------------ verify */

static int witness_cmp(const void *a, const void *b)
{
    long long x = ((const witness *)a)->seq, y = ((const witness *)b)->seq;
    return x < y ? -1 : x > y;
}

static int witness_set(witness *w, long long seq, const char *head, size_t len)
{
    if (seq < 1 || len < 16 || len > AUDIT_HEX_LEN)
        return -1;
    w->seq = seq;
    w->len = len;
    for (size_t i = 0; i < len; i++) {
        char c = head[i];
        w->head[i] = c >= 'A' && c <= 'F' ? (char)(c - 'A' + 'a') : c;
    }
    w->head[len] = '\0';
    return is_hex(w->head, len) ? 0 : -1;
}

/* {"seq": n, "head": hex} or "audit: seq N head H" as published. */
static int witness_parse(witness *w, json_t *v)
{
    if (json_is_object(v)) {
        json_t *seq = json_object_get(v, "seq");
        json_t *head = json_object_get(v, "head");
        return json_is_integer(seq) && json_is_string(head)
                   ? witness_set(w, (long long)json_integer_value(seq), json_string_value(head),
                                 json_string_length(head))
                   : -1;
    }
    const char *s = json_string_value(v);
    const char *prefix = "audit: seq ";
    if (s == NULL || strncmp(s, prefix, strlen(prefix)) != 0)
        return -1;
    char *end = NULL;
    errno = 0;
    long long seq = strtoll(s + strlen(prefix), &end, 10);
    if (errno != 0 || end == NULL || strncmp(end, " head ", 6) != 0)
        return -1;
    const char *h = end + 6;
    size_t len = strspn(h, "0123456789abcdefABCDEF");
    return h[len] == '\0' || h[len] == ' ' || h[len] == '\n' ? witness_set(w, seq, h, len) : -1;
}

static int witnesses_load(json_t *arr, witness **out, size_t *n, char *err, size_t errlen)
{
    *out = NULL;
    *n = 0;
    if (arr == NULL || json_is_null(arr))
        return 0;
    if (!json_is_array(arr) || json_array_size(arr) > AUDIT_WITNESS_MAX) {
        sh_errf(err, errlen, "witnesses must be an array of at most %d heads", AUDIT_WITNESS_MAX);
        return -1;
    }
    witness *w = calloc(json_array_size(arr) + 1, sizeof(*w));
    if (w == NULL) {
        sh_errf(err, errlen, "out of memory");
        return -1;
    }
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v)
    {
        if (witness_parse(&w[i], v) != 0) {
            sh_errf(err, errlen,
                    "witness %zu: {\"seq\": n, \"head\": 16..64 hex} or \"audit: seq N head H\"",
                    i + 1);
            free(w);
            return -1;
        }
    }
    qsort(w, json_array_size(arr), sizeof(*w), witness_cmp);
    *out = w;
    *n = json_array_size(arr);
    return 0;
}

static const char *report_warning(const walk *w, const anchor *a)
{
    if (w->era < 2)
        return w->seq == 0
                   ? NULL
                   : "unkeyed chain (plain SHA-256, no audit.key_env): whoever can write the "
                     "state directory can append, edit, remove or replace records and rewrite "
                     "the chain and the anchor to match; only heads published elsewhere "
                     "(notifications, ticket comments, witnesses) reveal that";
    if (w->keys->n == 0)
        return "keyed log checked without its key: the MACs were not checked, so a rewritten "
               "chain would pass; verify with audit.key_env set";
    if (!a->present)
        return "no anchor: the last records can be removed unnoticed";
    return NULL;
}

static json_t *report_of(walk *w, const anchor *a, int torn)
{
    int ok = w->broken_at == 0;
    json_t *r =
        json_pack("{s:b, s:I}", "ok", ok, "records", (json_int_t)(ok ? w->seq : w->broken_at - 1));
    if (r == NULL)
        return NULL;
    if (ok) {
        json_object_set_new(r, "head", json_string(w->head));
    } else {
        json_object_set_new(r, "broken_at", json_integer(w->broken_at));
        json_object_set_new(r, "reason", json_string(w->reason));
        if (torn)
            json_object_set_new(r, "torn_bytes", json_integer((json_int_t)w->torn_len));
    }
    json_object_set_new(r, "chain", json_string(scheme_name(w)));
    json_object_set_new(r, "keyed", json_boolean(w->era == 2));
    if (w->era == 2) {
        json_object_set_new(r, "key_id", json_string(w->key_id));
        json_object_set_new(r, "authenticated", json_integer(w->authenticated));
    }
    json_object_set_new(r, "anchor",
                        a->present && a->error[0] == '\0'
                            ? json_pack("{s:I, s:s, s:b}", "seq", (json_int_t)a->seq, "head",
                                        a->head, "keyed", a->keyed)
                            : json_null());
    json_object_set_new(r, "audit_events",
                        w->events != NULL ? json_incref(w->events) : json_array());
    if (w->events_total > (long long)json_array_size(w->events))
        json_object_set_new(r, "audit_events_total", json_integer(w->events_total));
    if (w->nwit > 0)
        json_object_set_new(r, "witnesses", json_integer((json_int_t)w->nwit));
    const char *warning = report_warning(w, a);
    if (warning != NULL)
        json_object_set_new(r, "warning", json_string(warning));
    return r;
}

json_t *audit_verify(const char *path, const audit_keys *keys, json_t *witnesses, char *err,
                     size_t errlen)
{
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    char apath[AUDIT_PATH_MAX + 16];
    keyring ring;
    witness *wit = NULL;
    size_t nwit = 0;
    if (anchor_path_of(apath, sizeof(apath), path) != 0) {
        sh_errf(err, errlen, "audit log path too long");
        return NULL;
    }
    if (keyring_init(&ring, keys, err, errlen) != 0)
        return NULL;
    if (witnesses_load(witnesses, &wit, &nwit, err, errlen) != 0) {
        OPENSSL_cleanse(&ring, sizeof(ring));
        return NULL;
    }
    anchor a;
    anchor_load(&a, apath, &ring);
    json_t *report = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    /* A missing log beside its anchor is an emptied one. */
    if (fd < 0 && !(errno == ENOENT && a.present)) {
        sh_errf(err, errlen, "audit log %s: %s", path, strerror(errno));
        goto done;
    }
    walk w;
    if (walk_init(&w, &ring, a.present && a.error[0] == '\0' ? a.seq : -1) != 0) {
        walk_free(&w);
        sh_errf(err, errlen, "audit log: out of memory");
        goto done;
    }
    w.wit = wit;
    w.nwit = nwit;
    if (fd >= 0 && walk_fd(&w, fd, err, errlen) != 0) {
        walk_free(&w);
        goto done;
    }
    int torn = w.broken_at == 0 && w.torn_len > 0;
    if (torn)
        walk_fail(&w, w.seq + 1, "incomplete last line (no newline): a torn write%s",
                  a.present && a.seq == w.seq + 1 ? "; the anchor holds the whole record" : "");
    judge(&w, &a);
    if (w.broken_at == 0 && ring.signing && w.era < 2 && w.seq > 0)
        walk_fail(&w, 1,
                  "the log is unkeyed although a key is held: the key was configured after "
                  "these records and the port has not opened the log since, or the log was "
                  "replaced by an unkeyed one");
    if (w.broken_at == 0 && w.wi < w.nwit)
        walk_fail(&w, w.seq + 1,
                  "a head was published for record %lld, past the end of the log: records "
                  "were removed",
                  w.wit[w.wi].seq);
    report = report_of(&w, &a, torn);
    walk_free(&w);
done:
    if (fd >= 0)
        close(fd);
    anchor_free(&a);
    free(wit);
    OPENSSL_cleanse(&ring, sizeof(ring));
    if (report == NULL && err != NULL && errlen > 0 && err[0] == '\0')
        sh_errf(err, errlen, "audit log %s: verification failed", path);
    return report;
}

/* ------------------------------------------------------------ the log */

struct audit_log {
    pthread_mutex_t lock;
    char *path;
    char anchor_path[AUDIT_PATH_MAX + 16];
    char anchor_tmp[AUDIT_PATH_MAX + 32];
    int fd;
    int dirfd;
    keyring keys;
    long long seq;                /* seq of the last record in the file */
    char head[AUDIT_HEX_LEN + 1]; /* SHA-256 of the last line */
    off_t end;                    /* file size after our last look */
    int bulk;                     /* no fsync, anchor at the end (benchmarks) */
    char *last_line;              /* in bulk mode: the last record, for the anchor */
    size_t last_len;
    json_t *found; /* what opening found: repairs, a break (sticky) */
};

static int fsync_unless_bulk(const audit_log *log, int fd)
{
    return log->bulk ? 0 : fsync(fd);
}

/* The anchor for record seq (head, line): a temporary file, fsync, rename
 * over the anchor, fsync of the directory. */
static int write_anchor(audit_log *log, long long seq, const char *head, const char *line,
                        size_t len)
{
    json_t *a =
        json_pack("{s:I, s:I, s:s, s:s%, s:s}", "seq", (json_int_t)seq, "records", (json_int_t)seq,
                  "head", head, "line", line != NULL ? line : "", line != NULL ? len : (size_t)0,
                  "chain", log->keys.signing ? SCHEME_HMAC : SCHEME_SHA256);
    if (a == NULL)
        return -1;
    if (log->keys.signing)
        json_object_set_new(a, "key_id", json_string(log->keys.k[0].id));
    size_t tlen = 0;
    char *text = seal(a, log->keys.signing ? log->keys.k[0].anc : NULL, &tlen);
    json_decref(a);
    if (text == NULL)
        return -1;
    int rc = -1;
    int fd = open(log->anchor_tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd >= 0) {
        text[tlen] = '\n';
        rc = write_all(fd, text, tlen + 1) == 0 && fsync_unless_bulk(log, fd) == 0 ? 0 : -1;
        if (close(fd) != 0)
            rc = -1;
        if (rc == 0 && rename(log->anchor_tmp, log->anchor_path) != 0)
            rc = -1;
        if (rc == 0 && log->dirfd >= 0)
            rc = fsync_unless_bulk(log, log->dirfd);
        if (rc != 0)
            unlink(log->anchor_tmp);
    }
    free(text);
    return rc;
}

static int reserved_key(const char *key)
{
    static const char *const names[] = {"seq", "at", "action", "prev", "chain", "key_id", "mac"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcmp(key, names[i]) == 0)
            return 1;
    return 0;
}

/* The next record's line (sealed when keyed, no newline), malloc'd. */
static char *build_line(audit_log *log, const char *action, json_t *fields, size_t *len)
{
    char at[32];
    format_time(at, sizeof(at), 0);
    json_t *rec =
        json_pack("{s:I, s:s, s:s}", "seq", (json_int_t)(log->seq + 1), "at", at, "action", action);
    if (rec == NULL)
        return NULL;
    const char *key;
    json_t *value;
    json_object_foreach(fields, key, value) json_object_set(rec, key, value);
    json_object_set_new(rec, "prev", json_string(log->head));
    json_object_set_new(rec, "chain", json_string(log->keys.signing ? SCHEME_HMAC : SCHEME_SHA256));
    if (log->keys.signing)
        json_object_set_new(rec, "key_id", json_string(log->keys.k[0].id));
    char *line = seal(rec, log->keys.signing ? log->keys.k[0].rec : NULL, len);
    json_decref(rec);
    if (line != NULL && *len > AUDIT_LINE_MAX) {
        free(line);
        return NULL;
    }
    return line;
}

/* Writes one record: the anchor first, then the line. The caller holds
 * both locks and the state is in step with the file. */
static int append_locked(audit_log *log, const char *action, json_t *fields)
{
    size_t len = 0;
    char *line = build_line(log, action, fields, &len);
    char head[AUDIT_HEX_LEN + 1];
    if (line == NULL || sh_sha256_hex(head, line, len) != 0) {
        free(line);
        return -1;
    }
    if (!log->bulk && write_anchor(log, log->seq + 1, head, line, len) != 0) {
        free(line);
        return -1;
    }
    line[len] = '\n'; /* the NUL becomes the newline: one write of len+1 */
    int rc =
        write_all(log->fd, line, len + 1) == 0 && fsync_unless_bulk(log, log->fd) == 0 ? 0 : -1;
    if (rc == 0) {
        log->seq++;
        memcpy(log->head, head, sizeof(head));
        log->end += (off_t)(len + 1);
        if (log->bulk) {
            free(log->last_line);
            line[len] = '\0';
            log->last_line = line;
            log->last_len = len;
            line = NULL;
        }
    } else {
        log->end = -1; /* re-read (and repair from the anchor) before the next append */
    }
    free(line);
    return rc;
}

/* The torn tail's bytes (at most AUDIT_TORN_KEEP of them in base64) and
 * their SHA-256, for the repair record. */
static int torn_fields(int fd, off_t at, off_t len, json_t *out)
{
    size_t keep = len > AUDIT_TORN_KEEP ? AUDIT_TORN_KEEP : (size_t)len;
    unsigned char *bytes = malloc((size_t)len);
    unsigned char *b64 = malloc(4 * ((keep + 2) / 3) + 1);
    char sha[AUDIT_HEX_LEN + 1];
    int rc = -1;
    if (bytes != NULL && b64 != NULL && read_exact(fd, bytes, (size_t)len, at) == 0 &&
        sh_sha256_hex(sha, bytes, (size_t)len) == 0) {
        int n = EVP_EncodeBlock(b64, bytes, (int)keep);
        json_object_set_new(out, "dropped_bytes", json_integer((json_int_t)len));
        json_object_set_new(out, "dropped_sha256", json_string(sha));
        json_object_set_new(out, "dropped_base64", json_stringn((const char *)b64, (size_t)n));
        if (keep < (size_t)len)
            json_object_set_new(out, "dropped_base64_cut", json_true());
        rc = 0;
    }
    free(bytes);
    free(b64);
    return rc;
}

/* The SHA-256 of the whole file behind fd. */
static int file_sha256(int fd, char out[AUDIT_HEX_LEN + 1], off_t *size)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    char *buf = malloc(AUDIT_READ_BLOCK);
    unsigned char digest[32];
    unsigned int dlen = 0;
    off_t at = 0;
    int rc = md != NULL && buf != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 ? 0 : -1;
    while (rc == 0) {
        ssize_t n = pread(fd, buf, AUDIT_READ_BLOCK, at);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 || (n > 0 && EVP_DigestUpdate(md, buf, (size_t)n) != 1))
            rc = -1;
        if (n <= 0)
            break;
        at += n;
    }
    if (rc == 0 && EVP_DigestFinal_ex(md, digest, &dlen) == 1 && dlen == 32)
        sh_hex_encode(out, digest, dlen);
    else
        rc = -1;
    *size = at;
    EVP_MD_CTX_free(md);
    free(buf);
    return rc;
}

/* Moves the broken log (fd, locked) and its anchor aside as
 * <path>.broken-<time>[-k] and fills the first record of the new chain. */
static int move_aside(audit_log *log, const walk *w, const anchor *a, json_t *rec, char *err,
                      size_t errlen)
{
    char stamp[32], moved[AUDIT_PATH_MAX + 64], moved_anchor[AUDIT_PATH_MAX + 80];
    char sha[AUDIT_HEX_LEN + 1];
    off_t size = 0;
    if (file_sha256(log->fd, sha, &size) != 0) {
        sh_errf(err, errlen, "audit log %s: cannot read it to move it aside", log->path);
        return -1;
    }
    format_time(stamp, sizeof(stamp), 1);
    int reserved = -1;
    for (int k = 1; k < 100 && reserved < 0; k++) {
        int n = k == 1 ? snprintf(moved, sizeof(moved), "%s.broken-%s", log->path, stamp)
                       : snprintf(moved, sizeof(moved), "%s.broken-%s-%d", log->path, stamp, k);
        if (n < 0 || (size_t)n >= sizeof(moved))
            break;
        reserved = open(moved, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (reserved < 0 && errno != EEXIST)
            break;
    }
    if (reserved < 0 || rename(log->path, moved) != 0) {
        sh_errf(err, errlen, "audit log %s is broken and cannot be moved aside: %s", log->path,
                strerror(errno));
        if (reserved >= 0) {
            close(reserved);
            unlink(moved);
        }
        return -1;
    }
    close(reserved);
    if (a->present && anchor_path_of(moved_anchor, sizeof(moved_anchor), moved) == 0)
        rename(log->anchor_path, moved_anchor);
    json_object_set_new(rec, "reason", json_string(w->reason));
    json_object_set_new(rec, "broken_at", json_integer(w->broken_at));
    json_object_set_new(rec, "intact_records", json_integer(w->broken_at - 1));
    json_object_set_new(rec, "previous_log", json_string(base_name(moved)));
    json_object_set_new(rec, "previous_bytes", json_integer((json_int_t)size));
    json_object_set_new(rec, "previous_sha256", json_string(sha));
    json_object_set_new(rec, "previous_anchor",
                        a->present && a->error[0] == '\0'
                            ? json_pack("{s:I, s:s}", "seq", (json_int_t)a->seq, "head", a->head)
                            : json_null());
    fsync(log->dirfd);
    return 0;
}

/* Says a break where operators look: a notification (the BEAM logs it;
 * stderr in shell mode) and the open's status. */
static void record_break(audit_log *log, json_t *rec)
{
    char msg[AUDIT_REASON_MAX + AUDIT_PATH_MAX + 256];
    snprintf(msg, sizeof(msg),
             "audit log %s broken at record %lld: %s; moved to %s, a new chain starts with an "
             "audit_chain_broken record",
             log->path, (long long)json_integer_value(json_object_get(rec, "broken_at")),
             json_string_value(json_object_get(rec, "reason")),
             json_string_value(json_object_get(rec, "previous_log")));
    json_object_set_new(log->found, "error", json_string(msg));
    json_object_set(log->found, "broken_at", json_object_get(rec, "broken_at"));
    json_object_set(log->found, "reason", json_object_get(rec, "reason"));
    json_object_set(log->found, "moved_to", json_object_get(rec, "previous_log"));
    port_notify(NULL, "audit_broken",
                json_pack("{s:s, s:O, s:O, s:O}", "error", msg, "broken_at",
                          json_object_get(rec, "broken_at"), "reason",
                          json_object_get(rec, "reason"), "moved_to",
                          json_object_get(rec, "previous_log")));
}

/* Opens and locks the file at the path (retrying when it is replaced
 * between the open and the lock). */
static int open_locked(audit_log *log, char *err, size_t errlen)
{
    for (int tries = 0; tries < 16; tries++) {
        int fd = open(log->path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0) {
            sh_errf(err, errlen, "audit log %s: %s", log->path, strerror(errno));
            return -1;
        }
        struct stat a, b;
        if (lock_file(fd, F_WRLCK) != 0 || fstat(fd, &a) != 0) {
            sh_errf(err, errlen, "audit log %s: lock: %s", log->path, strerror(errno));
            close(fd);
            return -1;
        }
        if (stat(log->path, &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev) {
            log->fd = fd;
            return 0;
        }
        close(fd); /* moved aside meanwhile: open the new one */
    }
    sh_errf(err, errlen, "audit log %s keeps being replaced", log->path);
    return -1;
}

/* Repairs what a crash leaves (a torn line, a record only in the anchor),
 * records a key change, and brings the anchor up to date. */
static int settle(audit_log *log, walk *w, const anchor *a, int rel, json_t *pending_break)
{
    json_t *rep = json_object();
    int rc = rep != NULL ? 0 : -1;
    if (rc == 0 && w->torn_len > 0) {
        rc = torn_fields(log->fd, w->end, w->torn_len, rep);
        if (rc == 0 && (ftruncate(log->fd, w->end) != 0 || fsync(log->fd) != 0))
            rc = -1;
    }
    if (rc == 0 && rel == REL_PENDING) {
        char *copy = malloc(a->line_len + 1);
        rc = copy != NULL ? 0 : -1;
        if (rc == 0) {
            memcpy(copy, a->line, a->line_len);
            copy[a->line_len] = '\n';
            rc = write_all(log->fd, copy, a->line_len + 1) == 0 && fsync(log->fd) == 0 ? 0 : -1;
        }
        if (rc == 0) {
            w->broken_at = 0;
            walk_line(w, copy, a->line_len, -1);
            w->end += (off_t)(a->line_len + 1);
            json_object_set_new(rep, "restored_seq", json_integer(a->seq));
        }
        free(copy);
    }
    log->seq = w->seq;
    memcpy(log->head, w->head, sizeof(log->head));
    log->end = w->end;
    /* a new key: the first record it MACs says so */
    if (rc == 0 && log->keys.signing && w->seq > 0 &&
        (w->era < 2 || strcmp(w->key_id, log->keys.k[0].id) != 0)) {
        json_t *f = json_pack("{s:s?}", "from_key", w->era == 2 ? w->key_id : NULL);
        rc = f != NULL ? append_locked(log, "audit_key_changed", f) : -1;
        json_decref(f);
        if (rc == 0)
            json_object_set_new(log->found, "key_changed", json_true());
    }
    if (rc == 0 && json_object_size(rep) > 0) {
        json_object_set_new(rep, "reason",
                            json_string(w->torn_len > 0 && rel == REL_PENDING
                                            ? "torn last line (no newline) cut and kept here; "
                                              "the record it was restored from the anchor"
                                        : w->torn_len > 0
                                            ? "torn last line (no newline) removed; its bytes are "
                                              "kept here"
                                            : "last record restored from the anchor (the file "
                                              "ended before it)"));
        json_object_set(log->found, "repaired", json_object_get(rep, "reason"));
        rc = append_locked(log, "audit_repaired", rep);
    }
    json_decref(rep);
    if (rc == 0 && pending_break != NULL)
        rc = append_locked(log, "audit_chain_broken", pending_break);
    /* nothing appended: an anchor for a log that has none yet */
    if (rc == 0 && !a->present && log->seq == w->seq) {
        char *line = w->seq > 0 ? malloc(w->last_len + 1) : NULL;
        rc =
            w->seq > 0 && (line == NULL || read_exact(log->fd, line, w->last_len, w->last_off) != 0)
                ? -1
                : write_anchor(log, w->seq, w->head, line, w->last_len);
        free(line);
    }
    return rc;
}

/* Opens the file at the path, walks it against its anchor, and leaves it
 * locked and in step: repaired, or moved aside and replaced by a new chain
 * when it does not hold. */
static int attach(audit_log *log, char *err, size_t errlen)
{
    json_t *pending_break = NULL;
    for (int round = 0; round < 4; round++) {
        if (open_locked(log, err, errlen) != 0)
            break;
        anchor a;
        anchor_load(&a, log->anchor_path, &log->keys);
        walk w;
        if (walk_init(&w, &log->keys, a.present && a.error[0] == '\0' ? a.seq : -1) != 0) {
            sh_errf(err, errlen, "audit log: out of memory");
            walk_free(&w);
            anchor_free(&a);
            break;
        }
        if (walk_fd(&w, log->fd, err, errlen) != 0) {
            walk_free(&w);
            anchor_free(&a);
            break;
        }
        int rel = judge(&w, &a);
        if (!log->keys.signing && (w.era == 2 || (a.present && a.keyed))) {
            sh_errf(err, errlen,
                    "audit log %s is keyed (key %s) but no audit key is configured "
                    "(audit.key_env): refusing to continue it unkeyed",
                    log->path, w.era == 2 ? w.key_id : a.key_id);
            walk_free(&w);
            anchor_free(&a);
            break;
        }
        if (rel == REL_BROKEN) {
            json_t *rec = json_object();
            int moved = rec != NULL && move_aside(log, &w, &a, rec, err, errlen) == 0;
            walk_free(&w);
            anchor_free(&a);
            if (!moved) {
                json_decref(rec);
                break;
            }
            record_break(log, rec);
            json_decref(pending_break);
            pending_break = rec;
            close(log->fd); /* releases the lock; the new file is opened next round */
            log->fd = -1;
            continue;
        }
        int rc = settle(log, &w, &a, rel, pending_break);
        walk_free(&w);
        anchor_free(&a);
        json_decref(pending_break);
        if (rc != 0) {
            sh_errf(err, errlen, "audit log %s: cannot write: %s", log->path, strerror(errno));
            lock_file(log->fd, F_UNLCK);
            close(log->fd);
            log->fd = -1;
            return -1;
        }
        return 0;
    }
    json_decref(pending_break);
    if (log->fd >= 0) {
        close(log->fd);
        log->fd = -1;
    }
    if (err != NULL && errlen > 0 && err[0] == '\0')
        sh_errf(err, errlen, "audit log %s: cannot open", log->path);
    return -1;
}

/* With both locks wanted: the file locked and in step with log. */
static int lock_current(audit_log *log, char *err, size_t errlen)
{
    struct stat a, b;
    if (log->fd >= 0 && lock_file(log->fd, F_WRLCK) == 0) {
        if (fstat(log->fd, &a) == 0 && stat(log->path, &b) == 0 && a.st_ino == b.st_ino &&
            a.st_dev == b.st_dev && a.st_size == log->end)
            return 0;
        lock_file(log->fd, F_UNLCK);
    }
    if (log->fd >= 0)
        close(log->fd);
    log->fd = -1;
    return attach(log, err, errlen); /* changed under us: walk it again */
}

/* ------------------------------------------------------------ API */

int audit_open(audit_log **out, const char *path, const audit_keys *keys, char *err, size_t errlen)
{
    *out = NULL;
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    audit_log *log = calloc(1, sizeof(*log));
    if (log == NULL) {
        sh_errf(err, errlen, "audit log: out of memory");
        return -1;
    }
    pthread_mutex_init(&log->lock, NULL);
    log->fd = -1;
    log->dirfd = -1;
    log->path = strdup(path);
    log->found = json_object();
    char dir[AUDIT_PATH_MAX];
    const char *slash = strrchr(path, '/');
    int dn = slash == NULL ? snprintf(dir, sizeof(dir), ".")
                           : snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path + 1), path);
    if (log->path == NULL || log->found == NULL || dn < 0 || (size_t)dn >= sizeof(dir) ||
        anchor_path_of(log->anchor_path, sizeof(log->anchor_path), path) != 0 ||
        (size_t)snprintf(log->anchor_tmp, sizeof(log->anchor_tmp), "%s.tmp", log->anchor_path) >=
            sizeof(log->anchor_tmp)) {
        sh_errf(err, errlen, "audit log: path too long");
        goto fail;
    }
    if (keyring_init(&log->keys, keys, err, errlen) != 0)
        goto fail;
    log->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (log->dirfd < 0) {
        sh_errf(err, errlen, "audit log directory %s: %s", dir, strerror(errno));
        goto fail;
    }
    memcpy(log->head, zero_hash, sizeof(log->head));
    if (attach(log, err, errlen) != 0)
        goto fail;
    lock_file(log->fd, F_UNLCK);
    *out = log;
    return 0;
fail:
    audit_close(log);
    return -1;
}

int audit_open_config(audit_log **out, const char *path, json_t *config, char *err, size_t errlen)
{
    audit_keys keys;
    *out = NULL;
    if (audit_keys_from_config(config, &keys, err, errlen) != 0)
        return -1;
    return audit_open(out, path, &keys, err, errlen);
}

void audit_set_bulk(audit_log *log, int on)
{
    pthread_mutex_lock(&log->lock);
    if (log->bulk && !on && log->fd >= 0) {
        log->bulk = 0;
        if (log->seq > 0 && log->last_line != NULL)
            write_anchor(log, log->seq, log->head, log->last_line, log->last_len);
        fsync(log->fd);
    }
    log->bulk = on;
    pthread_mutex_unlock(&log->lock);
}

void audit_close(audit_log *log)
{
    if (log == NULL)
        return;
    if (log->bulk)
        audit_set_bulk(log, 0);
    if (log->fd >= 0)
        close(log->fd);
    if (log->dirfd >= 0)
        close(log->dirfd);
    OPENSSL_cleanse(&log->keys, sizeof(log->keys));
    pthread_mutex_destroy(&log->lock);
    json_decref(log->found);
    free(log->last_line);
    free(log->path);
    free(log);
}

int audit_append(audit_log *log, const char *action, json_t *fields)
{
    if (log == NULL || action == NULL || action[0] == '\0' || strlen(action) > AUDIT_ACTION_MAX ||
        strncmp(action, "audit_", 6) == 0 || (fields != NULL && !json_is_object(fields)))
        return -1;
    const char *key;
    json_t *value;
    json_object_foreach(fields, key, value)
    {
        if (reserved_key(key))
            return -1;
    }
    pthread_mutex_lock(&log->lock);
    int rc = -1;
    if (lock_current(log, NULL, 0) == 0) {
        rc = append_locked(log, action, fields);
        lock_file(log->fd, F_UNLCK);
    }
    pthread_mutex_unlock(&log->lock);
    return rc;
}

json_t *audit_status(audit_log *log)
{
    if (log == NULL)
        return NULL;
    pthread_mutex_lock(&log->lock);
    json_t *s = json_deep_copy(log->found);
    if (s != NULL) {
        json_object_set_new(s, "ok", json_boolean(json_object_get(s, "error") == NULL));
        json_object_set_new(s, "records", json_integer(log->seq));
        json_object_set_new(s, "head", json_string(log->head));
        json_object_set_new(s, "keyed", json_boolean(log->keys.signing));
        if (log->keys.signing)
            json_object_set_new(s, "key_id", json_string(log->keys.k[0].id));
    }
    pthread_mutex_unlock(&log->lock);
    return s;
}

int audit_head_line(audit_log *log, char *buf, size_t len)
{
    if (len > 0)
        buf[0] = '\0';
    if (log == NULL)
        return -1;
    pthread_mutex_lock(&log->lock);
    long long seq = log->seq;
    char head[AUDIT_HEX_LEN + 1];
    memcpy(head, log->head, sizeof(head));
    pthread_mutex_unlock(&log->lock);
    if (seq == 0)
        return -1;
    int n = snprintf(buf, len, "audit: seq %lld head %s", seq, head);
    if (n < 0 || (size_t)n >= len) {
        if (len > 0)
            buf[0] = '\0';
        return -1;
    }
    return 0;
}

void audit_head_append(audit_log *log, sh_buf *b, const char *before, const char *after)
{
    char line[128];
    if (audit_head_line(log, line, sizeof(line)) == 0)
        sh_buf_appendf(b, "%s%s%s", before, line, after);
}

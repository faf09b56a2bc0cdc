/*
 * Scrubbing secrets and personal data out of text (include/self_heal/scrub.h).
 *
 * The built-in rules are hand-written scanners over one left-to-right pass.
 * A rule is only tried where its token can start (the previous byte is not
 * a byte of the same token class), and a failed attempt costs at most the
 * length of the token run it looked at (or a small constant), so the work is
 * linear in the input. A match is replaced by "[REDACTED:kind]"; for
 * key=value pairs, URL userinfo and Authorization headers the key, the user
 * name and the scheme stay and only the secret part is replaced.
 *
 * The configured extra patterns are POSIX extended regular expressions run
 * after the built-in rules over segments of at most SCRUB_SEGMENT_MAX bytes
 * (split at newlines, NULs and, in longer lines, at blanks; a blank-free run
 * longer than SCRUB_RUN_MAX bytes is cut into pieces of that size).
 */
#include "self_heal/scrub.h"

#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SCRUB_MAX_PATTERNS 64
#define SCRUB_MAX_PATTERN_LEN 1024
#define SCRUB_MAX_REPEAT 255
#define SCRUB_SEGMENT_MAX 4096
#define SCRUB_RUN_MAX 256
#define SCRUB_MAX_MATCHES 512

struct sh_scrubber {
    regex_t *res;
    size_t n;
};

/* ---------------------------------------------------------------- classes */

enum char_class {
    CLS_ALNUM,       /* [A-Za-z0-9] */
    CLS_UPPER_ALNUM, /* [A-Z0-9] */
    CLS_ALNUM_US,    /* [A-Za-z0-9_] */
    CLS_B64URL,      /* [A-Za-z0-9_-] */
    CLS_DASHED,      /* [A-Za-z0-9-] */
    CLS_DOTTED,      /* [A-Za-z0-9_.-] */
};

static int is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static int is_alpha(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int is_alnum(unsigned char c)
{
    return is_digit(c) || is_alpha(c);
}

static int is_b64url(unsigned char c)
{
    return is_alnum(c) || c == '_' || c == '-';
}

/* Bytes of a key name: db.password, X-Api-Key, --client_secret. */
static int is_ident(unsigned char c)
{
    return is_alnum(c) || c == '_' || c == '-' || c == '.';
}

/* Bytes of the local part of an e-mail address. */
static int is_local(unsigned char c)
{
    return is_alnum(c) || c == '.' || c == '_' || c == '%' || c == '+' || c == '-';
}

static int is_blank(unsigned char c)
{
    return c == ' ' || c == '\t';
}

static int in_class(unsigned char c, enum char_class cls)
{
    switch (cls) {
    case CLS_ALNUM:
        return is_alnum(c);
    case CLS_UPPER_ALNUM:
        return is_digit(c) || (c >= 'A' && c <= 'Z');
    case CLS_ALNUM_US:
        return is_alnum(c) || c == '_';
    case CLS_B64URL:
        return is_b64url(c);
    case CLS_DASHED:
        return is_alnum(c) || c == '-';
    case CLS_DOTTED:
        return is_ident(c);
    }
    return 0;
}

static unsigned char to_lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c - 'A' + 'a') : c;
}

/* ---------------------------------------------------------------- scanner */

typedef struct scan {
    const unsigned char *t;
    size_t n;
    size_t flushed; /* t[0..flushed) is already in out */
    sh_buf *out;
    size_t redactions;
} scan;

/* Copies t[flushed..from), writes the marker and skips t[from..to). */
static void scan_redact(scan *sc, size_t from, size_t to, const char *kind)
{
    sh_buf_append(sc->out, sc->t + sc->flushed, from - sc->flushed);
    sh_buf_append_str(sc->out, "[REDACTED:");
    sh_buf_append_str(sc->out, kind);
    sh_buf_append_byte(sc->out, ']');
    sc->flushed = to;
    sc->redactions++;
}

static int has_at(const scan *sc, size_t i, const char *lit, size_t len)
{
    return sc->n - i >= len && memcmp(sc->t + i, lit, len) == 0;
}

static int has_at_ci(const scan *sc, size_t i, const char *lit, size_t len)
{
    if (sc->n - i < len)
        return 0;
    for (size_t k = 0; k < len; k++)
        if (to_lower(sc->t[i + k]) != (unsigned char)lit[k])
            return 0;
    return 1;
}

/* End of the run of class cls starting at i. */
static size_t run_end(const scan *sc, size_t i, enum char_class cls)
{
    while (i < sc->n && in_class(sc->t[i], cls))
        i++;
    return i;
}

static size_t skip_blanks(const scan *sc, size_t i)
{
    while (i < sc->n && is_blank(sc->t[i]))
        i++;
    return i;
}

static size_t line_end(const scan *sc, size_t i)
{
    while (i < sc->n && sc->t[i] != '\n' && sc->t[i] != '\r')
        i++;
    return i;
}

/* First occurrence of lit in t[from..n), or n. Linear for literals whose
 * length is a small constant. */
static size_t find_lit(const scan *sc, size_t from, const char *lit, size_t len)
{
    for (size_t i = from; i < sc->n && sc->n - i >= len; i++)
        if (sc->t[i] == (unsigned char)lit[0] && memcmp(sc->t + i, lit, len) == 0)
            return i;
    return sc->n;
}

/* ---------------------------------------------------------------- PEM */

static int pem_label_is_private(const unsigned char *label, size_t len)
{
    static const char key[] = "PRIVATE KEY";
    static const char block[] = "PRIVATE KEY BLOCK";
    size_t kl = sizeof(key) - 1, bl = sizeof(block) - 1;
    if (len >= kl && memcmp(label + len - kl, key, kl) == 0)
        return 1;
    return len >= bl && memcmp(label + len - bl, block, bl) == 0;
}

/* "-----BEGIN ... PRIVATE KEY-----" up to the matching END line, or to the
 * end of the text when the block is cut off. */
static size_t rule_pem(scan *sc, size_t i)
{
    static const char begin[] = "-----BEGIN ";
    static const char dashes[] = "-----";
    static const char end_lit[] = "-----END ";
    if (!has_at(sc, i, begin, sizeof(begin) - 1))
        return 0;
    size_t label = i + sizeof(begin) - 1;
    size_t p = label;
    while (p < sc->n && p - label < 64 && ((sc->t[p] >= 'A' && sc->t[p] <= 'Z') || sc->t[p] == ' '))
        p++;
    if (!has_at(sc, p, dashes, 5) || !pem_label_is_private(sc->t + label, p - label))
        return 0;
    size_t end = find_lit(sc, p + 5, end_lit, sizeof(end_lit) - 1);
    if (end < sc->n) {
        size_t q = end + sizeof(end_lit) - 1;
        while (q < sc->n && q - end < 80 &&
               ((sc->t[q] >= 'A' && sc->t[q] <= 'Z') || sc->t[q] == ' '))
            q++;
        end = has_at(sc, q, dashes, 5) ? q + 5 : q;
    }
    scan_redact(sc, i, end, "private_key");
    return end;
}

/* ---------------------------------------------------------------- URLs */

static int is_authority_end(unsigned char c)
{
    return c < 0x21 || c == 0x7f || c == '/' || c == '"' || c == '\'' || c == '<' || c == '>' ||
           c == '\\' || c == '`';
}

static int is_url_char(unsigned char c)
{
    return c > 0x20 && c != 0x7f && c != '"' && c != '\'' && c != '<' && c != '>' && c != '`' &&
           c != '\\';
}

/* URLs whose path is the credential. */
static const char *const webhook_hosts[] = {
    "hooks.slack.com/services/",
    "discord.com/api/webhooks/",
    "discordapp.com/api/webhooks/",
};

/* scheme://user:pa/ss@host: the authority seemed to end at the '/' at p,
 * but what follows the colon is no port (not all digits), so it is a
 * password holding a raw '/' when an '@' follows in the same URL. Returns
 * that '@', else 0. */
static size_t password_with_slash(const scan *sc, size_t colon, size_t p)
{
    size_t k = colon + 1;
    while (k < p && is_digit(sc->t[k]))
        k++;
    if (k == p)
        return 0; /* host:8080/ */
    for (k = p; k < sc->n && is_url_char(sc->t[k]); k++)
        if (sc->t[k] == '@')
            return k;
    return 0;
}

/* At "://": the password of scheme://user:password@host, or the secret
 * path of a webhook URL. */
static size_t rule_url(scan *sc, size_t i)
{
    if (!has_at(sc, i, "://", 3))
        return 0;
    size_t a = i + 3;
    for (size_t k = 0; k < sizeof(webhook_hosts) / sizeof(webhook_hosts[0]); k++) {
        size_t hl = strlen(webhook_hosts[k]);
        if (!has_at_ci(sc, a, webhook_hosts[k], hl))
            continue;
        size_t e = a + hl;
        while (e < sc->n && is_url_char(sc->t[e]))
            e++;
        if (e == a + hl)
            return 0;
        scan_redact(sc, a + hl, e, "webhook");
        return e;
    }
    size_t p = a, colon = 0, at = 0;
    for (; p < sc->n && !is_authority_end(sc->t[p]); p++) {
        if (sc->t[p] == ':' && colon == 0)
            colon = p;
        else if (sc->t[p] == '@')
            at = p;
    }
    if (at == 0 && colon > a && sc->t[a] != '[' && p < sc->n && sc->t[p] == '/')
        at = password_with_slash(sc, colon, p);
    if (at == 0 || colon == 0 || colon > at || at == colon + 1)
        return 0;
    scan_redact(sc, colon + 1, at, "password");
    return at;
}

/* ---------------------------------------------------------------- prefixed tokens */

typedef struct prefix_rule {
    const char *prefix;
    enum char_class cls; /* class of the body after the prefix */
    unsigned short min;  /* body length bounds; max 0: unbounded */
    unsigned short max;
    const char *kind;
} prefix_rule;

/* Longer prefixes before their own prefixes (sk-ant- before sk-). */
static const prefix_rule prefix_rules[] = {
    {"AKIA", CLS_UPPER_ALNUM, 16, 16, "aws_key"},
    {"ASIA", CLS_UPPER_ALNUM, 16, 16, "aws_key"},
    {"ABIA", CLS_UPPER_ALNUM, 16, 16, "aws_key"},
    {"ACCA", CLS_UPPER_ALNUM, 16, 16, "aws_key"},
    {"github_pat_", CLS_ALNUM_US, 22, 0, "github_token"},
    {"ghp_", CLS_ALNUM, 30, 0, "github_token"},
    {"gho_", CLS_ALNUM, 30, 0, "github_token"},
    {"ghu_", CLS_ALNUM, 30, 0, "github_token"},
    {"ghs_", CLS_ALNUM, 30, 0, "github_token"},
    {"ghr_", CLS_ALNUM, 30, 0, "github_token"},
    {"glpat-", CLS_B64URL, 20, 0, "gitlab_token"},
    {"xoxb-", CLS_DASHED, 10, 0, "slack_token"},
    {"xoxp-", CLS_DASHED, 10, 0, "slack_token"},
    {"xoxa-", CLS_DASHED, 10, 0, "slack_token"},
    {"xoxr-", CLS_DASHED, 10, 0, "slack_token"},
    {"xoxs-", CLS_DASHED, 10, 0, "slack_token"},
    {"xoxe-", CLS_DASHED, 10, 0, "slack_token"},
    {"xapp-", CLS_DASHED, 10, 0, "slack_token"},
    {"sk_live_", CLS_ALNUM, 16, 0, "stripe_key"},
    {"sk_test_", CLS_ALNUM, 16, 0, "stripe_key"},
    {"rk_live_", CLS_ALNUM, 16, 0, "stripe_key"},
    {"rk_test_", CLS_ALNUM, 16, 0, "stripe_key"},
    {"whsec_", CLS_ALNUM, 16, 0, "stripe_key"},
    {"sk-ant-", CLS_B64URL, 20, 0, "anthropic_key"},
    {"sk-", CLS_B64URL, 20, 0, "openai_key"},
    {"AIza", CLS_B64URL, 30, 0, "google_key"},
    {"ya29.", CLS_B64URL, 20, 0, "google_token"},
    {"npm_", CLS_ALNUM, 30, 0, "npm_token"},
    {"hf_", CLS_ALNUM, 30, 0, "hf_token"},
    {"SG.", CLS_DOTTED, 40, 0, "sendgrid_key"},
};

/* Whether a prefix of prefix_rules starts with c (most word starts do
 * not: the table is not walked for them). */
static int is_prefix_start(unsigned char c)
{
    switch (c) {
    case 'A':
    case 'S':
    case 'g':
    case 'h':
    case 'n':
    case 'r':
    case 's':
    case 'w':
    case 'x':
    case 'y':
        return 1;
    default:
        return 0;
    }
}

/* The kind of the prefixed token at i (its end in *end), or NULL. */
static const char *prefixed_match(const scan *sc, size_t i, size_t *end)
{
    if (!is_prefix_start(sc->t[i]))
        return NULL;
    for (size_t k = 0; k < sizeof(prefix_rules) / sizeof(prefix_rules[0]); k++) {
        const prefix_rule *r = &prefix_rules[k];
        if ((unsigned char)r->prefix[0] != sc->t[i])
            continue;
        size_t pl = strlen(r->prefix);
        if (!has_at(sc, i, r->prefix, pl))
            continue;
        size_t p = i + pl, body = 0;
        /* bounded rules look at no more than max + 1 bytes */
        while (p < sc->n && in_class(sc->t[p], r->cls) && (r->max == 0 || body <= r->max)) {
            p++;
            body++;
        }
        if (body < r->min || (r->max != 0 && body > r->max))
            continue;
        if (r->max != 0 && p < sc->n && is_alnum(sc->t[p]))
            continue;
        *end = p;
        return r->kind;
    }
    return NULL;
}

static size_t rule_prefixed(scan *sc, size_t i)
{
    size_t end;
    const char *kind = prefixed_match(sc, i, &end);
    if (kind == NULL)
        return 0;
    scan_redact(sc, i, end, kind);
    return end;
}

/* ---------------------------------------------------------------- JWT */

/* header.payload.signature (and the five parts of a JWE), the header
 * being base64url JSON, so starting "eyJ". */
static size_t jwt_match(const scan *sc, size_t i)
{
    if (!has_at(sc, i, "eyJ", 3))
        return 0;
    size_t p = run_end(sc, i, CLS_B64URL);
    if (p - i < 10 || p >= sc->n || sc->t[p] != '.')
        return 0;
    size_t q = run_end(sc, p + 1, CLS_B64URL);
    if (q - (p + 1) < 4 || q >= sc->n || sc->t[q] != '.')
        return 0;
    size_t end = run_end(sc, q + 1, CLS_B64URL);
    for (int parts = 3; parts < 5 && end < sc->n && sc->t[end] == '.'; parts++) {
        size_t e2 = run_end(sc, end + 1, CLS_B64URL);
        if (e2 == end + 1)
            break;
        end = e2;
    }
    return end;
}

static size_t rule_jwt(scan *sc, size_t i)
{
    size_t end = jwt_match(sc, i);
    if (end != 0)
        scan_redact(sc, i, end, "jwt");
    return end;
}

/* ---------------------------------------------------------------- Bearer / Basic */

static int is_bearer_char(unsigned char c)
{
    return is_b64url(c) || c == '.' || c == '~' || c == '+' || c == '/' || c == '=';
}

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (is_digit(c))
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Whether base64 text decodes to printable ASCII "user:password". */
static int b64_is_userpass(const unsigned char *s, size_t len)
{
    unsigned int acc = 0;
    int bits = 0, colon = 0;
    size_t decoded = 0;
    for (size_t k = 0; k < len && s[k] != '='; k++) {
        int v = b64_value(s[k]);
        if (v < 0)
            return 0;
        acc = (acc << 6) | (unsigned int)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            unsigned char c = (unsigned char)((acc >> bits) & 0xff);
            if (c < 0x20 || c > 0x7e)
                return 0;
            colon |= c == ':';
            decoded++;
        }
    }
    return colon && decoded >= 3;
}

static size_t bearer_token_end(const scan *sc, size_t p)
{
    while (p < sc->n && is_bearer_char(sc->t[p]))
        p++;
    return p;
}

/* "Bearer <token>" and "Basic <base64 user:pass>" anywhere; the scheme
 * word stays. */
static size_t rule_scheme(scan *sc, size_t i)
{
    int basic;
    size_t p;
    if (has_at_ci(sc, i, "bearer", 6)) {
        basic = 0;
        p = i + 6;
    } else if (has_at_ci(sc, i, "basic", 5)) {
        basic = 1;
        p = i + 5;
    } else {
        return 0;
    }
    if (p >= sc->n || !is_blank(sc->t[p]))
        return 0;
    p = skip_blanks(sc, p);
    size_t e = bearer_token_end(sc, p);
    if (e - p < 8)
        return 0;
    if (basic && !b64_is_userpass(sc->t + p, e - p))
        return 0;
    scan_redact(sc, p, e, basic ? "basic_auth" : "bearer");
    return e;
}

/* ---------------------------------------------------------------- Telegram */

/* Bot tokens: 5-12 digits, ':', 35 base64url characters. */
static size_t rule_telegram(scan *sc, size_t i)
{
    size_t p = i;
    while (p < sc->n && is_digit(sc->t[p]) && p - i <= 12)
        p++;
    if (p - i < 5 || p - i > 12 || p >= sc->n || sc->t[p] != ':')
        return 0;
    size_t s = p + 1, e = s;
    while (e < sc->n && is_b64url(sc->t[e]) && e - s <= 35)
        e++;
    if (e - s != 35)
        return 0;
    scan_redact(sc, i, e, "telegram_token");
    return e;
}

/* ---------------------------------------------------------------- cards */

static int luhn_ok(const unsigned char *digits, size_t n)
{
    unsigned int sum = 0;
    for (size_t k = 0; k < n; k++) {
        unsigned int d = digits[n - 1 - k];
        if (k % 2 == 1) {
            d *= 2;
            if (d > 9)
                d -= 9;
        }
        sum += d;
    }
    return sum % 10 == 0;
}

typedef struct card_cand {
    size_t end;
    size_t ndigits;
} card_cand;

/* 13-19 digits starting 2-6 (the major card networks), either contiguous
 * or in groups separated by one space or one dash each (the same
 * separator throughout, a first group of 4, further groups of 3-6), with a
 * valid Luhn check digit. When groups continue past a valid number (a
 * card followed by a year), the longest valid prefix of whole groups wins. */
static size_t rule_card(scan *sc, size_t i)
{
    if (sc->t[i] < '2' || sc->t[i] > '6')
        return 0;
    unsigned char digits[19];
    card_cand cands[8];
    size_t nd = 0, ncand = 0, group = 0, ngroups = 0, p = i;
    unsigned char sep = 0;
    int overflow = 0;
    while (p < sc->n) {
        unsigned char c = sc->t[p];
        if (is_digit(c)) {
            if (nd == 19) {
                overflow = 1;
                break;
            }
            digits[nd++] = (unsigned char)(c - '0');
            group++;
            p++;
            continue;
        }
        if ((c == ' ' || c == '-') && p + 1 < sc->n && is_digit(sc->t[p + 1])) {
            if ((sep != 0 && c != sep) || (ngroups == 0 && group != 4) ||
                (ngroups > 0 && (group < 3 || group > 6)))
                break;
            if (nd >= 13 && ncand < 8)
                cands[ncand++] = (card_cand){p, nd};
            sep = c;
            ngroups++;
            group = 0;
            p++;
            continue;
        }
        break;
    }
    if (!overflow && nd >= 13 && (p >= sc->n || !is_alnum(sc->t[p])) &&
        (ngroups == 0 || (group >= 3 && group <= 6)) && ncand < 8)
        cands[ncand++] = (card_cand){p, nd};
    if (overflow && ngroups == 0)
        return 0;
    for (size_t k = ncand; k > 0; k--) {
        if (luhn_ok(digits, cands[k - 1].ndigits)) {
            scan_redact(sc, i, cands[k - 1].end, "card");
            return cands[k - 1].end;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- key = value */

enum key_kind { KEY_PLAIN, KEY_LINE, KEY_AUTH };

typedef struct key_word {
    const char *suffix; /* lower case, without '_', '-', '.' */
    size_t len;         /* strlen(suffix) */
    enum key_kind kind;
} key_word;

#define KW(word, kind)                                                                             \
    {                                                                                              \
        word, sizeof(word) - 1, kind                                                               \
    }

static const key_word key_words[] = {
    KW("password", KEY_PLAIN),      KW("passwd", KEY_PLAIN),        KW("pwd", KEY_PLAIN),
    KW("passphrase", KEY_PLAIN),    KW("secret", KEY_PLAIN),        KW("token", KEY_PLAIN),
    KW("apikey", KEY_PLAIN),        KW("accesskey", KEY_PLAIN),     KW("privatekey", KEY_PLAIN),
    KW("secretkey", KEY_PLAIN),     KW("secretkeybase", KEY_PLAIN), KW("signingkey", KEY_PLAIN),
    KW("encryptionkey", KEY_PLAIN), KW("masterkey", KEY_PLAIN),     KW("auth", KEY_PLAIN),
    KW("credentials", KEY_PLAIN),   KW("credential", KEY_PLAIN),    KW("session", KEY_PLAIN),
    KW("sessionid", KEY_PLAIN),     KW("sessid", KEY_PLAIN),        KW("sessionkey", KEY_PLAIN),
    KW("signature", KEY_PLAIN),     KW("cookie", KEY_LINE),         KW("authorization", KEY_AUTH),
};

static int is_name_sep(unsigned char c)
{
    return c == '_' || c == '-' || c == '.';
}

/* Whether the name t[i..last) ends with kw, ignoring case and the
 * separators; t[last - 1] is no separator. */
static int name_ends_with(const scan *sc, size_t i, size_t last, const key_word *kw)
{
    size_t p = last, k = kw->len;
    while (k > 0) {
        while (p > i && is_name_sep(sc->t[p - 1]))
            p--;
        if (p == i || to_lower(sc->t[p - 1]) != (unsigned char)kw->suffix[k - 1])
            return 0;
        p--;
        k--;
    }
    return 1;
}

/* The key word the name t[i..e) ends with, ignoring case and the
 * separators '_', '-', '.'; NULL when none. */
static const key_word *key_lookup(const scan *sc, size_t i, size_t e)
{
    size_t last = e;
    while (last > i && is_name_sep(sc->t[last - 1]))
        last--;
    if (last == i)
        return NULL;
    /* the last letter first: most names end in none of the key words' */
    unsigned char c = to_lower(sc->t[last - 1]);
    if (c != 'd' && c != 'e' && c != 'h' && c != 'l' && c != 'n' && c != 's' && c != 't' &&
        c != 'y')
        return NULL;
    for (size_t k = 0; k < sizeof(key_words) / sizeof(key_words[0]); k++) {
        const key_word *kw = &key_words[k];
        if (kw->suffix[kw->len - 1] == c && name_ends_with(sc, i, last, kw))
            return kw;
    }
    return NULL;
}

static int is_value_stop(unsigned char c)
{
    return c <= 0x20 || c == 0x7f || c == ',' || c == ';' || c == '&' || c == '"' || c == '\'' ||
           c == '<' || c == '>' || c == ')' || c == '}' || c == ']' || c == '\\';
}

static size_t value_end(const scan *sc, size_t p)
{
    while (p < sc->n && !is_value_stop(sc->t[p]))
        p++;
    return p;
}

/* Stop bytes that may also be part of a value: password=&x9K, a=b&+8G... */
static int is_lead_punct(unsigned char c)
{
    return c == '&' || c == ';' || c == ',' || c == ')' || c == '}' || c == ']' || c == '>';
}

/* Whether t[p..we) reads as the name of a next key=value field: at least
 * two bytes, starting with a lower-case letter, words joined by case or
 * separators (reason, attempts, userId, user.name, requestURL), not the
 * first bytes of a value (Fq=Rx..., r=CD1Z..., ebrYFHqpb=): a run of
 * capitals is never followed by a lower-case letter. */
static int is_field_name(const scan *sc, size_t p, size_t we)
{
    if (we - p < 2 || sc->t[p] < 'a' || sc->t[p] > 'z')
        return 0;
    size_t caps = 0;
    for (size_t k = p; k < we; k++) {
        unsigned char c = sc->t[k];
        if (c >= 'A' && c <= 'Z')
            caps++;
        else if (c >= 'a' && c <= 'z' && caps >= 2)
            return 0;
        else
            caps = 0;
    }
    return 1;
}

/* Whether a field name and '=' begin at p, before limit ("user=bob"). */
static int field_follows(const scan *sc, size_t p, size_t limit)
{
    size_t f = run_end(sc, p, CLS_DOTTED);
    return f < limit && sc->t[f] == '=' && is_field_name(sc, p, f);
}

/* At p, after a run of stop punctuation: does the value end before it? It
 * does when nothing but a blank, another stop or the end follows, or when
 * the next field follows ("&user=", "; path=/"). */
static int ends_before(const scan *sc, size_t p)
{
    return p >= sc->n || is_value_stop(sc->t[p]) || field_follows(sc, p, sc->n);
}

/* End of an unquoted value starting at v. Punctuation is part of it
 * wherever more of the value follows (password=&x9K!q, password=,Rc#w,
 * PGPASSWORD=~K5&+8G4s); it ends the value before a blank, another stop,
 * the end or the next field (password=&user=bob is an empty value,
 * token=abc&user=bob ends at the '&'). Quotes, blanks, '<' and '\'
 * always end it. */
static size_t unquoted_value_end(const scan *sc, size_t v)
{
    size_t p = v;
    for (;;) {
        p = value_end(sc, p);
        if (p >= sc->n || !is_lead_punct(sc->t[p]))
            return p;
        size_t q = p;
        while (q < sc->n && is_lead_punct(sc->t[q]))
            q++;
        if (ends_before(sc, q))
            return p;
        p = q;
    }
}

/* Values that carry no secret: leave them (and keep scrubbing idempotent). */
static int value_is_inert(const scan *sc, size_t v, size_t e)
{
    static const char *const inert[] = {"null", "nil", "none", "true", "false", "undefined"};
    if (has_at(sc, v, "[REDACTED:", 10) || has_at(sc, v, "[FILTERED]", 10))
        return 1;
    for (size_t k = 0; k < sizeof(inert) / sizeof(inert[0]); k++) {
        size_t l = strlen(inert[k]);
        if (e - v == l && has_at_ci(sc, v, inert[k], l))
            return 1;
    }
    return 0;
}

typedef struct auth_scheme {
    const char *name; /* lower case */
    int one_token;    /* credentials are one token; otherwise the rest of the line */
    const char *kind;
} auth_scheme;

static const auth_scheme auth_schemes[] = {
    {"bearer", 1, "bearer"}, {"basic", 1, "basic_auth"},        {"token", 1, "secret"},
    {"apikey", 1, "secret"}, {"digest", 0, "secret"},           {"negotiate", 1, "secret"},
    {"ntlm", 1, "secret"},   {"aws4-hmac-sha256", 0, "secret"},
};

/* The kind of a known token spanning exactly t[v..e), else dflt. */
static const char *typed_kind(const scan *sc, size_t v, size_t e, const char *dflt)
{
    size_t end = 0;
    const char *kind = prefixed_match(sc, v, &end);
    if (kind != NULL && end == e)
        return kind;
    if (jwt_match(sc, v) == e)
        return "jwt";
    return dflt;
}

/* Redacts the value at v of key word kw. `close` is the quote that ends
 * a quoted value (0: unquoted; '\\' for a quote escaped with backslashes
 * in JSON-encoded text). */
static size_t key_value(scan *sc, size_t v, const key_word *kw, unsigned char close)
{
    size_t e;
    const char *kind = "secret";
    int one_token = kw->kind == KEY_PLAIN;
    if (kw->kind == KEY_AUTH) {
        for (size_t k = 0; k < sizeof(auth_schemes) / sizeof(auth_schemes[0]); k++) {
            size_t l = strlen(auth_schemes[k].name);
            if (has_at_ci(sc, v, auth_schemes[k].name, l) && v + l < sc->n &&
                is_blank(sc->t[v + l])) {
                v = skip_blanks(sc, v + l);
                kind = auth_schemes[k].kind;
                one_token = auth_schemes[k].one_token;
                break;
            }
        }
    }
    if (close == '\\') {
        e = v;
        /* JSON inside JSON strings, at any depth: the value ends at the
         * first quote, less the backslashes escaping it */
        while (e < sc->n && sc->t[e] != '"' && sc->t[e] != '\n')
            e++;
        while (e > v && sc->t[e - 1] == '\\')
            e--;
    } else if (close != 0) {
        e = v;
        while (e < sc->n && sc->t[e] != close && sc->t[e] != '\n') {
            if (sc->t[e] == '\\' && e + 1 < sc->n && sc->t[e + 1] != '\n')
                e++;
            e++;
        }
    } else if (one_token) {
        e = unquoted_value_end(sc, v);
    } else {
        e = line_end(sc, v);
        while (e > v && is_blank(sc->t[e - 1]))
            e--;
    }
    if (e <= v || value_is_inert(sc, v, e))
        return 0;
    scan_redact(sc, v, e, strcmp(kind, "secret") == 0 ? typed_kind(sc, v, e, kind) : kind);
    return e;
}

/* After 1-8 backslashes and a quote at p (a quote escaped in JSON-encoded
 * text, possibly several times): the position after the quote, else 0. */
static size_t escaped_quote(const scan *sc, size_t p)
{
    size_t q = p;
    while (q < sc->n && sc->t[q] == '\\' && q - p < 8)
        q++;
    return q > p && q < sc->n && sc->t[q] == '"' ? q + 1 : 0;
}

/* Longest word that may begin a sentence after "key: "; random lower-case
 * tokens are longer (session: qwxzkjhgfdsapoiuytrewq expired). */
#define PROSE_WORD_MAX 12

/* Whether the text at p reads as a sentence rather than a value: a word
 * of lower-case letters, then a blank and another word ("token: signature
 * mismatch", "password: too short"). A value after "key: " is one token;
 * a reason is words. */
static int reads_as_prose(const scan *sc, size_t p)
{
    size_t e = p;
    while (e < sc->n && sc->t[e] >= 'a' && sc->t[e] <= 'z')
        e++;
    if (e == p || e - p > PROSE_WORD_MAX || e >= sc->n || !is_blank(sc->t[e]))
        return 0;
    size_t w = skip_blanks(sc, e);
    return w < sc->n && is_alpha(sc->t[w]);
}

/* password=..., "api_key": "...", Authorization: Bearer ..., <token>...</token>:
 * t[i..e) is a name ending in the key word kw (the caller looked it up). */
static size_t rule_key(scan *sc, size_t i, size_t e, const key_word *kw)
{
    size_t p = e;
    int quoted_key = 0;
    size_t q = escaped_quote(sc, p);
    if (q != 0) {
        p = q;
        quoted_key = 1;
    } else if (p < sc->n && (sc->t[p] == '"' || sc->t[p] == '\'' || sc->t[p] == ']')) {
        p++;
        quoted_key = 1;
    } else if (p < sc->n && sc->t[p] == '>' && i > 0 && sc->t[i - 1] == '<') {
        /* <password>value</password> */
        size_t v = p + 1, ve = v;
        while (ve < sc->n && sc->t[ve] != '<' && sc->t[ve] != '\n')
            ve++;
        if (ve == v || value_is_inert(sc, v, ve))
            return 0;
        scan_redact(sc, v, ve, "secret");
        return ve;
    }
    p = skip_blanks(sc, p);
    if (p >= sc->n)
        return 0;
    if (sc->t[p] == '=') {
        p++;
        if (p < sc->n && sc->t[p] == '=')
            return 0; /* a comparison, token == nil */
        if (p < sc->n && sc->t[p] == '>')
            p++;
    } else if (sc->t[p] == ':') {
        p++;
        if (!quoted_key &&
            (p >= sc->n || !(is_blank(sc->t[p]) || sc->t[p] == '"' || sc->t[p] == '\'')))
            return 0;
        if (!quoted_key && kw->kind == KEY_PLAIN && reads_as_prose(sc, skip_blanks(sc, p)))
            return 0; /* "Invalid token: signature mismatch" */
    } else {
        return 0;
    }
    p = skip_blanks(sc, p);
    if (p >= sc->n)
        return 0;
    size_t q2 = escaped_quote(sc, p);
    if (q2 != 0)
        return key_value(sc, q2, kw, '\\');
    if (sc->t[p] == '"' || sc->t[p] == '\'')
        return key_value(sc, p + 1, kw, sc->t[p]);
    return key_value(sc, p, kw, 0);
}

/* ---------------------------------------------------------------- context */

/* A value named only by the words before it: "AWS secret wJalr...",
 * "secret access key: ...", "the password is &x9K...", "invalid api key
 * 3f9a...". A context word is a key word (above) or a name ending in
 * "key"; up to CONTEXT_HOPS further words may follow it before the value
 * when each is a context word or a connector ("is", "access", "set to").
 * The value must look random (value_looks_secret), so "token count 5",
 * "key not found" and "secret rotation scheduled" are left alone. */

#define CONTEXT_HOPS 4
#define CONTEXT_VALUE_MAX 512

static const char *const connectors[] = {"is",  "was", "are", "be",     "set",   "to",
                                         "key", "of",  "for", "access", "value", "string"};

static int word_is(const scan *sc, size_t i, size_t e, const char *w)
{
    size_t l = strlen(w);
    return e - i == l && has_at_ci(sc, i, w, l);
}

static int ends_in_key(const scan *sc, size_t i, size_t e)
{
    return e - i >= 3 && has_at_ci(sc, e - 3, "key", 3);
}

static int is_context_word(const scan *sc, size_t i, size_t e)
{
    return key_lookup(sc, i, e) != NULL || ends_in_key(sc, i, e);
}

/* Connectors after which a value, never the next field, follows. */
static int is_linking(const scan *sc, size_t i, size_t e)
{
    return word_is(sc, i, e, "is") || word_is(sc, i, e, "was") || word_is(sc, i, e, "are") ||
           word_is(sc, i, e, "be") || word_is(sc, i, e, "to");
}

static int is_connector(const scan *sc, size_t i, size_t e)
{
    for (size_t k = 0; k < sizeof(connectors) / sizeof(connectors[0]); k++)
        if (word_is(sc, i, e, connectors[k]))
            return 1;
    return 0;
}

/* Bytes that may be part of a value found by context: anything printable
 * but blanks, quotes, backticks, backslashes and angle brackets. */
static int is_context_value_char(unsigned char c)
{
    return c > 0x20 && c != 0x7f && c != '"' && c != '\'' && c != '`' && c != '\\' && c != '<' &&
           c != '>';
}

/* How often t[v..e) changes between lower case, upper case and digits:
 * about every other byte in base64 or random letters, a few times in a
 * path (/home/Bob/id_ed25519: 3) or a CamelCase name
 * (InvalidTokenException: 5). */
static size_t class_changes(const scan *sc, size_t v, size_t e)
{
    size_t changes = 0;
    int prev = 0; /* 1 lower, 2 upper, 3 digit */
    for (size_t k = v; k < e; k++) {
        unsigned char c = sc->t[k];
        int cur = c >= 'a' && c <= 'z' ? 1 : c >= 'A' && c <= 'Z' ? 2 : is_digit(c) ? 3 : 0;
        changes += prev != 0 && cur != 0 && cur != prev;
        prev = cur;
    }
    return changes;
}

/* Whether t[v..e) begins with punctuation that starts no word, path,
 * option, variable or bracket (",WF.Y-P;T", "&x9K", but not "~/.ssh",
 * "$HOME", "%s", "-v", "(none)"), with a letter or digit right after it,
 * and not the next field ("&user=bob"). */
static int detached_punct(const scan *sc, size_t v, size_t e)
{
    if (e - v < 2 || sc->t[v] == 0 || strchr("!#&*+,;=?@^|~", sc->t[v]) == NULL ||
        !is_alnum(sc->t[v + 1]))
        return 0;
    return !field_follows(sc, v + 1, e); /* &user=bob */
}

/* Whether t[v..e) looks like a secret rather than a word, a number, a
 * path, an identifier or a timestamp: 16 bytes or more with letters, hex
 * with a digit or of three classes (lower, upper, digit, symbol), and at
 * least 10 distinct bytes; 20 letters or more of both cases that change
 * case at least every fourth byte (random, not CamelCase); or 8 to 15
 * bytes with letters, three classes, or two behind detached punctuation,
 * and at least 6 distinct bytes (a password: Hunter2!, &x9Kq#2, ,WF.Y-P;T).
 * A value starting with '/' or "~/" is a path unless it is 20 bytes or more that
 * change class at least every third byte (an AWS secret key may begin
 * with '/'). Symbols are the punctuation outside identifiers and paths
 * (- _ . : / do not count). */
static int value_looks_secret(const scan *sc, size_t v, size_t e)
{
    size_t len = e - v;
    if (len < 8 || has_at(sc, v, "[REDACTED:", 10) || has_at(sc, v, "[FILTERED]", 10))
        return 0;
    if (sc->t[v] == '/' || has_at(sc, v, "~/", 2))
        return len >= 20 && class_changes(sc, v, e) * 3 >= len; /* base64, not a path */
    int lower = 0, upper = 0, digit = 0, symbol = 0, hex = 1;
    unsigned char seen[256] = {0};
    size_t distinct = 0;
    for (size_t k = v; k < e; k++) {
        unsigned char c = sc->t[k];
        if (c >= 'a' && c <= 'z')
            lower = 1;
        else if (c >= 'A' && c <= 'Z')
            upper = 1;
        else if (is_digit(c))
            digit = 1;
        else if (c != '-' && c != '_' && c != '.' && c != ':' && c != '/')
            symbol = 1;
        if (!(is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
            hex = 0;
        if (c == ':' && k + 2 < e && sc->t[k + 1] == '/' && sc->t[k + 2] == '/')
            return 0; /* a URL */
        if (!seen[c]) {
            seen[c] = 1;
            distinct++;
        }
    }
    int classes = lower + upper + digit + symbol;
    if (!(lower || upper))
        return 0;
    if (len >= 20 && !digit && !symbol && lower && upper && distinct >= 10 &&
        class_changes(sc, v, e) * 4 >= len)
        return 1; /* random letters: the case changes every few bytes */
    if (len >= 16)
        return ((digit && hex) || classes >= 3) && distinct >= 10;
    return (classes >= 3 || (classes == 2 && detached_punct(sc, v, e))) && distinct >= 6;
}

/* Whether the token t[p..ve) is the next field rather than a value: a
 * field name and '=' or ':' (reason=bad_password attempts=3), or an empty
 * value's stop and then one (password=&user=bob); we ends the name run. */
static int starts_next_field(const scan *sc, size_t p, size_t we, size_t ve)
{
    if (we > p && we + 1 < ve && (sc->t[we] == '=' || sc->t[we] == ':') && sc->t[we + 1] != '=' &&
        is_field_name(sc, p, we))
        return 1;
    size_t f = p;
    while (f < ve && is_lead_punct(sc->t[f]))
        f++;
    return f > p && field_follows(sc, f, ve);
}

/* t[i..p) is a context word (the caller checked) */
static size_t rule_context(scan *sc, size_t i, size_t p)
{
    /* the kind inside a marker ([REDACTED:slack_token]) is no context */
    if (i >= 10 && memcmp(sc->t + i - 10, "[REDACTED:", 10) == 0)
        return 0;
    int linked = 0;
    for (int hop = 0; hop <= CONTEXT_HOPS; hop++) {
        /* separators between the words and before the value */
        while (p < sc->n && (is_blank(sc->t[p]) || sc->t[p] == ':' || sc->t[p] == '=' ||
                             sc->t[p] == '"' || sc->t[p] == '\'' || sc->t[p] == '('))
            p++;
        if (p >= sc->n || !is_context_value_char(sc->t[p]) || sc->t[p] == ')' || sc->t[p] == ']' ||
            sc->t[p] == '}')
            return 0;
        size_t ve = p;
        while (ve < sc->n && is_context_value_char(sc->t[ve]) && ve - p <= CONTEXT_VALUE_MAX)
            ve++;
        if (ve - p > CONTEXT_VALUE_MAX)
            return 0; /* no secret is that long; bounds a failed attempt */
        size_t we = run_end(sc, p, CLS_DOTTED);
        if (is_alpha(sc->t[p]) && hop < CONTEXT_HOPS &&
            (we == ve || sc->t[we] == ':' || sc->t[we] == '=') &&
            (is_connector(sc, p, we) || is_context_word(sc, p, we))) {
            linked = is_linking(sc, p, we);
            p = we;
            continue;
        }
        /* what a linking word introduces is the value ("set to cnE=H1L~");
         * elsewhere a field name may be the next field */
        if (!linked && starts_next_field(sc, p, we, ve))
            return 0;
        /* sentence punctuation after the value is not part of it */
        while (ve > p && (sc->t[ve - 1] == '.' || sc->t[ve - 1] == ',' || sc->t[ve - 1] == ';' ||
                          sc->t[ve - 1] == ':' || sc->t[ve - 1] == ')' || sc->t[ve - 1] == ']' ||
                          sc->t[ve - 1] == '}'))
            ve--;
        if (!value_looks_secret(sc, p, ve))
            return 0;
        scan_redact(sc, p, ve, typed_kind(sc, p, ve, "secret"));
        return ve;
    }
    return 0;
}

/* ---------------------------------------------------------------- e-mail */

static size_t rule_email(scan *sc, size_t i)
{
    if (i >= 3 && memcmp(sc->t + i - 3, "://", 3) == 0)
        return 0; /* user@host of a URL, not an address */
    size_t at = i;
    while (at < sc->n && is_local(sc->t[at]))
        at++;
    if (at == i || at >= sc->n || sc->t[at] != '@')
        return 0;
    size_t p = at + 1, labels = 0, last = p, end = p;
    for (;;) {
        size_t l = run_end(sc, p, CLS_DASHED);
        if (l == p)
            break;
        labels++;
        last = p;
        end = l;
        if (l + 1 < sc->n && sc->t[l] == '.' && is_alnum(sc->t[l + 1]))
            p = l + 1;
        else
            break;
    }
    if (labels < 2 || end - last < 2)
        return 0;
    for (size_t k = last; k < end; k++)
        if (!is_alpha(sc->t[k]))
            return 0;
    scan_redact(sc, i, end, "email");
    return end;
}

/* ---------------------------------------------------------------- driver */

/* Tries the rules that can start at t[i]; returns where scanning goes on
 * after a match, or 0. */
static size_t try_rules(scan *sc, size_t i)
{
    const unsigned char *t = sc->t;
    unsigned char c = t[i];
    unsigned char prev = i > 0 ? t[i - 1] : ' ';
    size_t r;
    /* inside a word only a Telegram token (digits after letters) can start */
    if (is_alnum(c) && is_alnum(prev) && !(is_digit(c) && !is_digit(prev)))
        return 0;
    if (c == '-' && (r = rule_pem(sc, i)) != 0)
        return r;
    if (c == ':')
        return rule_url(sc, i);
    if (is_alnum(c) && !is_alnum(prev)) {
        if ((r = rule_prefixed(sc, i)) != 0)
            return r;
        if (c == 'e' && prev != '_' && prev != '-' && (r = rule_jwt(sc, i)) != 0)
            return r;
        if ((c == 'b' || c == 'B') && (r = rule_scheme(sc, i)) != 0)
            return r;
    }
    if (is_digit(c) && !is_digit(prev) && (r = rule_telegram(sc, i)) != 0)
        return r;
    if (is_digit(c) && !is_alnum(prev) && prev != '.' && prev != '_' && (r = rule_card(sc, i)) != 0)
        return r;
    if (is_ident(c) && !is_ident(prev)) {
        /* the name at i, looked up once for both rules */
        size_t e = run_end(sc, i, CLS_DOTTED);
        const key_word *kw = key_lookup(sc, i, e);
        if (kw != NULL && (r = rule_key(sc, i, e, kw)) != 0)
            return r;
        if (is_alpha(c) && (kw != NULL || ends_in_key(sc, i, e)) &&
            (r = rule_context(sc, i, e)) != 0)
            return r;
    }
    if (is_local(c) && !is_local(prev) && (r = rule_email(sc, i)) != 0)
        return r;
    return 0;
}

static size_t scrub_builtin(const char *text, size_t len, sh_buf *out)
{
    scan sc = {(const unsigned char *)text, len, 0, out, 0};
    size_t i = 0;
    while (i < len) {
        size_t r = try_rules(&sc, i);
        i = r != 0 ? r : i + 1;
    }
    sh_buf_append(out, sc.t + sc.flushed, len - sc.flushed);
    return sc.redactions;
}

/* ---------------------------------------------------------------- extra patterns */

/* End of the segment starting at i: the next '\n' or NUL; a longer line
 * is cut at a blank before SCRUB_SEGMENT_MAX bytes, and a run without
 * blanks longer than SCRUB_RUN_MAX bytes gets segments of its own of
 * SCRUB_RUN_MAX bytes (cut on a code point boundary). The second bound is
 * what keeps regexec fast: its cost grows with the segment length times the
 * length of the run a pattern's leading repetition can consume. */
static size_t segment_end(const char *text, size_t len, size_t i)
{
    size_t last_blank = i, run_start = i;
    for (size_t p = i; p < len; p++) {
        unsigned char c = (unsigned char)text[p];
        if (c == '\n' || c == '\0')
            return p;
        if (p - i >= SCRUB_SEGMENT_MAX)
            return last_blank > i ? last_blank : p;
        if (is_blank(c)) {
            last_blank = p;
            run_start = p + 1;
            continue;
        }
        if (p + 1 - run_start > SCRUB_RUN_MAX) {
            if (run_start > i)
                return run_start;
            size_t cut = sh_utf8_truncate(text + i, len - i, SCRUB_RUN_MAX);
            return cut > 0 ? i + cut : p;
        }
    }
    return len;
}

typedef struct span {
    size_t so, eo;
} span;

typedef struct spans {
    span *v;
    size_t n, cap;
    int oom;
} spans;

static void spans_push(spans *sp, size_t so, size_t eo)
{
    if (sp->oom)
        return;
    if (sp->n == sp->cap) {
        size_t cap = sp->cap ? sp->cap * 2 : 64;
        span *v = realloc(sp->v, cap * sizeof(*v));
        if (v == NULL) {
            sp->oom = 1;
            return;
        }
        sp->v = v;
        sp->cap = cap;
    }
    sp->v[sp->n++] = (span){so, eo};
}

static int span_cmp(const void *a, const void *b)
{
    const span *x = a, *y = b;
    if (x->so != y->so)
        return x->so < y->so ? -1 : 1;
    return x->eo < y->eo ? -1 : (x->eo > y->eo);
}

/* Adds the matches of re in seg[0..len) (NUL-terminated) to sp. After
 * SCRUB_MAX_MATCHES matches the rest of the segment counts as one match
 * (fail closed). */
static void pattern_collect(const regex_t *re, const char *seg, size_t len, spans *sp)
{
    size_t pos = 0, matches = 0;
    while (pos < len) {
        regmatch_t m;
        int flags = pos > 0 ? REG_NOTBOL : 0;
        const char *from = seg + pos;
        size_t base = pos;
#ifdef REG_STARTEND
        /* no strlen per call; offsets are relative to seg */
        m.rm_so = (regoff_t)pos;
        m.rm_eo = (regoff_t)len;
        flags |= REG_STARTEND;
        from = seg;
        base = 0;
#endif
        if (regexec(re, from, 1, &m, flags) != 0)
            break;
        size_t so = base + (size_t)m.rm_so, eo = base + (size_t)m.rm_eo;
        if (eo == so) {
            pos = so + 1;
            continue;
        }
        if (++matches > SCRUB_MAX_MATCHES) {
            spans_push(sp, so, len);
            break;
        }
        spans_push(sp, so, eo);
        pos = eo;
    }
}

/* Scrubs one segment with every pattern; overlapping matches merge into
 * one marker, so markers never nest or multiply. */
static size_t segment_apply(const sh_scrubber *s, const char *seg, size_t len, spans *sp,
                            sh_buf *out)
{
    size_t count = 0, pos = 0;
    sp->n = 0;
    for (size_t k = 0; k < s->n; k++)
        pattern_collect(&s->res[k], seg, len, sp);
    if (sp->oom) {
        out->oom = 1;
        return 0;
    }
    if (sp->n > 1)
        qsort(sp->v, sp->n, sizeof(*sp->v), span_cmp);
    for (size_t k = 0; k < sp->n;) {
        size_t so = sp->v[k].so, eo = sp->v[k].eo;
        for (k++; k < sp->n && sp->v[k].so < eo; k++)
            if (sp->v[k].eo > eo)
                eo = sp->v[k].eo;
        sh_buf_append(out, seg + pos, so - pos);
        sh_buf_append_str(out, "[REDACTED:pattern]");
        pos = eo;
        count++;
    }
    sh_buf_append(out, seg + pos, len - pos);
    return count;
}

static size_t patterns_apply(const sh_scrubber *s, const char *text, size_t len, sh_buf *out)
{
    sh_buf seg;
    spans sp = {NULL, 0, 0, 0};
    size_t count = 0, i = 0;
    sh_buf_init(&seg);
    while (i < len && !out->oom) {
        size_t e = segment_end(text, len, i);
        sh_buf_reset(&seg);
        sh_buf_append(&seg, text + i, e - i);
        sh_buf_append_byte(&seg, '\0');
        if (seg.oom) {
            out->oom = 1;
            break;
        }
        count += segment_apply(s, seg.data, e - i, &sp, out);
        i = e;
        if (i < len && (text[i] == '\n' || text[i] == '\0'))
            sh_buf_append_byte(out, text[i++]);
    }
    sh_buf_free(&seg);
    free(sp.v);
    return count;
}

void sh_scrub(const sh_scrubber *s, const char *text, size_t len, sh_buf *out,
              sh_scrub_stats *stats)
{
    size_t count;
    if (text == NULL || len == 0) {
        text = "";
        len = 0;
    }
    if (s == NULL || s->n == 0) {
        count = scrub_builtin(text, len, out);
    } else {
        sh_buf tmp;
        sh_buf_init(&tmp);
        count = scrub_builtin(text, len, &tmp);
        if (tmp.oom)
            out->oom = 1;
        else
            count += patterns_apply(s, tmp.data, tmp.len, out);
        sh_buf_free(&tmp);
    }
    if (stats != NULL)
        stats->redactions = count;
}

/* ---------------------------------------------------------------- construction */

static void set_err(char *err, size_t errlen, size_t index, const char *detail)
{
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "pattern %zu: %s", index, detail);
}

/* Rejects what makes POSIX regex matching slow or unbounded: back
 * references and repetition counts above SCRUB_MAX_REPEAT. Returns NULL
 * or the reason. */
static const char *pattern_check(const char *p, size_t len)
{
    int bracket = 0;
    for (size_t k = 0; k < len; k++) {
        char c = p[k];
        if (bracket) {
            /* ']' right after '[' or '[^' is literal */
            if (c == ']' && !(p[k - 1] == '[' || (p[k - 1] == '^' && k >= 2 && p[k - 2] == '[')))
                bracket = 0;
            continue;
        }
        if (c == '\\') {
            if (k + 1 < len && p[k + 1] >= '1' && p[k + 1] <= '9')
                return "back references are not allowed";
            k++;
            continue;
        }
        if (c == '[') {
            bracket = 1;
            continue;
        }
        if (c == '{') {
            unsigned long v = 0;
            for (size_t j = k + 1; j < len && (p[j] == ',' || (p[j] >= '0' && p[j] <= '9')); j++) {
                if (p[j] == ',') {
                    v = 0;
                    continue;
                }
                v = v * 10 + (unsigned long)(p[j] - '0');
                if (v > SCRUB_MAX_REPEAT)
                    return "repetition count above 255";
            }
        }
    }
    return NULL;
}

int sh_scrubber_new(sh_scrubber **out, const char *const *patterns, size_t n, char *err,
                    size_t errlen)
{
    sh_scrubber *s = NULL;
    *out = NULL;
    if (n > SCRUB_MAX_PATTERNS) {
        if (err != NULL && errlen > 0)
            snprintf(err, errlen, "%zu patterns, at most %d", n, SCRUB_MAX_PATTERNS);
        return -1;
    }
    if (n > 0 && patterns == NULL) {
        set_err(err, errlen, 0, "no pattern array");
        return -1;
    }
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        goto nomem;
    if (n > 0) {
        s->res = calloc(n, sizeof(*s->res));
        if (s->res == NULL)
            goto nomem;
    }
    for (size_t k = 0; k < n; k++) {
        const char *p = patterns[k];
        if (p == NULL || p[0] == '\0') {
            set_err(err, errlen, k, "empty pattern");
            goto fail;
        }
        size_t len = strnlen(p, SCRUB_MAX_PATTERN_LEN + 1);
        if (len > SCRUB_MAX_PATTERN_LEN) {
            set_err(err, errlen, k, "longer than 1024 bytes");
            goto fail;
        }
        const char *why = pattern_check(p, len);
        if (why != NULL) {
            set_err(err, errlen, k, why);
            goto fail;
        }
        int rc = regcomp(&s->res[k], p, REG_EXTENDED);
        if (rc != 0) {
            char msg[128];
            regerror(rc, &s->res[k], msg, sizeof(msg));
            set_err(err, errlen, k, msg);
            goto fail;
        }
        s->n = k + 1;
        if (regexec(&s->res[k], "", 0, NULL, 0) == 0) {
            set_err(err, errlen, k, "matches the empty string");
            goto fail;
        }
    }
    *out = s;
    return 0;

nomem:
    set_err(err, errlen, 0, "out of memory");
fail:
    sh_scrubber_free(s);
    return -1;
}

void sh_scrubber_free(sh_scrubber *s)
{
    if (s == NULL)
        return;
    for (size_t k = 0; k < s->n; k++)
        regfree(&s->res[k]);
    free(s->res);
    free(s);
}

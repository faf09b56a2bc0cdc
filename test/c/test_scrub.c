/* Scrubbing: the secret corpus leaks nothing, the clean corpus is left
 * alone, exact outputs of each rule, configured patterns, and hostile
 * inputs finish in linear time. Corpora live in test/c/data (or in the
 * directory named by SELF_HEAL_TEST_DATA). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "self_heal/scrub.h"

/* ---------------------------------------------------------------- corpus files */

typedef struct field {
    char *ptr;
    size_t len;
} field;

typedef struct record {
    field f[16]; /* f[0] kinds, f[1] line, f[2..] secrets (secrets.txt) */
    size_t n;
} record;

typedef struct corpus {
    record *recs;
    size_t n;
    field patterns[16];
    size_t npatterns;
} corpus;

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decodes the escapes \\ \t \n \r \0 \xHH of s[0..len). */
static field decode(const char *s, size_t len)
{
    field out = {malloc(len + 1), 0};
    assert_non_null(out.ptr);
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '\\' && i + 1 < len) {
            char e = s[++i];
            if (e == 'n')
                c = '\n';
            else if (e == 't')
                c = '\t';
            else if (e == 'r')
                c = '\r';
            else if (e == '0')
                c = '\0';
            else if (e == 'x' && i + 2 < len && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
                c = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
                i += 2;
            } else
                c = e;
        }
        out.ptr[out.len++] = c;
    }
    out.ptr[out.len] = '\0';
    return out;
}

static char *read_all(const char *name, size_t *len)
{
    const char *dir = getenv("SELF_HEAL_TEST_DATA");
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir != NULL ? dir : "test/c/data", name);
    FILE *fp = fopen(path, "rb");
    if (fp == NULL)
        fail_msg("cannot open %s (run from the repository root or set SELF_HEAL_TEST_DATA)", path);
    char *data = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (cap - n < 65536) {
            cap = cap ? cap * 2 : 65536;
            data = realloc(data, cap);
            assert_non_null(data);
        }
        size_t r = fread(data + n, 1, cap - n - 1, fp);
        n += r;
        if (r == 0)
            break;
    }
    fclose(fp);
    data[n] = '\0';
    *len = n;
    return data;
}

/* Loads a corpus: '#' lines are comments, "@pattern\tERE" lines patterns,
 * other non-empty lines records of TAB-separated escaped fields. */
static corpus corpus_load(const char *name)
{
    corpus c;
    memset(&c, 0, sizeof(c));
    size_t len;
    char *data = read_all(name, &len);
    size_t cap = 0;
    char *line = data;
    while (line < data + len) {
        char *nl = memchr(line, '\n', (size_t)(data + len - line));
        char *end = nl != NULL ? nl : data + len;
        size_t ll = (size_t)(end - line);
        if (ll > 0 && line[0] != '#') {
            if (ll > 9 && memcmp(line, "@pattern\t", 9) == 0) {
                assert_true(c.npatterns < 16);
                c.patterns[c.npatterns++] = decode(line + 9, ll - 9);
            } else {
                if (c.n == cap) {
                    cap = cap ? cap * 2 : 256;
                    c.recs = realloc(c.recs, cap * sizeof(*c.recs));
                    assert_non_null(c.recs);
                }
                record *r = &c.recs[c.n++];
                r->n = 0;
                char *f = line;
                while (f <= end && r->n < 16) {
                    char *tab = memchr(f, '\t', (size_t)(end - f));
                    char *fe = tab != NULL ? tab : end;
                    r->f[r->n++] = decode(f, (size_t)(fe - f));
                    f = fe + 1;
                }
            }
        }
        line = end + 1;
    }
    free(data);
    return c;
}

static void corpus_free(corpus *c)
{
    for (size_t k = 0; k < c->n; k++)
        for (size_t j = 0; j < c->recs[k].n; j++)
            free(c->recs[k].f[j].ptr);
    for (size_t k = 0; k < c->npatterns; k++)
        free(c->patterns[k].ptr);
    free(c->recs);
}

static sh_scrubber *corpus_scrubber(const corpus *c)
{
    const char *pats[16];
    char err[256];
    sh_scrubber *s = NULL;
    for (size_t k = 0; k < c->npatterns; k++)
        pats[k] = c->patterns[k].ptr;
    assert_int_equal(sh_scrubber_new(&s, pats, c->npatterns, err, sizeof(err)), 0);
    assert_non_null(s);
    return s;
}

static int contains(const char *hay, size_t hn, const char *needle, size_t nn)
{
    if (nn == 0)
        return 1;
    for (size_t i = 0; i + nn <= hn; i++)
        if (hay[i] == needle[0] && memcmp(hay + i, needle, nn) == 0)
            return 1;
    return 0;
}

/* Whether any run of min(len, 10) bytes of the secret survives in out. */
static int leaks(const sh_buf *out, const field *secret)
{
    size_t w = secret->len < 10 ? secret->len : 10;
    for (size_t i = 0; i + w <= secret->len; i++)
        if (contains(out->data, out->len, secret->ptr + i, w))
            return 1;
    return 0;
}

/* ---------------------------------------------------------------- corpora */

static void test_secret_corpus(void **state)
{
    (void)state;
    corpus c = corpus_load("secrets.txt");
    sh_scrubber *s = corpus_scrubber(&c);
    size_t failures = 0, secrets = 0;
    sh_buf out, again;
    sh_buf_init(&out);
    sh_buf_init(&again);
    assert_true(c.n >= 200);
    assert_true(c.npatterns >= 1);
    for (size_t k = 0; k < c.n; k++) {
        const record *r = &c.recs[k];
        assert_true(r->n >= 3);
        sh_scrub_stats st = {0};
        sh_buf_reset(&out);
        sh_scrub(s, r->f[1].ptr, r->f[1].len, &out, &st);
        assert_false(out.oom);
        int bad = 0;
        for (size_t j = 2; j < r->n; j++) {
            secrets++;
            if (leaks(&out, &r->f[j])) {
                printf("LEAK record %zu secret %zu: %.*s\n", k, j - 1, (int)r->f[j].len,
                       r->f[j].ptr);
                bad = 1;
            }
        }
        /* every expected kind of marker is there */
        char *kinds = strdup(r->f[0].ptr), *save = NULL;
        assert_non_null(kinds);
        for (char *kind = strtok_r(kinds, ",", &save); kind; kind = strtok_r(NULL, ",", &save)) {
            char marker[64];
            snprintf(marker, sizeof(marker), "[REDACTED:%s]", kind);
            if (!contains(out.data, out.len, marker, strlen(marker))) {
                printf("MISSING %s in record %zu\n", marker, k);
                bad = 1;
            }
        }
        free(kinds);
        if (st.redactions == 0)
            bad = 1;
        /* scrubbing is idempotent */
        sh_buf_reset(&again);
        sh_scrub(s, out.data, out.len, &again, NULL);
        if (again.len != out.len || memcmp(again.data, out.data, out.len) != 0) {
            printf("NOT IDEMPOTENT record %zu\n", k);
            bad = 1;
        }
        if (bad) {
            printf("  in:  %.*s\n  out: %.*s\n", (int)r->f[1].len, r->f[1].ptr, (int)out.len,
                   out.data);
            failures++;
        }
    }
    printf("secret corpus: %zu lines, %zu secrets, %zu patterns, %zu failing\n", c.n, secrets,
           c.npatterns, failures);
    assert_int_equal(failures, 0);
    sh_buf_free(&out);
    sh_buf_free(&again);
    sh_scrubber_free(s);
    corpus_free(&c);
}

static void test_clean_corpus(void **state)
{
    (void)state;
    corpus secrets = corpus_load("secrets.txt");
    sh_scrubber *s = corpus_scrubber(&secrets);
    corpus c = corpus_load("clean.txt");
    size_t failures = 0;
    sh_buf out;
    sh_buf_init(&out);
    assert_true(c.n >= 50);
    for (size_t k = 0; k < c.n; k++) {
        /* a clean line is one field; TABs in it are part of the line */
        const field *line = &c.recs[k].f[0];
        assert_int_equal(c.recs[k].n, 1);
        sh_scrub_stats st = {99};
        sh_buf_reset(&out);
        sh_scrub(s, line->ptr, line->len, &out, &st);
        if (out.len != line->len || memcmp(out.data, line->ptr, line->len) != 0 ||
            st.redactions != 0) {
            printf("CHANGED clean line %zu:\n  in:  %.*s\n  out: %.*s\n", k, (int)line->len,
                   line->ptr, (int)out.len, out.data);
            failures++;
        }
    }
    printf("clean corpus: %zu lines, %zu changed\n", c.n, failures);
    assert_int_equal(failures, 0);
    sh_buf_free(&out);
    sh_scrubber_free(s);
    corpus_free(&c);
    corpus_free(&secrets);
}

/* ---------------------------------------------------------------- exact outputs */

static void expect_scrub(const sh_scrubber *s, const char *in, size_t inlen, const char *want,
                         size_t wantlen)
{
    sh_buf out;
    sh_buf_init(&out);
    sh_scrub(s, in, inlen, &out, NULL);
    if (out.len != wantlen || (wantlen > 0 && memcmp(out.data, want, wantlen) != 0))
        fail_msg("scrub(%.*s)\n  got:  %.*s\n  want: %.*s", (int)inlen, in, (int)out.len,
                 out.data ? out.data : "", (int)wantlen, want);
    sh_buf_free(&out);
}

#define EXPECT(s, in, want) expect_scrub((s), (in), strlen(in), (want), strlen(want))
#define UNCHANGED(s, in) expect_scrub((s), (in), strlen(in), (in), strlen(in))

static void test_rules(void **state)
{
    (void)state;
    /* key = value: the key, separator and quotes stay */
    EXPECT(NULL, "password=hunter2xyz", "password=[REDACTED:secret]");
    EXPECT(NULL, "{\"password\":\"a b c\",\"user\":\"bob\"}",
           "{\"password\":\"[REDACTED:secret]\",\"user\":\"bob\"}");
    EXPECT(NULL, "DB_PASSWORD = 'x1y2z3'", "DB_PASSWORD = '[REDACTED:secret]'");
    EXPECT(NULL, "api_key: abc123, next", "api_key: [REDACTED:secret], next");
    EXPECT(NULL, "%{\"token\" => \"t0k3n\"}", "%{\"token\" => \"[REDACTED:secret]\"}");
    EXPECT(NULL, "<password>xyz123</password>", "<password>[REDACTED:secret]</password>");
    EXPECT(NULL, "{\\\"secret\\\":\\\"s3\\\"}", "{\\\"secret\\\":\\\"[REDACTED:secret]\\\"}");
    EXPECT(NULL, "{\\\\\\\"pwd\\\\\\\":\\\\\\\"s3 x\\\\\\\"}",
           "{\\\\\\\"pwd\\\\\\\":\\\\\\\"[REDACTED:secret]\\\\\\\"}");
    EXPECT(NULL, "?access_token=abc&page=2", "?access_token=[REDACTED:secret]&page=2");
    EXPECT(NULL, "clientSecret=abc def", "clientSecret=[REDACTED:secret] def");
    EXPECT(NULL, "Cookie: a=b; c=d\nnext", "Cookie: [REDACTED:secret]\nnext");
    UNCHANGED(NULL, "token: null");
    UNCHANGED(NULL, "token == nil");
    UNCHANGED(NULL, "password=[REDACTED:secret]");
    UNCHANGED(NULL, "token:abc");     /* unquoted key: ':' needs a blank after it */
    UNCHANGED(NULL, "max_tokens=42"); /* the key must end with the key word */
    /* Authorization keeps its scheme */
    EXPECT(NULL, "Authorization: Bearer abcdefgh12345678",
           "Authorization: Bearer [REDACTED:bearer]");
    EXPECT(NULL, "Authorization: Basic dXNlcjpwYXNzd29yZA==",
           "Authorization: Basic [REDACTED:basic_auth]");
    EXPECT(NULL, "got bearer abcdefgh12345678 from proxy",
           "got bearer [REDACTED:bearer] from proxy");
    UNCHANGED(NULL, "Basic auth is disabled"); /* not base64 of user:pass */
    /* URLs */
    EXPECT(NULL, "postgres://app:s3cr3t@db:5432/x", "postgres://app:[REDACTED:password]@db:5432/x");
    EXPECT(NULL, "redis://:p@ss@cache", "redis://:[REDACTED:password]@cache");
    EXPECT(NULL, "https://hooks.slack.com/services/T000/B000/XXXX now",
           "https://hooks.slack.com/services/[REDACTED:webhook] now");
    UNCHANGED(NULL, "ssh://git@github.com/acme/api.git");
    UNCHANGED(NULL, "http://host:8080/path");
    /* e-mail */
    EXPECT(NULL, "mail bob.smith+x@mail.example.com now", "mail [REDACTED:email] now");
    UNCHANGED(NULL, "nonode@nohost jason@1.4.1");
    /* cards */
    EXPECT(NULL, "card 4111 1111 1111 1111 ok", "card [REDACTED:card] ok");
    EXPECT(NULL, "card 4111-1111-1111-1111.", "card [REDACTED:card].");
    EXPECT(NULL, "4111111111111111 2024", "[REDACTED:card] 2024");
    EXPECT(NULL, "amex 3782 822463 10005 ok", "amex [REDACTED:card] ok");
    EXPECT(NULL, "4111 1111 1111 1111 2024-01", "[REDACTED:card] 2024-01");
    UNCHANGED(NULL, "card 4111 1111 1111 1112 ok"); /* Luhn fails */
    UNCHANGED(NULL, "4111 1111-1111 1111");         /* mixed separators */
    UNCHANGED(NULL, "41111111111111111111");        /* 20 digits */
    UNCHANGED(NULL, "1111111111111111");            /* no card network starts with 1 */
    /* typed tokens */
    EXPECT(NULL, "key AKIAABCDEFGHIJKLMNOP x", "key [REDACTED:aws_key] x");
    UNCHANGED(NULL, "key AKIAABCDEFGHIJKLMNOPQ x"); /* 17 characters */
    UNCHANGED(NULL, "xAKIAABCDEFGHIJKLMNOP");       /* not at a word start */
    EXPECT(NULL, "k=sk-ant-api03-abcdefghijklmnopqrstuvwxyz", "k=[REDACTED:anthropic_key]");
    EXPECT(NULL, "(sk-abcdefghijklmnopqrstuvwxyz)", "([REDACTED:openai_key])");
    UNCHANGED(NULL, "task-abcdefghijklmnopqrstuvwxyz");
    EXPECT(NULL, "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln_sig.", "[REDACTED:jwt].");
    EXPECT(NULL, "bot123456789:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA/send",
           "bot[REDACTED:telegram_token]/send");
    /* PEM */
    EXPECT(NULL, "x -----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY----- y",
           "x [REDACTED:private_key] y");
    EXPECT(NULL, "cut -----BEGIN EC PRIVATE KEY-----\nMIIB", "cut [REDACTED:private_key]");
    UNCHANGED(NULL, "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----");
    /* empty input */
    EXPECT(NULL, "", "");
}

/* Secrets named only by the words before them: a context word (a key
 * word, or a name ending in "key"), connectors, then a value that looks
 * random. */
static void test_context_secrets(void **state)
{
    (void)state;
    EXPECT(NULL, "AWS secret wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY rejected",
           "AWS secret [REDACTED:secret] rejected");
    EXPECT(NULL, "secret access key wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY.",
           "secret access key [REDACTED:secret].");
    EXPECT(NULL, "secret key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
           "secret key=[REDACTED:secret]");
    EXPECT(NULL, "the password is &Xk9pL2q$", "the password is [REDACTED:secret]");
    EXPECT(NULL, "admin password set to Hunter2!x now",
           "admin password set to [REDACTED:secret] now");
    EXPECT(NULL, "invalid api key 9f86d081884c7d659a2feaa0c55ad015",
           "invalid api key [REDACTED:secret]");
    EXPECT(NULL, "auth credential Hpv0uHMFHJeU/LNtEvD8Rf1fqUtSQCx2TQvNyQMGOTk= refused",
           "auth credential [REDACTED:secret] refused");
    EXPECT(NULL, "signing with secret 'ddHICQVMZmJMO+Q4LqVGz1Lx'",
           "signing with secret '[REDACTED:secret]'");
    EXPECT(NULL, "refresh token ln0uTbOh64oAURi9UvnF0K0lUxC was revoked",
           "refresh token [REDACTED:secret] was revoked");
    /* a known token keeps its kind */
    EXPECT(NULL, "slack token xoxb-123456789012-abcdefghij", "slack token [REDACTED:slack_token]");
    /* words, numbers, identifiers, timestamps and other fields stay */
    UNCHANGED(NULL, "token count 5 exceeds limit 4");
    UNCHANGED(NULL, "keyboard layout us not available");
    UNCHANGED(NULL, "key not found: 550e8400-e29b-41d4-a716-446655440000");
    UNCHANGED(NULL, "api key missing from request");
    UNCHANGED(NULL, "secret rotation scheduled at 2024-05-01T10:00:00Z");
    UNCHANGED(NULL, "cache key user:1234:profile missing");
    UNCHANGED(NULL, "key order_status_2024_final not in schema");
    UNCHANGED(NULL, "reason=bad_password attempts=3");
    UNCHANGED(NULL, "password file /etc/app/secrets2024.env missing");
    UNCHANGED(NULL, "token v1.14.2-rc.1 unsupported");
    /* a value holding '=' (not the next field), random letters, a long
     * password without a digit */
    EXPECT(NULL, "auth failed for bob with password Kq=PzWDRRA.XLo4B",
           "auth failed for bob with password [REDACTED:secret]");
    EXPECT(NULL, "admin password set to t=GH2Y^.PNq", "admin password set to [REDACTED:secret]");
    EXPECT(NULL, "invalid access token qhRfWbZmXpLkcvTrsBnaJdyE",
           "invalid access token [REDACTED:secret]");
    EXPECT(NULL, "password set to mv~qxDEW#ztKbc+JHR", "password set to [REDACTED:secret]");
    UNCHANGED(NULL, "token InvalidTokenSignatureException raised");
    UNCHANGED(NULL, "password reset for userId=4711 failed");
    UNCHANGED(NULL, "secret key=value pairs are not allowed here");
    /* markers are not context: scrubbing stays idempotent */
    UNCHANGED(NULL, "bot[REDACTED:telegram_token]/sendMessage-2024abcd");
    UNCHANGED(NULL, "x [REDACTED:secret]&page=2");
}

/* Unquoted values that begin with punctuation are values; a separator
 * followed by the next field is not. */
static void test_punct_values(void **state)
{
    (void)state;
    EXPECT(NULL, "password=&JdAwFpGJ9 user=bob", "password=[REDACTED:secret] user=bob");
    EXPECT(NULL, "smtp_password: &JdAwFpGJ9", "smtp_password: [REDACTED:secret]");
    EXPECT(NULL, "connect(user=bob, password=,lp%1va09$)",
           "connect(user=bob, password=[REDACTED:secret])");
    EXPECT(NULL, "PGPASSWORD=;x9!Kq2 psql", "PGPASSWORD=[REDACTED:secret] psql");
    EXPECT(NULL, "--password=)Q7w!e", "--password=[REDACTED:secret]");
    /* empty values: the separator belongs to what follows */
    UNCHANGED(NULL, "?password=&user=bob");
    UNCHANGED(NULL, "{password=}");
    UNCHANGED(NULL, "password=, user=bob");
    /* punctuation inside a value: it ends the value only before a blank,
     * a stop, the end or the next field */
    EXPECT(NULL, "PGPASSWORD=~KE5vK3&+8G4sI8L8a psql", "PGPASSWORD=[REDACTED:secret] psql");
    EXPECT(NULL, "db password=a1,b2;c3)d4 up", "db password=[REDACTED:secret] up");
    EXPECT(NULL, "GET /x?token=Zk81mQ&user=bob", "GET /x?token=[REDACTED:secret]&user=bob");
    EXPECT(NULL, "set session=Zk81mQ;path=/", "set session=[REDACTED:secret];path=/");
    EXPECT(NULL, "f(password=Zk81mQ), retry", "f(password=[REDACTED:secret]), retry");
    /* detached punctuation after a context word is a value's start */
    EXPECT(NULL, "ldap bind with password ,WF.Y-P;T failed",
           "ldap bind with password [REDACTED:secret] failed");
    UNCHANGED(NULL, "secret $AWS_SECRET_ACCESS_KEY is unset");
    UNCHANGED(NULL, "ssh key ~/.ssh/id_ed25519 not readable");
    UNCHANGED(NULL, "password %s_%d_%x rejected");
    UNCHANGED(NULL, "password reset link ?password=&user=bob&x=1");
    /* "Name=" reads as a value's bytes, not the next field */
    EXPECT(NULL, "mysql --password=&Otthx=;1io!R -h db",
           "mysql --password=[REDACTED:secret] -h db");
    /* after a linking word comes the value, even one shaped like a field */
    EXPECT(NULL, "admin password set to cnE=H1L~-LEI", "admin password set to [REDACTED:secret]");
}

/* scheme://user:password@host where the password holds a raw '/': what
 * follows the colon is no port, so the userinfo runs to the '@'. A port
 * keeps the path as it is. */
static void test_url_passwords(void **state)
{
    (void)state;
    EXPECT(NULL, "DATABASE_URL=postgres://admin:KTh=uCcN*/WVZjLV=bb@db.internal/prod",
           "DATABASE_URL=postgres://admin:[REDACTED:password]@db.internal/prod");
    EXPECT(NULL, "https://deploy:LUW~4#!oX2e1/Kw9C@git.example.com/app.git",
           "https://deploy:[REDACTED:password]@git.example.com/app.git");
    UNCHANGED(NULL, "GET http://api.internal:8080/v1/users/42 failed");
    EXPECT(NULL, "GET http://api.internal:8080/invite?to=bob@example.com failed",
           "GET http://api.internal:8080/invite?to=[REDACTED:email] failed");
    UNCHANGED(NULL, "GET http://[::1]:4000/health/@me failed");
    UNCHANGED(NULL, "see https://docs.example.com:notaport/x then mail");
}

/* A value after "key: " is one token; a reason is words. A value that
 * begins with '/' is a path unless it changes class like base64. */
static void test_prose_and_paths(void **state)
{
    (void)state;
    UNCHANGED(NULL, "Invalid token: signature mismatch");
    UNCHANGED(NULL, "bad password: too short for policy");
    EXPECT(NULL, "password: letmein", "password: [REDACTED:secret]");
    EXPECT(NULL, "token: abc123 def", "token: [REDACTED:secret] def");
    /* random lower-case letters are no word of a sentence */
    EXPECT(NULL, "session: qwxzkjhgfdsapoiuytrewq expired", "session: [REDACTED:secret] expired");
    EXPECT(NULL, "secret access key /UjvAw90UHUi5T6F4AsMnCKdUnIppRIFnSolN1p0",
           "secret access key [REDACTED:secret]");
    UNCHANGED(NULL, "key file /opt/MyApp/ConfigKeys/ServiceAccountKey.json missing");
    UNCHANGED(NULL, "key file /home/Bob/Keys/id_ed25519 missing");
}

static void test_stats_and_null(void **state)
{
    (void)state;
    sh_buf out;
    sh_buf_init(&out);
    sh_scrub_stats st = {0};
    const char *in = "a@example.com b@example.org password=x";
    sh_scrub(NULL, in, strlen(in), &out, &st);
    assert_int_equal(st.redactions, 3);
    sh_buf_reset(&out);
    sh_scrub(NULL, NULL, 0, &out, &st);
    assert_int_equal(out.len, 0);
    assert_int_equal(st.redactions, 0);
    /* appends: what is in out stays */
    sh_buf_append_str(&out, "prefix:");
    sh_scrub(NULL, "password=x", 10, &out, NULL);
    assert_int_equal(out.len, strlen("prefix:password=[REDACTED:secret]"));
    assert_memory_equal(out.data, "prefix:password=[REDACTED:secret]", out.len);
    sh_buf_free(&out);
}

static void test_bytes_pass_through(void **state)
{
    (void)state;
    /* invalid UTF-8, NULs and control bytes pass unchanged; secrets next to
     * them still go */
    static const char in[] = "\xff\xfe\xc3\x28 a\0b \xed\xa0\x80 password=x1\0tail \x80@x";
    static const char want[] =
        "\xff\xfe\xc3\x28 a\0b \xed\xa0\x80 password=[REDACTED:secret]\0tail "
        "\x80@x";
    expect_scrub(NULL, in, sizeof(in) - 1, want, sizeof(want) - 1);
    static const char in2[] = "\xc3\xa9t\xc3\xa9 bob@example.com \xe2\x82";
    static const char want2[] = "\xc3\xa9t\xc3\xa9 [REDACTED:email] \xe2\x82";
    expect_scrub(NULL, in2, sizeof(in2) - 1, want2, sizeof(want2) - 1);
}

/* ---------------------------------------------------------------- configured patterns */

static void test_patterns(void **state)
{
    (void)state;
    const char *pats[] = {"ACME-[0-9]{4}", "^secret line$"};
    char err[256];
    sh_scrubber *s = NULL;
    assert_int_equal(sh_scrubber_new(&s, pats, 2, err, sizeof(err)), 0);
    EXPECT(s, "a ACME-1234 b ACME-5678 c", "a [REDACTED:pattern] b [REDACTED:pattern] c");
    EXPECT(s, "x\nsecret line\ny", "x\n[REDACTED:pattern]\ny");
    /* NUL separates segments too */
    expect_scrub(s, "ACME-1111\0ACME-2222", 19, "[REDACTED:pattern]\0[REDACTED:pattern]", 37);
    /* overlapping matches of several patterns become one marker */
    sh_scrubber *s2 = NULL;
    const char *overlap[] = {"ACME-[0-9]{4}", "[0-9]{4} b", "x"};
    assert_int_equal(sh_scrubber_new(&s2, overlap, 3, err, sizeof(err)), 0);
    EXPECT(s2, "a ACME-1234 b c x", "a [REDACTED:pattern] c [REDACTED:pattern]");
    sh_scrubber_free(s2);
    /* patterns run after the built-in rules */
    EXPECT(s, "password=ACME-1234 ACME-9999", "password=[REDACTED:secret] [REDACTED:pattern]");
    sh_scrub_stats st = {0};
    sh_buf out;
    sh_buf_init(&out);
    sh_scrub(s, "ACME-0001 bob@example.com", 25, &out, &st);
    assert_int_equal(st.redactions, 2);
    /* a long line is cut at blanks, so matches stay whole */
    sh_buf in;
    sh_buf_init(&in);
    for (int k = 0; k < 3000; k++)
        sh_buf_append_str(&in, "ACME-4321 ");
    sh_buf_reset(&out);
    sh_scrub(s, in.data, in.len, &out, &st);
    assert_int_equal(st.redactions, 3000);
    assert_false(contains(out.data, out.len, "4321", 4));
    sh_buf_free(&in);
    sh_buf_free(&out);
    sh_scrubber_free(s);
    /* no patterns: same as NULL */
    assert_int_equal(sh_scrubber_new(&s, NULL, 0, err, sizeof(err)), 0);
    EXPECT(s, "password=x", "password=[REDACTED:secret]");
    sh_scrubber_free(s);
    sh_scrubber_free(NULL);
}

static void expect_bad(const char *const *pats, size_t n, const char *want)
{
    char err[256] = "";
    sh_scrubber *s = (sh_scrubber *)&err; /* must be reset to NULL */
    assert_int_equal(sh_scrubber_new(&s, pats, n, err, sizeof(err)), -1);
    assert_null(s);
    if (strstr(err, want) == NULL)
        fail_msg("error \"%s\" lacks \"%s\"", err, want);
}

static void test_pattern_errors(void **state)
{
    (void)state;
    const char *bad_re[] = {"ok", "a(b"};
    expect_bad(bad_re, 2, "pattern 1: ");
    const char *backref[] = {"(a)\\1"};
    expect_bad(backref, 1, "back references");
    const char *escaped[] = {"\\\\1x"}; /* an escaped backslash then 1: fine */
    char err[256];
    sh_scrubber *s = NULL;
    assert_int_equal(sh_scrubber_new(&s, escaped, 1, err, sizeof(err)), 0);
    sh_scrubber_free(s);
    const char *repeat[] = {"a{1,1000}"};
    expect_bad(repeat, 1, "repetition");
    const char *empty_match[] = {"x*"};
    expect_bad(empty_match, 1, "empty string");
    const char *empty[] = {""};
    expect_bad(empty, 1, "empty pattern");
    char *longp = malloc(1100);
    assert_non_null(longp);
    memset(longp, 'a', 1099);
    longp[1099] = '\0';
    const char *too_long[] = {longp};
    expect_bad(too_long, 1, "1024");
    free(longp);
    const char *many[65];
    for (int k = 0; k < 65; k++)
        many[k] = "abc";
    expect_bad(many, 65, "at most 64");
    assert_int_equal(sh_scrubber_new(&s, many, 64, err, sizeof(err)), 0);
    sh_scrubber_free(s);
    /* err may be absent */
    assert_int_equal(sh_scrubber_new(&s, bad_re, 2, NULL, 0), -1);
}

/* ---------------------------------------------------------------- hostile inputs */

#define MIB (1024 * 1024)

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

#if defined(__SANITIZE_THREAD__)
#define SH_TEST_SLOWDOWN 12.0 /* ThreadSanitizer: 5-15 times slower */
#elif defined(__SANITIZE_ADDRESS__)
#define SH_TEST_SLOWDOWN 4.0
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SH_TEST_SLOWDOWN 12.0
#elif __has_feature(address_sanitizer)
#define SH_TEST_SLOWDOWN 4.0
#endif
#endif
#ifndef SH_TEST_SLOWDOWN
#define SH_TEST_SLOWDOWN 1.0
#endif

/* Only superlinear work gets near the bound: quadratic work on these
 * inputs of a MiB and more takes minutes. Sanitizers and a loaded
 * machine slow linear work down by a known factor; valgrind runs code
 * 10-50 times slower (it preloads its vgpreload_*.so). */
static double time_bound_ms(void)
{
    const char *pre = getenv("LD_PRELOAD");
    if (pre != NULL && strstr(pre, "vgpreload") != NULL)
        return 100000.0;
    return 5000.0 * SH_TEST_SLOWDOWN;
}

static void fill_repeat(sh_buf *b, const char *unit, size_t unit_len, size_t total)
{
    sh_buf_reset(b);
    while (b->len + unit_len <= total)
        sh_buf_append(b, unit, unit_len);
    assert_false(b->oom);
}

static double time_scrub(const sh_scrubber *s, const char *name, const sh_buf *in, sh_buf *out)
{
    sh_scrub_stats st = {0};
    sh_buf_reset(out);
    double t0 = now_ms();
    sh_scrub(s, in->data, in->len, out, &st);
    double ms = now_ms() - t0;
    assert_false(out->oom);
    printf("scrub hostile %-32s %8zu bytes %8.1f ms %7zu redactions\n", name, in->len, ms,
           st.redactions);
    /* generous: only superlinear behaviour gets near this */
    assert_true(ms < time_bound_ms());
    return ms;
}

static void test_hostile(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        const char *unit;
    } units[] = {
        {"eyJ x100k+", "eyJ"},
        {"eyJ. repeated", "eyJ."},
        {"eyJaaaaaaaaaa.b repeated", "eyJaaaaaaaaaa.b"},
        {"sk- repeated", "sk-"},
        {"sk-a repeated", "sk-a "},
        {"AKIA repeated", "AKIA"},
        {"ghp_ repeated", "ghp_ "},
        {"password= repeated", "password="},
        {"password=\" repeated", "password=\""},
        {"\"token\":\" repeated", "\"token\":\""},
        {"Authorization: repeated", "Authorization: "},
        {"Bearer repeated", "Bearer "},
        {"Basic QUFB repeated", "Basic QUFBQUFB"},
        {"a@ repeated", "a@"},
        {"a.a. repeated", "a.a."},
        {"a@b. repeated", "a@b."},
        {":// repeated", "://"},
        {"://a:b@ repeated", "://a:b@"},
        {"-----BEGIN repeated", "-----BEGIN "},
        {"-----BEGIN PRIVATE KEY----- rep", "-----BEGIN PRIVATE KEY-----"},
        {"4111 repeated", "4111 "},
        {"4111- repeated", "4111-"},
        {"1 repeated", "1 "},
        {"123456789: repeated", "123456789:"},
        {"<password> repeated", "<password>"},
        {"- repeated", "-"},
        {"token repeated", "token "},
        {"secret key is repeated", "secret key is "},
        {"api key x random repeated", "api key Ab1!Ab1!Ab1!"},
        {"password=& repeated", "password=&"},
        {"password=&& repeated", "password=&&x"},
    };
    sh_buf in, out;
    sh_buf_init(&in);
    sh_buf_init(&out);
    for (size_t k = 0; k < sizeof(units) / sizeof(units[0]); k++) {
        fill_repeat(&in, units[k].unit, strlen(units[k].unit), MIB);
        time_scrub(NULL, units[k].name, &in, &out);
    }
    /* all digits: not a card, unchanged */
    fill_repeat(&in, "4", 1, MIB);
    time_scrub(NULL, "all digits", &in, &out);
    assert_int_equal(out.len, in.len);
    assert_memory_equal(out.data, in.data, in.len);
    /* one long line of mixed printable text with secrets sprinkled in */
    sh_buf_reset(&in);
    srand(12345);
    while (in.len < MIB) {
        int r = rand() % 100;
        if (r == 0)
            sh_buf_append_str(&in, " password=abc ");
        else if (r == 1)
            sh_buf_append_str(&in, " bob@example.com ");
        else
            sh_buf_append_byte(&in, (char)(' ' + rand() % 95));
    }
    time_scrub(NULL, "random printable 1 MiB", &in, &out);
    /* random bytes: invalid UTF-8 and NULs */
    sh_buf_reset(&in);
    while (in.len < MIB)
        sh_buf_append_byte(&in, (char)(rand() & 0xff));
    time_scrub(NULL, "random bytes 1 MiB", &in, &out);
    fill_repeat(&in, "\0\xff", 2, MIB);
    time_scrub(NULL, "NUL 0xff repeated", &in, &out);
    assert_int_equal(out.len, in.len);
    /* the configured patterns on a long line */
    const char *pats[] = {"ACME-[0-9]{6}", "[a-z]+@[a-z]+\\.internal", "(a|aa)+b", "[^ ]+=[^ ]+;x",
                          ".*secret"};
    char err[256];
    sh_scrubber *s = NULL;
    assert_int_equal(sh_scrubber_new(&s, pats, 5, err, sizeof(err)), 0);
    fill_repeat(&in, "ACME-12345", 10, MIB);
    time_scrub(s, "patterns: near misses, no blank", &in, &out);
    fill_repeat(&in, "ACME-123456 ", 12, MIB);
    time_scrub(s, "patterns: every token matches", &in, &out);
    fill_repeat(&in, "a", 1, MIB);
    time_scrub(s, "patterns: one 1 MiB word", &in, &out);
    fill_repeat(&in, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa ", 52, MIB);
    time_scrub(s, "patterns: 51-byte words", &in, &out);
    sh_scrubber_free(s);
    /* a one-byte pattern on every byte: output stays bounded */
    const char *every[] = {"[a-z]", "[A-Z]"};
    assert_int_equal(sh_scrubber_new(&s, every, 2, err, sizeof(err)), 0);
    time_scrub(s, "patterns: every byte matches", &in, &out);
    assert_true(out.len <= 19 * in.len);
    sh_scrubber_free(s);
    sh_buf_free(&in);
    sh_buf_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_secret_corpus),
        cmocka_unit_test(test_clean_corpus),
        cmocka_unit_test(test_rules),
        cmocka_unit_test(test_context_secrets),
        cmocka_unit_test(test_punct_values),
        cmocka_unit_test(test_url_passwords),
        cmocka_unit_test(test_prose_and_paths),
        cmocka_unit_test(test_stats_and_null),
        cmocka_unit_test(test_bytes_pass_through),
        cmocka_unit_test(test_patterns),
        cmocka_unit_test(test_pattern_errors),
        cmocka_unit_test(test_hostile),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

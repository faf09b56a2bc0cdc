/*
 * Message normalisation: one forward pass over the bytes of an error
 * message that replaces its variable parts with typed placeholders.
 *
 * Rules. A token is replaced only where it is not glued to a letter or
 * digit on its left ('_', '-', '/', punctuation and space are boundaries;
 * any non-ASCII byte counts as a letter) nor, unless stated, on its right.
 *   <ts>    ISO-8601 / RFC 3339 date-times (T or space, fraction with '.'
 *           or ',', Z / +02:00 / -0700 / " UTC" zones), bare dates
 *           2024-05-01 and 2024/05/01, clock times H:MM:SS(.123), syslog
 *           "Jan  2 15:04:05", ctime "Tue May 11 09:12:01 2024", common log
 *           format "10/Oct/2000:13:55:36 -0700", HTTP dates
 *           "Tue, 15 Nov 1994 08:12:31 GMT", "01 May 2024 12:00:00" and
 *           Erlang's "1-May-2024::12:00:00.123". One timestamp, one <ts>.
 *   <dur>   a number plus a time unit, glued or after one space: ns us µs
 *           ms s sec secs second seconds min mins minute minutes h hr hrs
 *           hour hours d day days (lower case, whole word).
 *   <size>  a number plus a data size unit, glued or after one space: B kB
 *           KB MB GB TB PB KiB MiB GiB TiB byte bytes (whole word).
 *   <int> <float> <ver>  digit runs (with a leading '-' when that is not
 *           glued to a letter or digit), decimals (1.5, 1.5e-3), and
 *           dotted runs of three or more parts: 1.14.0 -> <ver>. A number glued to a letter on its
 *           right stays as written (3rd, 42abc, 1.2.3rc1), and so does a
 *           word with digits (utf8, v2, sha256, x86, v1.2.3).
 *           Arity: "/N" stays when the token before the slash (back to a
 *           byte that cannot be in an identifier path) starts with a
 *           letter, '_' or ':', holds no '/', and contains '.' or ':', or
 *           ends in '?' or '!', or follows '&': Foo.bar/2, Kernel.+/2,
 *           :erlang.binary_to_atom/2, lists:map/2, is_valid?/1, &foo/1,
 *           Enum."-map/2-fun-0-"/2. Never inside a URL.
 *   <hex>   0x + 1..7 hex digits; bare hex runs of >= 8 chars holding a
 *           digit and a letter a-f (any case), or of >= 16 chars. An
 *           all-digit run is a number. <addr>: 0x + >= 8 hex digits.
 *   <uuid>  8-4-4-4-12 hex, any case.
 *   <ip>    IPv4 (octets <= 255) with an optional :port; IPv6 with "::" or
 *           at least 5 groups (so clock times and "key: value" never are),
 *           embedded IPv4, %zone, and "[v6]:port" as a whole.
 *   <email> local@domain.tld (tld: >= 2 letters).
 *   URLs    scheme://: the scheme stays, userinfo is dropped, host and port
 *           become <host>, the path is normalised by these rules, query
 *           values become <val> (keys stay, empty values stay empty) and
 *           the fragment is dropped. Whitespace, quotes, <>{}|\^`)] and
 *           non-ASCII end a URL; trailing . , ; : ! are left outside it.
 *   <str>   a quoted value ("..." or '...', backslash escapes, bounded by
 *           the end of input) right after '=' or after a ':' that follows
 *           a non-space (one space allowed between): key="v", name: "bob",
 *           "id":"abc". A quote after " :" is an atom (:"foo") and stays,
 *           and so does a quoted string anywhere else.
 *   <pid> <ref> <port> <fun>  #PID<0.1.0> and <0.1.0>; #Reference<..>
 *           and #Ref<..>; #Port<0.5>; #Function<...> (up to its '>').
 *   <args>  GenServer.call( GenServer.cast( :gen_server.call(
 *           :gen_statem.call( GenStateMachine.call( Agent.get(
 *           Agent.update( Task.await( and Erlang's gen_server:call(
 *           gen_statem:call(: the first argument is normalised (spaces
 *           around it dropped), the rest up to the matching ')' becomes
 *           ", <args>". In a tuple {Mod, :fun, [..] / {mod,fun,[..] the
 *           list becomes <args>. Brackets are matched in one forward pass
 *           that skips quoted strings; an unclosed one runs to the end.
 * Bytes: invalid UTF-8 becomes U+FFFD (one per byte); control bytes other
 * than \n count as spaces and tabs as spaces; a run of spaces becomes one
 * space; spaces before a newline and whitespace at both ends go; newlines
 * inside stay, and indentation after one becomes a single space.
 *
 * Cost: O(n). Every recogniser looks a bounded distance ahead or consumes
 * what it scans; backward looks are bounded or disjoint; unbounded scans
 * that fail are remembered (e-mail) or their bytes copied at once.
 *
 * Output size: a placeholder can be longer than its text (a lone "7"
 * gives "<int>", a bad byte gives 3 bytes; the worst case is 5 * len + 16,
 * the bound the header states). The buffer is reserved for 2*len+16 up
 * front and grows only when a placeholder would eat into that margin.
 */
#include "self_heal/normalize.h"

#include <string.h>

/* ------------------------------------------------------------------ *
 * Character tables (constant expressions, so no init and no races)
 * ------------------------------------------------------------------ */

enum {
    K_PLAIN,
    K_WS,
    K_NL,
    K_DIGIT,
    K_ALPHA,
    K_HIGH,
    K_HASH,
    K_LT,
    K_QUOTE,
    K_MINUS,
    K_COLON,
    K_LBRACK
};

#define IS_D(c) ((c) >= '0' && (c) <= '9')
#define IS_LO(c) ((c) >= 'a' && (c) <= 'z')
#define IS_UP(c) ((c) >= 'A' && (c) <= 'Z')
#define IS_A(c) (IS_LO(c) || IS_UP(c))
#define IS_X(c) (IS_D(c) || ((c) >= 'a' && (c) <= 'f') || ((c) >= 'A' && (c) <= 'F'))

#define KIND(c)                                                                                    \
    ((c) >= 0x80                 ? K_HIGH                                                          \
     : IS_D(c)                   ? K_DIGIT                                                         \
     : IS_A(c)                   ? K_ALPHA                                                         \
     : (c) == ' ' || (c) == '\t' ? K_WS                                                            \
     : (c) == '\n'               ? K_NL                                                            \
     : (c) < 0x20 || (c) == 0x7f ? K_WS                                                            \
     : (c) == '#'                ? K_HASH                                                          \
     : (c) == '<'                ? K_LT                                                            \
     : (c) == '"' || (c) == '\'' ? K_QUOTE                                                         \
     : (c) == '-'                ? K_MINUS                                                         \
     : (c) == ':'                ? K_COLON                                                         \
     : (c) == '['                ? K_LBRACK                                                        \
                                 : K_PLAIN)

#define B_DIGIT 0x01u
#define B_HEX 0x02u
#define B_ALPHA 0x04u
#define B_WORD 0x08u  /* ASCII letter or digit, or any byte >= 0x80 */
#define B_IDENT 0x10u /* may appear in an identifier path (arity rule) */
#define B_LOCAL 0x20u /* e-mail local part */
#define B_USTOP 0x40u /* ends a URL */
#define B_SCHEME 0x80u

#define FLAGS(c)                                                                                   \
    ((IS_D(c) ? B_DIGIT : 0u) | (IS_X(c) ? B_HEX : 0u) | (IS_A(c) ? B_ALPHA : 0u) |                \
     (IS_D(c) || IS_A(c) || (c) >= 0x80 ? B_WORD : 0u) |                                           \
     (IS_D(c) || IS_A(c) || (c) == '_' || (c) == '.' || (c) == ':' || (c) == '?' || (c) == '!'     \
          ? B_IDENT                                                                                \
          : 0u) |                                                                                  \
     (IS_D(c) || IS_A(c) || (c) == '.' || (c) == '_' || (c) == '%' || (c) == '+' || (c) == '-'     \
          ? B_LOCAL                                                                                \
          : 0u) |                                                                                  \
     ((c) <= 0x20 || (c) >= 0x7f || (c) == '"' || (c) == '\'' || (c) == '<' || (c) == '>' ||       \
              (c) == '`' || (c) == '\\' || (c) == '|' || (c) == '{' || (c) == '}' || (c) == '^' || \
              (c) == ')' || (c) == ']'                                                             \
          ? B_USTOP                                                                                \
          : 0u) |                                                                                  \
     (IS_D(c) || IS_A(c) || (c) == '+' || (c) == '.' || (c) == '-' ? B_SCHEME : 0u))

#define R4(m, c) m(c), m((c) + 1), m((c) + 2), m((c) + 3)
#define R16(m, c) R4(m, c), R4(m, (c) + 4), R4(m, (c) + 8), R4(m, (c) + 12)
#define R64(m, c) R16(m, c), R16(m, (c) + 16), R16(m, (c) + 32), R16(m, (c) + 48)
#define R256(m) R64(m, 0), R64(m, 64), R64(m, 128), R64(m, 192)

static const unsigned char kind_of[256] = {R256(KIND)};
static const unsigned char flags_of[256] = {R256(FLAGS)};

#define HAS(c, b) ((flags_of[(unsigned char)(c)] & (b)) != 0)

/* ------------------------------------------------------------------ *
 * Scanner state and output
 * ------------------------------------------------------------------ */

typedef struct nz {
    const unsigned char *s;
    size_t len;       /* whole input */
    size_t end;       /* limit of the current (sub-)scan */
    sh_buf *out;      /* data/len/cap are synced only when growing */
    char *d;          /* out->data */
    size_t n;         /* bytes written (out->len) */
    size_t cap;       /* out->cap */
    size_t n0;        /* out->len on entry: nothing written yet if n == n0 */
    size_t pend_nl;   /* newlines seen since the last output */
    int pend_sp;      /* a space/tab/control byte since the last output */
    int oom;          /* allocation failed: placeholders are no longer written */
    int in_url;       /* scanning a URL path: no URLs, no arity, no <args> */
    int in_args;      /* scanning a first argument: no nested <args> call */
    size_t next_at;   /* position of the next '@' at or after the cursor */
    size_t next_url;  /* position of the next "://" at or after the cursor */
    size_t email_end; /* e-mail starts before this are known to fail */
    size_t fun_from;  /* no '>' and no newline in [fun_from, fun_to): what */
    size_t fun_to;    /* the last "#Function<" looked through */
} nz;

/* The byte at k, or 0 at and past the end of the current scan. NUL is no
 * pattern character and no word character, so it reads like the end. */
static inline unsigned ch(const nz *z, size_t k)
{
    return k < z->end ? z->s[k] : 0u;
}

static inline int is_word(unsigned c)
{
    return HAS(c, B_WORD);
}

static inline int is_digit(unsigned c)
{
    return HAS(c, B_DIGIT);
}

static inline int prev_word(const nz *z, size_t i)
{
    return i > 0 && is_word(z->s[i - 1]);
}

static void flush_ws_slow(nz *z)
{
    if (z->n > z->n0) {
        for (; z->pend_nl > 0; z->pend_nl--)
            z->d[z->n++] = '\n';
        if (z->pend_sp)
            z->d[z->n++] = ' ';
    }
    z->pend_nl = 0;
    z->pend_sp = 0;
}

static inline void flush_ws(nz *z)
{
    if (z->pend_nl)
        flush_ws_slow(z);
    else if (z->pend_sp) {
        if (z->n > z->n0)
            z->d[z->n++] = ' ';
        z->pend_sp = 0;
    }
}

/* Literal output: writes at most as many bytes as it consumes (plus the
 * owed whitespace), so the reserve invariant of put_ph covers it. */
static inline void put_lit(nz *z, size_t from, size_t to)
{
    flush_ws(z);
    memcpy(z->d + z->n, z->s + from, to - from);
    z->n += to - from;
}

static inline void put_byte(nz *z, char c)
{
    flush_ws(z);
    z->d[z->n++] = c;
}

/* Writes a placeholder for input that ends at `to` (exclusive). Invariant:
 * cap - n >= 2 * (len - cursor) + owed whitespace + 8. Literal output
 * writes at most one byte per input byte consumed (plus the owed
 * whitespace), so only placeholders check it; the initial 2 * len + 16
 * satisfies it. */
static void put_ph(nz *z, size_t to, const char *ph, size_t m)
{
    if (z->oom)
        return;
    size_t need = m + 2 * (z->len - to) + z->pend_nl + 1 + 8;
    if (z->cap - z->n < need) {
        z->out->len = z->n;
        if (sh_buf_reserve(z->out, need + 64) != 0) {
            z->oom = 1;
            return;
        }
        z->d = z->out->data;
        z->cap = z->out->cap;
    }
    flush_ws(z);
    memcpy(z->d + z->n, ph, m);
    z->n += m;
}

#define PH(z, to, lit) put_ph((z), (to), (lit), sizeof(lit) - 1)

static void scan(nz *z, size_t i, size_t end);

/* ------------------------------------------------------------------ *
 * Small lexical helpers
 * ------------------------------------------------------------------ */

static size_t digit_run(const nz *z, size_t k)
{
    size_t j = k;
    while (is_digit(ch(z, j)))
        j++;
    return j - k;
}

/* Exactly two digits at k, returned as a value, or -1. */
static int two_digits(const nz *z, size_t k)
{
    unsigned a = ch(z, k), b = ch(z, k + 1);
    if (!is_digit(a) || !is_digit(b))
        return -1;
    return (int)(a - '0') * 10 + (int)(b - '0');
}

static int lit_at(const nz *z, size_t k, const char *lit, size_t n)
{
    return k <= z->end && z->end - k >= n && memcmp(z->s + k, lit, n) == 0;
}

static const char MONTHS[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
static const char WDAYS[] = "MonTueWedThuFriSatSun";

static int name3_at(const nz *z, size_t k, const char *names, size_t count)
{
    if (k > z->end || z->end - k < 3)
        return 0;
    for (size_t t = 0; t < count; t++)
        if (memcmp(z->s + k, names + 3 * t, 3) == 0)
            return 1;
    return 0;
}

static int month_at(const nz *z, size_t k)
{
    return name3_at(z, k, MONTHS, 12);
}

static int wday_at(const nz *z, size_t k)
{
    return name3_at(z, k, WDAYS, 7);
}

/* Skips a quoted string starting at the quote at k; returns the index after
 * the closing quote, or the end of the scan when it is unterminated. */
static size_t skip_quoted(const nz *z, size_t k)
{
    unsigned char q = z->s[k];
    size_t j = k + 1;
    while (j < z->end) {
        unsigned char c = z->s[j];
        if (c == '\\')
            j += 2;
        else if (c == q)
            return j + 1;
        else
            j++;
    }
    return z->end;
}

/* A quote at k opens a string (an apostrophe inside a word does not). */
static int opens_quote(const nz *z, size_t k)
{
    unsigned char c = z->s[k];
    return c == '"' || (c == '\'' && !prev_word(z, k));
}

/* ------------------------------------------------------------------ *
 * Timestamps
 * ------------------------------------------------------------------ */

/* A zone written after a single space: " -0700", " +02:00", " UTC", " GMT". */
static size_t spaced_zone(const nz *z, size_t k)
{
    if (ch(z, k) != ' ')
        return k;
    unsigned c = ch(z, k + 1);
    if ((c == '+' || c == '-') && two_digits(z, k + 2) >= 0) {
        if (two_digits(z, k + 4) >= 0 && !is_digit(ch(z, k + 6)))
            return k + 6;
        if (ch(z, k + 4) == ':' && two_digits(z, k + 5) >= 0 && !is_digit(ch(z, k + 7)))
            return k + 7;
        return k;
    }
    if ((lit_at(z, k + 1, "UTC", 3) || lit_at(z, k + 1, "GMT", 3)) && !is_word(ch(z, k + 4)))
        return k + 4;
    return k;
}

/* H:MM or HH:MM[:SS[.frac]] then an optional zone; returns the end or 0. */
static size_t parse_time(const nz *z, size_t k, int need_sec)
{
    size_t h = digit_run(z, k);
    if (h < 1 || h > 2)
        return 0;
    int hh = h == 1 ? (int)(ch(z, k) - '0') : two_digits(z, k);
    k += h;
    if (hh > 24 || ch(z, k) != ':')
        return 0;
    int mm = two_digits(z, k + 1);
    if (mm < 0 || mm > 59 || is_digit(ch(z, k + 3)))
        return 0;
    k += 3;
    if (ch(z, k) == ':' && two_digits(z, k + 1) >= 0 && !is_digit(ch(z, k + 3))) {
        if (two_digits(z, k + 1) > 60)
            return 0;
        k += 3;
        unsigned c = ch(z, k);
        if ((c == '.' || c == ',') && is_digit(ch(z, k + 1)))
            k += 1 + digit_run(z, k + 1);
    } else if (need_sec) {
        return 0;
    }
    unsigned c = ch(z, k);
    if (c == 'Z' || c == 'z') {
        k++;
    } else if ((c == '+' || c == '-') && two_digits(z, k + 1) >= 0) {
        if (ch(z, k + 3) == ':' && two_digits(z, k + 4) >= 0)
            k += 6;
        else if (two_digits(z, k + 3) >= 0 && !is_digit(ch(z, k + 5)))
            k += 5;
        else if (!is_digit(ch(z, k + 3)))
            k += 3;
    } else {
        k = spaced_zone(z, k);
    }
    return k;
}

/* " YYYY" after a time (ctime, syslog with year). */
static size_t opt_year(const nz *z, size_t k)
{
    if (ch(z, k) == ' ' && digit_run(z, k + 1) == 4 && !is_word(ch(z, k + 5)))
        return k + 5;
    return k;
}

/* 1-2 digit day of month at k; returns its length or 0. */
static size_t day_len(const nz *z, size_t k)
{
    size_t d = digit_run(z, k);
    if (d < 1 || d > 2)
        return 0;
    int v = d == 1 ? (int)(ch(z, k) - '0') : two_digits(z, k);
    return v >= 1 && v <= 31 ? d : 0;
}

/* Timestamps that start with a digit: ISO dates (with time), common log
 * format, clock times. `dr` is the length of the digit run at i. */
static size_t match_ts_digit(const nz *z, size_t i, size_t dr)
{
    size_t k;
    if (dr == 4) {
        unsigned sep = ch(z, i + 4);
        if (sep != '-' && sep != '/')
            return 0;
        int mo = two_digits(z, i + 5), dd = two_digits(z, i + 8);
        if (mo < 1 || mo > 12 || ch(z, i + 7) != sep || dd < 1 || dd > 31)
            return 0;
        k = i + 10;
        unsigned c = ch(z, k);
        size_t e = 0;
        if (c == 'T' || c == 't')
            e = parse_time(z, k + 1, 0);
        else if (c == ' ' && is_digit(ch(z, k + 1)))
            e = parse_time(z, k + 1, 1);
        if (e)
            k = e;
        return is_word(ch(z, k)) ? 0 : k - i;
    }
    if (dr > 2)
        return 0;
    unsigned sep = ch(z, i + dr);
    if ((sep == ' ' || sep == '-') && day_len(z, i)) {
        /* "01 May 2024 12:00:00.123" (Redis, RFC 1123 without the weekday),
         * Erlang "1-May-2024::12:00:00.123456", "15-Nov-1994 08:12:31" */
        k = i + dr + 1;
        if (!month_at(z, k) || ch(z, k + 3) != sep || digit_run(z, k + 4) != 4)
            return 0;
        k += 8;
        size_t e = 0;
        if (ch(z, k) == ' ')
            e = parse_time(z, k + 1, 1);
        else if (ch(z, k) == ':' && ch(z, k + 1) == ':')
            e = parse_time(z, k + 2, 1);
        if (e)
            k = e;
        return is_word(ch(z, k)) ? 0 : k - i;
    }
    if (sep == '/') {
        /* 10/Oct/2000:13:55:36 -0700 */
        k = i + dr + 1;
        if (!day_len(z, i) || !month_at(z, k) || ch(z, k + 3) != '/')
            return 0;
        k += 4;
        if (digit_run(z, k) != 4 || ch(z, k + 4) != ':')
            return 0;
        size_t e = parse_time(z, k + 5, 1);
        return e && !is_word(ch(z, e)) ? e - i : 0;
    }
    if (sep == ':') {
        size_t e = parse_time(z, i, 1);
        if (!e || is_word(ch(z, e)) || (ch(z, e) == ':' && is_word(ch(z, e + 1))))
            return 0;
        return e - i;
    }
    return 0;
}

/* Timestamps that start with a month or weekday name. */
static size_t match_ts_name(const nz *z, size_t i)
{
    unsigned c3 = ch(z, i + 3);
    size_t k, d, e;
    if (c3 == ' ' && month_at(z, i)) {
        /* syslog: "Jan  2 15:04:05", "May 11 09:12:01" */
        k = i + 4;
        if (ch(z, k) == ' ')
            k++;
        if (!(d = day_len(z, k)) || ch(z, k + d) != ' ')
            return 0;
        if (!(e = parse_time(z, k + d + 1, 1)))
            return 0;
        e = opt_year(z, e);
        return is_word(ch(z, e)) ? 0 : e - i;
    }
    if (c3 == ' ' && wday_at(z, i)) {
        /* ctime / date(1): "Tue May 11 09:12:01 2024", "... UTC 2024" */
        k = i + 4;
        if (!month_at(z, k) || ch(z, k + 3) != ' ')
            return 0;
        k += 4;
        if (ch(z, k) == ' ')
            k++;
        if (!(d = day_len(z, k)) || ch(z, k + d) != ' ')
            return 0;
        if (!(e = parse_time(z, k + d + 1, 1)))
            return 0;
        e = opt_year(z, e);
        return is_word(ch(z, e)) ? 0 : e - i;
    }
    if (c3 == ',' && ch(z, i + 4) == ' ' && wday_at(z, i)) {
        /* RFC 1123: "Tue, 15 Nov 1994 08:12:31 GMT" */
        k = i + 5;
        if (!(d = day_len(z, k)) || ch(z, k + d) != ' ')
            return 0;
        k += d + 1;
        if (!month_at(z, k) || ch(z, k + 3) != ' ' || digit_run(z, k + 4) != 4 ||
            ch(z, k + 8) != ' ')
            return 0;
        if (!(e = parse_time(z, k + 9, 1)))
            return 0;
        return is_word(ch(z, e)) ? 0 : e - i;
    }
    return 0;
}

/* ------------------------------------------------------------------ *
 * Identifiers: uuid, hex, IP addresses, e-mail
 * ------------------------------------------------------------------ */

static size_t match_uuid(const nz *z, size_t i)
{
    static const unsigned char groups[5] = {8, 4, 4, 4, 12};
    size_t k = i;
    for (int g = 0; g < 5; g++) {
        if (g > 0) {
            if (ch(z, k) != '-')
                return 0;
            k++;
        }
        for (unsigned t = 0; t < groups[g]; t++, k++)
            if (!HAS(ch(z, k), B_HEX))
                return 0;
    }
    return is_word(ch(z, k)) ? 0 : k - i;
}

/* Four dotted octets <= 255, then an optional :port. */
static size_t match_ipv4(const nz *z, size_t i, int with_port)
{
    size_t k = i;
    for (int part = 0; part < 4; part++) {
        if (part > 0) {
            if (ch(z, k) != '.')
                return 0;
            k++;
        }
        size_t d = digit_run(z, k);
        if (d < 1 || d > 3)
            return 0;
        unsigned v = 0;
        for (size_t t = 0; t < d; t++)
            v = v * 10 + (ch(z, k + t) - '0');
        if (v > 255)
            return 0;
        k += d;
    }
    if ((ch(z, k) == '.' && is_digit(ch(z, k + 1))) || is_word(ch(z, k)))
        return 0;
    if (with_port && ch(z, k) == ':') {
        size_t d = digit_run(z, k + 1);
        if (d >= 1 && d <= 5 && !is_word(ch(z, k + 1 + d)))
            k += 1 + d;
    }
    return k - i;
}

/* IPv6: hex groups of 1-4 digits separated by ':', at most one "::", an
 * optional trailing IPv4 and %zone. Needs "::" or >= 5 groups, so clock
 * times and "key: value" are never addresses. Looks at most ~70 bytes. */
static size_t match_ipv6(const nz *z, size_t i)
{
    size_t k = i;
    int groups = 0, dc = 0;
    if (ch(z, k) == ':') {
        if (ch(z, k + 1) != ':')
            return 0;
        dc = 1;
        k += 2;
    }
    for (;;) {
        size_t h = 0;
        while (h < 5 && HAS(ch(z, k + h), B_HEX))
            h++;
        if (h == 0 || h > 4)
            break;
        if (ch(z, k + h) == '.' && groups <= 6) {
            size_t m = match_ipv4(z, k, 0);
            if (m) {
                k += m;
                groups += 2;
                break;
            }
        }
        k += h;
        groups++;
        if (groups > 8 || ch(z, k) != ':')
            break;
        if (ch(z, k + 1) == ':') {
            if (dc)
                return 0;
            dc = 1;
            k += 2;
        } else if (HAS(ch(z, k + 1), B_HEX)) {
            k++;
        } else {
            break;
        }
    }
    if (groups < 1 || groups > 8 || (dc && groups > 7) || (!dc && groups < 5))
        return 0;
    if (is_word(ch(z, k)))
        return 0;
    if (ch(z, k) == '%' && HAS(ch(z, k + 1), B_ALPHA | B_DIGIT)) {
        size_t zl = 1;
        while (zl < 33 && (HAS(ch(z, k + zl), B_ALPHA | B_DIGIT) || ch(z, k + zl) == '_' ||
                           ch(z, k + zl) == '.' || ch(z, k + zl) == '-'))
            zl++;
        k += zl;
    }
    return k - i;
}

/* "[v6]" with an optional ":port", at the '['. */
static size_t match_ipv6_bracket(const nz *z, size_t i)
{
    size_t m = match_ipv6(z, i + 1);
    if (!m || ch(z, i + 1 + m) != ']')
        return 0;
    size_t k = i + 2 + m;
    if (ch(z, k) == ':') {
        size_t d = digit_run(z, k + 1);
        if (d >= 1 && d <= 5)
            k += 1 + d;
    }
    return is_word(ch(z, k)) ? 0 : k - i;
}

/* local@domain.tld with the '@' at `at`, starting at a word start i. */
static size_t match_email_at(nz *z, size_t i, size_t at)
{
    size_t k = i;
    while (k < at && HAS(z->s[k], B_LOCAL))
        k++;
    if (k != at) {
        z->email_end = k; /* every start in [i, k) stops at k too */
        return 0;
    }
    z->email_end = at; /* success consumes; failure fails for all of [i, at) */
    size_t labels = 0, last = 0;
    k = at + 1;
    for (;;) {
        size_t l = 0;
        while (l < 64 && (HAS(ch(z, k + l), B_ALPHA | B_DIGIT) || ch(z, k + l) == '-'))
            l++;
        if (l == 0 || l == 64)
            return 0;
        last = k;
        labels++;
        k += l;
        if (labels < 32 && ch(z, k) == '.' && HAS(ch(z, k + 1), B_ALPHA | B_DIGIT))
            k++;
        else
            break;
    }
    if (labels < 2 || k - last < 2 || is_word(ch(z, k)))
        return 0;
    for (size_t t = last; t < k; t++)
        if (!HAS(z->s[t], B_ALPHA))
            return 0;
    return k - i;
}

static inline size_t match_email(nz *z, size_t i)
{
    if (i < z->email_end)
        return 0;
    if (z->next_at < i) {
        const void *p = memchr(z->s + i, '@', z->len - i);
        z->next_at = p ? (size_t)((const unsigned char *)p - z->s) : z->len;
    }
    size_t at = z->next_at;
    if (at >= z->end || at - i > 64)
        return 0;
    return match_email_at(z, i, at);
}

/* ------------------------------------------------------------------ *
 * Numbers
 * ------------------------------------------------------------------ */

enum { T_NONE, T_INT, T_FLOAT, T_VER, T_DUR, T_HEX, T_ADDR, T_UUID, T_IP, T_TS, T_SIZE };

static const char *const PH_TEXT[] = {"",       "<int>",  "<float>", "<ver>", "<dur>", "<hex>",
                                      "<addr>", "<uuid>", "<ip>",    "<ts>",  "<size>"};
static const unsigned char PH_LEN[] = {0, 5, 7, 5, 5, 5, 6, 6, 4, 4, 6};

/* Is w[0..n) one of the time unit words (lower case; "µs" is separate)? */
static int is_unit(const unsigned char *w, size_t n)
{
    static const char *const UNITS[] = {
        "ns",     "us",      "ms", "s",  "sec", "secs", "second", "seconds", "min", "mins",
        "minute", "minutes", "h",  "hr", "hrs", "hour", "hours",  "d",       "day", "days"};
    for (size_t u = 0; u < sizeof UNITS / sizeof UNITS[0]; u++) {
        size_t t = 0;
        while (t < n && UNITS[u][t] == (char)w[t])
            t++;
        if (t == n && UNITS[u][n] == '\0') /* w holds no NUL, so [n] is in range */
            return 1;
    }
    return 0;
}

/* A time unit right after a number ending at j (optionally after one
 * space); returns the length from j, or 0. */
static size_t unit_len(const nz *z, size_t j)
{
    size_t k = ch(z, j) == ' ' ? j + 1 : j;
    unsigned c = ch(z, k);
    if ((c == 0xC2 && ch(z, k + 1) == 0xB5) || (c == 0xCE && ch(z, k + 1) == 0xBC))
        return ch(z, k + 2) == 's' && !is_word(ch(z, k + 3)) ? k + 3 - j : 0;
    if (c != 'n' && c != 'u' && c != 'm' && c != 's' && c != 'h' && c != 'd')
        return 0;
    size_t m = k;
    while (m - k < 8 && IS_LO(ch(z, m)))
        m++;
    if (is_word(ch(z, m)) || m - k > 7)
        return 0;
    return is_unit(z->s + k, m - k) ? m - j : 0;
}

/* A data size unit right after a number ending at j (optionally after one
 * space): B, kB, KB, MB, GB, TB, PB, KiB, MiB, GiB, TiB, byte(s) as whole
 * words; returns the length from j, or 0. */
static size_t size_unit_len(const nz *z, size_t j)
{
    static const char *const UNITS[] = {"B",   "kB",  "KB",  "MB",  "GB",   "TB",   "PB",
                                        "KiB", "MiB", "GiB", "TiB", "byte", "bytes"};
    size_t k = ch(z, j) == ' ' ? j + 1 : j;
    size_t m = k;
    while (m - k < 6 && IS_A(ch(z, m)))
        m++;
    if (m == k || m - k > 5 || is_word(ch(z, m)))
        return 0;
    for (size_t u = 0; u < sizeof UNITS / sizeof UNITS[0]; u++)
        if (strlen(UNITS[u]) == m - k && memcmp(UNITS[u], z->s + k, m - k) == 0)
            return m - j;
    return 0;
}

/* Is the digit run after the slash at `slash` the arity of a function
 * reference? See the rule at the top of the file. */
static int is_arity(const nz *z, size_t slash)
{
    const unsigned char *s = z->s;
    size_t lim = slash > 256 ? slash - 256 : 0;
    size_t k = slash, name_end = slash;
    if (slash == 0)
        return 0;
    /* a quoted function name after a module: Enum."-map/2-fun-0-"/2 */
    if (s[slash - 1] == '"') {
        for (k = slash - 1; k > lim && s[k - 1] != '"' && s[k - 1] != '\n'; k--)
            ;
        return k > lim + 1 && s[k - 1] == '"' && s[k - 2] == '.';
    }
    /* operator functions: Kernel.+/2, :erlang.=</2 */
    while (k > lim && strchr("+-*<>=|&^~", s[k - 1]) && s[k - 1] != '\0')
        k--;
    if (k < slash) {
        if (k == 0 || s[k - 1] != '.')
            return 0;
        name_end = k;
    }
    while (k > lim && HAS(s[k - 1], B_IDENT))
        k--;
    if (k == name_end || (k > 0 && (s[k - 1] == '/' || HAS(s[k - 1], B_IDENT))))
        return 0;
    unsigned first = s[k], last = s[slash - 1];
    if (!(IS_A(first) || first == '_' || first == ':'))
        return 0;
    if (first == ':' || last == '?' || last == '!' || (k > 0 && s[k - 1] == '&'))
        return 1;
    for (size_t t = k; t < slash; t++)
        if (s[t] == '.' || s[t] == ':')
            return 1;
    return 0;
}

/* A number at i (a digit): int, float, version or duration. Returns 0 when
 * it is glued to a letter or is an arity, which are copied as written. */
static size_t match_number(const nz *z, size_t i, size_t dr, int *t)
{
    size_t j = i + dr;
    int parts = 1;
    while (ch(z, j) == '.' && is_digit(ch(z, j + 1))) {
        j += 1 + digit_run(z, j + 1);
        parts++;
    }
    if (parts == 2 && (ch(z, j) == 'e' || ch(z, j) == 'E')) {
        size_t k = j + 1;
        if (ch(z, k) == '+' || ch(z, k) == '-')
            k++;
        if (is_digit(ch(z, k)))
            j = k + digit_run(z, k);
    }
    if (parts >= 3) {
        *t = T_VER;
        return is_word(ch(z, j)) ? 0 : j - i;
    }
    size_t u = unit_len(z, j);
    if (u) {
        *t = T_DUR;
        return j + u - i;
    }
    if ((u = size_unit_len(z, j)) != 0) {
        *t = T_SIZE;
        return j + u - i;
    }
    if (is_word(ch(z, j)))
        return 0;
    if (parts == 2) {
        *t = T_FLOAT;
        return j - i;
    }
    if (!z->in_url && i > 0 && z->s[i - 1] == '/' && is_arity(z, i - 1))
        return 0;
    *t = T_INT;
    return j - i;
}

/* Everything that can start with a digit at a word start. */
static size_t classify_digit(const nz *z, size_t i, int *t)
{
    size_t dr = digit_run(z, i), hr = dr, m;
    unsigned c1 = ch(z, i + 1);
    if (z->s[i] == '0' && (c1 == 'x' || c1 == 'X')) {
        size_t h = 0;
        while (HAS(ch(z, i + 2 + h), B_HEX))
            h++;
        if (h >= 1 && !is_word(ch(z, i + 2 + h))) {
            *t = h >= 8 ? T_ADDR : T_HEX;
            return h + 2;
        }
    }
    if (HAS(ch(z, i + dr), B_HEX))
        while (HAS(ch(z, i + hr), B_HEX))
            hr++;
    if (hr == 8 && ch(z, i + 8) == '-' && (m = match_uuid(z, i))) {
        *t = T_UUID;
        return m;
    }
    if ((m = match_ts_digit(z, i, dr))) {
        *t = T_TS;
        return m;
    }
    if (dr <= 3 && ch(z, i + dr) == '.' && (m = match_ipv4(z, i, 1))) {
        *t = T_IP;
        return m;
    }
    if (hr <= 4 && ch(z, i + hr) == ':' && (m = match_ipv6(z, i))) {
        *t = T_IP;
        return m;
    }
    if (hr > dr && hr >= 8 && !is_word(ch(z, i + hr))) {
        *t = T_HEX;
        return hr;
    }
    return match_number(z, i, dr, t);
}

/* uuid, IPv6 or a bare hex run starting with a hex letter. */
static size_t classify_hex_letter(const nz *z, size_t i, int *t)
{
    size_t hr = 0, m;
    int digit = 0;
    while (HAS(ch(z, i + hr), B_HEX)) {
        digit |= is_digit(ch(z, i + hr));
        hr++;
    }
    if (hr == 8 && ch(z, i + 8) == '-' && (m = match_uuid(z, i))) {
        *t = T_UUID;
        return m;
    }
    if (hr <= 4 && ch(z, i + hr) == ':' && (m = match_ipv6(z, i))) {
        *t = T_IP;
        return m;
    }
    if (hr >= 8 && (digit || hr >= 16) && !is_word(ch(z, i + hr))) {
        *t = T_HEX;
        return hr;
    }
    return 0;
}

/* ------------------------------------------------------------------ *
 * URLs
 * ------------------------------------------------------------------ */

/* Position of the first "://" at or after p, or len. Searches for the
 * slashes: error messages hold far more colons (times, "key: value") than
 * slashes. */
static size_t find_url(const nz *z, size_t p)
{
    size_t q = p + 1; /* a '/' at q with ':' at q - 1 */
    while (q + 1 < z->len) {
        const unsigned char *c = memchr(z->s + q, '/', z->len - q - 1);
        if (!c)
            break;
        q = (size_t)(c - z->s);
        if (c[1] == '/' && c[-1] == ':')
            return q - 1;
        q += c[1] == '/' ? 2 : 1;
    }
    return z->len;
}

/* If a "scheme://" starts at i, returns the index of its ':'; else 0. */
static size_t url_scheme_end(nz *z, size_t i)
{
    if (z->next_url < i)
        z->next_url = find_url(z, i);
    size_t k = z->next_url;
    if (k >= z->end || k == i || k - i > 32 || k + 3 > z->end || !IS_A(z->s[i]))
        return 0;
    for (size_t t = i; t < k; t++)
        if (!HAS(z->s[t], B_SCHEME))
            return 0;
    return k;
}

static int trailing_punct(unsigned c)
{
    return c == '.' || c == ',' || c == ';' || c == ':' || c == '!';
}

/* Drops trailing sentence punctuation from [from, to) when it ends the URL. */
static size_t trim_url_end(const nz *z, size_t from, size_t to)
{
    if (to < z->end && !HAS(z->s[to], B_USTOP))
        return to;
    while (to > from && trailing_punct(z->s[to - 1]))
        to--;
    return to;
}

static size_t do_url(nz *z, size_t i, size_t colon)
{
    const unsigned char *s = z->s;
    size_t a = colon + 3, p = a;
    put_lit(z, i, a);
    int bracket = ch(z, a) == '[';
    while (p < z->end) {
        unsigned c = s[p];
        if (c == '/' || c == '?' || c == '#' || c == ',' || c == ';' ||
            (HAS(c, B_USTOP) && !(bracket && c == ']')))
            break;
        p++;
    }
    p = trim_url_end(z, a, p);
    if (p > a)
        PH(z, p, "<host>");
    if (p < z->end && s[p] == '/') {
        size_t pe = p;
        while (pe < z->end && !HAS(s[pe], B_USTOP) && s[pe] != '?' && s[pe] != '#')
            pe++;
        pe = trim_url_end(z, p, pe);
        int old_url = z->in_url, old_args = z->in_args;
        z->in_url = z->in_args = 1;
        scan(z, p, pe);
        z->in_url = old_url;
        z->in_args = old_args;
        p = pe;
    }
    if (p < z->end && s[p] == '?') {
        put_byte(z, '?');
        p++;
        for (;;) {
            size_t k = p;
            while (k < z->end && !HAS(s[k], B_USTOP) && s[k] != '=' && s[k] != '&' && s[k] != '#')
                k++;
            size_t ke = trim_url_end(z, p, k);
            put_lit(z, p, ke);
            if (ke < k)
                return ke;
            p = k;
            if (p < z->end && s[p] == '=') {
                put_byte(z, '=');
                size_t v = ++p;
                while (p < z->end && !HAS(s[p], B_USTOP) && s[p] != '&' && s[p] != '#')
                    p++;
                size_t ve = trim_url_end(z, v, p);
                if (ve > v)
                    PH(z, ve, "<val>");
                if (ve < p)
                    return ve;
            }
            if (p < z->end && s[p] == '&') {
                put_byte(z, '&');
                p++;
                continue;
            }
            break;
        }
    }
    if (p < z->end && s[p] == '#') {
        size_t f = p;
        while (f < z->end && !HAS(s[f], B_USTOP))
            f++;
        size_t fe = trim_url_end(z, p, f);
        return fe > p ? fe : p + 1;
    }
    return p;
}

/* ------------------------------------------------------------------ *
 * <args>
 * ------------------------------------------------------------------ */

typedef struct callee {
    const char *name;
    unsigned char len;
} callee;

static const callee CALLEES[] = {
    {"GenServer.call(", 15},   {"GenServer.cast(", 15},   {"GenStateMachine.call(", 21},
    {"Agent.get(", 10},        {"Agent.update(", 13},     {"Task.await(", 11},
    {":gen_server.call(", 17}, {":gen_statem.call(", 17}, {"gen_server:call(", 16},
    {"gen_statem:call(", 16},
};

/* Length of a call whose extra arguments collapse, starting at i, or 0. */
static size_t match_callee(const nz *z, size_t i)
{
    unsigned c = z->s[i];
    for (size_t t = 0; t < sizeof CALLEES / sizeof CALLEES[0]; t++)
        if ((unsigned char)CALLEES[t].name[0] == c && lit_at(z, i, CALLEES[t].name, CALLEES[t].len))
            return CALLEES[t].len;
    return 0;
}

static size_t do_args(nz *z, size_t i, size_t plen)
{
    const unsigned char *s = z->s;
    size_t a = i + plen, k = a, comma = 0, close = z->end;
    int depth = 0, have_comma = 0, have_close = 0;
    while (k < z->end) {
        unsigned c = s[k];
        if ((c == '"' || c == '\'') && opens_quote(z, k)) {
            k = skip_quoted(z, k);
            continue;
        }
        if (c == '(' || c == '[' || c == '{') {
            depth++;
        } else if (c == ')' || c == ']' || c == '}') {
            if (depth > 0) {
                depth--;
            } else if (c == ')') {
                close = k;
                have_close = 1;
                break;
            }
        } else if (c == ',' && depth == 0 && !have_comma) {
            comma = k;
            have_comma = 1;
        }
        k++;
    }
    put_lit(z, i, a);
    size_t fs = a, fe = have_comma ? comma : close;
    while (fs < fe && (s[fs] == ' ' || s[fs] == '\t'))
        fs++;
    int old = z->in_args;
    z->in_args = 1;
    scan(z, fs, fe);
    z->in_args = old;
    z->pend_sp = 0;
    z->pend_nl = 0;
    if (!have_comma)
        return close;
    PH(z, close, ", <args>");
    if (have_close) {
        put_byte(z, ')');
        return close + 1;
    }
    return close;
}

/* Start of an atom/alias token ending at k (exclusive), or SIZE_MAX. */
static size_t atom_back(const nz *z, size_t k)
{
    const unsigned char *s = z->s;
    if (k == 0)
        return SIZE_MAX;
    size_t lim = k > 256 ? k - 256 : 0, st;
    unsigned q = s[k - 1];
    if (q == '"' || q == '\'') {
        st = k - 1;
        while (st > lim && s[st - 1] != q)
            st--;
        if (st == lim)
            return SIZE_MAX;
        st--;
    } else {
        st = k;
        while (st > lim &&
               (HAS(s[st - 1], B_ALPHA | B_DIGIT) || s[st - 1] == '_' || s[st - 1] == '.' ||
                s[st - 1] == '?' || s[st - 1] == '!' || s[st - 1] == '@'))
            st--;
        if (st == k || !(IS_A(s[st]) || s[st] == '_'))
            return SIZE_MAX;
    }
    if (st > 0 && s[st - 1] == ':')
        st--;
    return st;
}

static size_t skip_sp_back(const nz *z, size_t k)
{
    while (k > 0 && z->s[k - 1] == ' ')
        k--;
    return k;
}

/* Is the '[' at i the third element of {Mod, :fun, [ ... ? */
static int mfa_context(const nz *z, size_t i)
{
    const unsigned char *s = z->s;
    size_t k = skip_sp_back(z, i);
    for (int el = 0; el < 2; el++) {
        if (k == 0 || s[k - 1] != ',')
            return 0;
        k = atom_back(z, skip_sp_back(z, k - 1));
        if (k == SIZE_MAX)
            return 0;
        k = skip_sp_back(z, k);
    }
    return k > 0 && s[k - 1] == '{';
}

/* The list starting at the '[' at i: returns the index after its ']' (or
 * the end of the scan when it is not closed). */
static size_t skip_list(const nz *z, size_t i)
{
    size_t k = i + 1;
    int depth = 0;
    while (k < z->end) {
        unsigned c = z->s[k];
        if ((c == '"' || c == '\'') && opens_quote(z, k)) {
            k = skip_quoted(z, k);
            continue;
        }
        if (c == '[') {
            depth++;
        } else if (c == ']') {
            if (depth == 0)
                return k + 1;
            depth--;
        }
        k++;
    }
    return z->end;
}

/* ------------------------------------------------------------------ *
 * Erlang terms
 * ------------------------------------------------------------------ */

/* groups of 1-20 digits separated by '.', between min and max groups,
 * then '>'; returns the index after '>' or 0. */
static size_t dotted_gt(const nz *z, size_t k, int min, int max)
{
    int g = 0;
    for (;;) {
        size_t d = digit_run(z, k);
        if (d < 1 || d > 20)
            return 0;
        k += d;
        g++;
        if (ch(z, k) == '.' && g < max) {
            k++;
            continue;
        }
        break;
    }
    return g >= min && ch(z, k) == '>' ? k + 1 : 0;
}

static size_t on_hash(nz *z, size_t i)
{
    size_t e;
    if (lit_at(z, i, "#PID<", 5) && (e = dotted_gt(z, i + 5, 3, 3))) {
        PH(z, e, "<pid>");
        return e;
    }
    if (lit_at(z, i, "#Reference<", 11) && (e = dotted_gt(z, i + 11, 2, 8))) {
        PH(z, e, "<ref>");
        return e;
    }
    if (lit_at(z, i, "#Ref<", 5) && (e = dotted_gt(z, i + 5, 2, 8))) {
        PH(z, e, "<ref>");
        return e;
    }
    if (lit_at(z, i, "#Port<", 6) && (e = dotted_gt(z, i + 6, 2, 3))) {
        PH(z, e, "<port>");
        return e;
    }
    if (lit_at(z, i, "#Function<", 10)) {
        /* up to its '>' within 512 bytes, on the same line; the bytes the
         * last one looked through are not looked through again (a run of
         * "#Function<" without '>' would cost 50 reads a byte) */
        e = i + 10;
        if (z->fun_from <= e && e < z->fun_to)
            e = z->fun_to;
        for (; e < z->end && e < i + 512 && z->s[e] != '\n'; e++) {
            if (z->s[e] == '>') {
                PH(z, e + 1, "<fun>");
                return e + 1;
            }
        }
        z->fun_from = i + 10;
        z->fun_to = e;
    }
    put_byte(z, '#');
    return i + 1;
}

static size_t on_lt(nz *z, size_t i)
{
    size_t e;
    if (is_digit(ch(z, i + 1)) && (e = dotted_gt(z, i + 1, 3, 3))) {
        PH(z, e, "<pid>");
        return e;
    }
    put_byte(z, '<');
    return i + 1;
}

/* ------------------------------------------------------------------ *
 * Dispatch
 * ------------------------------------------------------------------ */

/* Copies a word: letters and digits, plus ".digits" tails after a digit
 * (v1.2.3, 1.2.3rc1), so nothing in it is scanned again. */
static size_t copy_word(nz *z, size_t i)
{
    const unsigned char *s = z->s;
    size_t j = i, e = z->end;
    for (;;) {
        while (j < e && HAS(s[j], B_ALPHA | B_DIGIT))
            j++;
        if (j + 1 < e && s[j] == '.' && is_digit(s[j + 1]) && is_digit(s[j - 1]))
            j++;
        else
            break;
    }
    put_lit(z, i, j);
    return j;
}

static size_t emit(nz *z, size_t i, size_t m, int t)
{
    put_ph(z, i + m, PH_TEXT[t], PH_LEN[t]);
    return i + m;
}

static size_t on_digit(nz *z, size_t i)
{
    if (prev_word(z, i))
        return copy_word(z, i);
    size_t m;
    int t = T_NONE;
    if ((m = match_email(z, i))) {
        PH(z, i + m, "<email>");
        return i + m;
    }
    if ((m = classify_digit(z, i, &t)))
        return emit(z, i, m, t);
    return copy_word(z, i);
}

static size_t on_alpha(nz *z, size_t i)
{
    if (prev_word(z, i))
        return copy_word(z, i);
    size_t m;
    int t = T_NONE;
    if ((m = match_ts_name(z, i)))
        return emit(z, i, m, T_TS);
    if (!z->in_url && (m = url_scheme_end(z, i)))
        return do_url(z, i, m);
    unsigned c = z->s[i];
    if ((c == 'G' || c == 'A' || c == 'T' || c == 'g') && !z->in_args && (m = match_callee(z, i)))
        return do_args(z, i, m);
    if ((m = match_email(z, i))) {
        PH(z, i + m, "<email>");
        return i + m;
    }
    if (HAS(z->s[i], B_HEX) && (m = classify_hex_letter(z, i, &t)))
        return emit(z, i, m, t);
    return copy_word(z, i);
}

static size_t on_minus(nz *z, size_t i)
{
    if (!prev_word(z, i) && is_digit(ch(z, i + 1))) {
        int t = T_NONE;
        size_t m = classify_digit(z, i + 1, &t);
        if (m && (t == T_INT || t == T_FLOAT || t == T_DUR))
            return emit(z, i, m + 1, t);
    }
    put_byte(z, '-');
    return i + 1;
}

static size_t on_colon(nz *z, size_t i)
{
    size_t m;
    if (!prev_word(z, i) && (i == 0 || z->s[i - 1] != ':')) {
        if (ch(z, i + 1) == ':' && (m = match_ipv6(z, i))) {
            PH(z, i + m, "<ip>");
            return i + m;
        }
        if (!z->in_args && ch(z, i + 1) == 'g' && (m = match_callee(z, i)))
            return do_args(z, i, m);
    }
    put_byte(z, ':');
    return i + 1;
}

/* A quote right after '=' or after a ':' glued to a key, optionally with
 * one space between. */
static int str_context(const nz *z, size_t i)
{
    const unsigned char *s = z->s;
    size_t k = i;
    if (k > 0 && s[k - 1] == ' ')
        k--;
    if (k == 0)
        return 0;
    if (s[k - 1] == '=')
        return 1;
    if (s[k - 1] != ':' || k < 2)
        return 0;
    unsigned b = s[k - 2];
    return b > ' ' && b != '(' && b != '[' && b != '{' && b != ',' && b != ':';
}

static size_t on_quote(nz *z, size_t i)
{
    if (str_context(z, i)) {
        size_t e = skip_quoted(z, i);
        PH(z, e, "<str>");
        return e;
    }
    put_byte(z, (char)z->s[i]);
    return i + 1;
}

static size_t on_lbrack(nz *z, size_t i)
{
    size_t m;
    if (mfa_context(z, i)) {
        size_t e = skip_list(z, i);
        PH(z, e, "<args>");
        return e;
    }
    unsigned c = ch(z, i + 1);
    if ((HAS(c, B_HEX) || c == ':') && (m = match_ipv6_bracket(z, i))) {
        PH(z, i + m, "<ip>");
        return i + m;
    }
    put_byte(z, '[');
    return i + 1;
}

static size_t on_high(nz *z, size_t i)
{
    size_t k = sh_utf8_seq_len(z->s + i, z->end - i);
    if (k) {
        size_t j = i + k;
        while (j < z->end && z->s[j] >= 0x80 && (k = sh_utf8_seq_len(z->s + j, z->end - j)))
            j += k;
        put_lit(z, i, j);
        return j;
    }
    PH(z, i + 1, "\xEF\xBF\xBD");
    return i + 1;
}

static void scan(nz *z, size_t i, size_t end)
{
    const unsigned char *s = z->s;
    size_t saved = z->end;
    z->end = end;
    while (i < end && !z->oom) {
        unsigned c = s[i], k = kind_of[c];
        /* the common kinds first: an if chain predicts better than the
         * jump table on word/space alternation */
        if (k == K_WS) {
            z->pend_sp = 1;
            i++;
            continue;
        }
        if (k == K_ALPHA) {
            i = on_alpha(z, i);
            continue;
        }
        if (k == K_PLAIN) {
            size_t j = i + 1;
            while (j < end && kind_of[s[j]] == K_PLAIN)
                j++;
            put_lit(z, i, j);
            i = j;
            continue;
        }
        switch (k) {
        case K_NL:
            z->pend_sp = 0;
            z->pend_nl++;
            i++;
            break;
        case K_DIGIT:
            i = on_digit(z, i);
            break;
        case K_HIGH:
            i = on_high(z, i);
            break;
        case K_HASH:
            i = on_hash(z, i);
            break;
        case K_LT:
            i = on_lt(z, i);
            break;
        case K_QUOTE:
            i = on_quote(z, i);
            break;
        case K_MINUS:
            i = on_minus(z, i);
            break;
        case K_COLON:
            i = on_colon(z, i);
            break;
        default: /* K_LBRACK */
            i = on_lbrack(z, i);
            break;
        }
    }
    z->end = saved;
}

int sh_normalize(sh_buf *out, const char *in, size_t len)
{
    if (len > (SIZE_MAX - 16) / 4) {
        out->oom = 1;
        return -1;
    }
    if (sh_buf_reserve(out, 2 * len + 16) != 0)
        return -1;
    if (len == 0) /* in may be NULL then */
        return 0;
    nz z;
    memset(&z, 0, sizeof z);
    z.s = (const unsigned char *)in;
    z.len = len;
    z.end = len;
    z.out = out;
    z.d = out->data;
    z.n = out->len;
    z.n0 = out->len;
    z.cap = out->cap;
    const void *at = memchr(in, '@', len);
    z.next_at = at ? (size_t)((const char *)at - in) : len;
    z.next_url = find_url(&z, 0);
    scan(&z, 0, len);
    out->len = z.n;
    return z.oom ? -1 : 0;
}

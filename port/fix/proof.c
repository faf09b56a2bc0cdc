/*
 * The regression proof (port/fix/proof.h): does a failure in a test run's
 * output reproduce the production error?
 *
 * Matching rules, in this order:
 *
 *  - Type: equal after trimming and dropping a leading "Elixir."; when both
 *    types are dotted the whole dotted names are compared, else the last
 *    segments ("builtins.KeyError" is "KeyError", "java.lang.X" is "X" when
 *    the other side is undotted). An empty target type matches any type;
 *    only the message and frames decide.
 *  - Message: the message is cut at its first blank line, at a line
 *    starting "stacktrace:" and at a line that is a stack frame; then
 *    normalised (sh_normalize), whitespace collapsed to single blanks and
 *    trimmed. Both sides must be equal. A Python message may run on after
 *    its exception line with text that is not its own: of a Python failure
 *    as many lines are compared as the target's message has.
 *  - Frames: both stacks are parsed (frames.h); every frame's file is
 *    resolved to a repository path (context_files_resolve; without a
 *    resolver the file as written minus leading "./", for frames the
 *    in-app heuristic accepts); frames that do not resolve (libraries, the
 *    runtime) and frames whose repository path is test code (is_test) are
 *    dropped. What remains are the production frames, innermost (where the
 *    exception was raised) first: Python lists its innermost frame last,
 *    the other languages first. When the first frame that resolves is test
 *    code, the failure was raised by the test code itself and never
 *    reproduces, whatever its type and message.
 *    When the target has production frames, k = min(3, production frames
 *    of the failure, production frames of the target) must be at least 1
 *    and the first k frames of both must be equal by module, function and
 *    repository path (sh_fp_frame_key with the file replaced by the
 *    repository path: line numbers never count). When the target has
 *    none (no stack trace, a language the parser does not know), the type
 *    and message alone decide and frames_matched is 0.
 *  - Fingerprint: sh_fingerprint_frames over (the compared type, the
 *    message with its lines joined by blanks, those k frames flagged
 *    in-app) on both sides must be equal; it is the result's fingerprint.
 *
 * The first failure that passes reproduces; otherwise the detail names the
 * closest one: same type, message and frames but another fingerprint;
 * then same type and message (raised by the test, no production frame,
 * other frames); then same type; then the first failure.
 *
 * Failures recognised in the log (line by line, one pass, no recursion;
 * every line looked at up to PROOF_LINE_MAX bytes; terminal colour and
 * other control sequences are dropped first):
 *
 *  - Python tracebacks: "Traceback (most recent call last):", frames
 *    `  File "...", line N, in f` with source and caret lines indented
 *    deeper, then the exception line at the indentation of the Traceback
 *    line: "pkg.Type: message" or "Type", the message running on until a
 *    blank line, a rule, another traceback or a frame. Chained exceptions
 *    ("During handling of the above exception ...", "The above exception
 *    was the direct cause ...") are one failure per traceback. unittest's
 *    ERROR:/FAIL: sections and pytest --tb=native print these.
 *  - pytest's own formats, after a "=== FAILURES ===" or "=== ERRORS ==="
 *    banner up to the next "===" line: location lines "path:N: in f"
 *    (short) or "path:N:" (long, the function from the entry's first
 *    "def f(" line), "E   Type: message" lines, and the long format's
 *    closing "path:N: Type"; each "___ test ___" section, "_ _ _" entry
 *    separator and chain sentence is a boundary; --tb=line's
 *    "path:N: Type: message" is a failure with one frame.
 *  - ExUnit and Elixir reports: "** (Type) message" (the message runs on
 *    until a blank line, "code:", "stacktrace:" or a frame; a deeper
 *    "** (Type) ..." line inside it, as in exits, is a failure too), then
 *    the frames after "stacktrace:". "** (exit) ...", "** (ErlangError)
 *    ..." and "** (CompileError) ..." are failures like any other; ExUnit
 *    assertion failures ("Assertion with == failed") are none.
 *  - JavaScript (node, mocha, jest) and Java (JUnit, uncaught): a header
 *    "Type: message" or "Type [CODE]: message" (after "Caused by: ",
 *    "Suppressed: ", "Uncaught ", "[cause]: " or `Exception in thread "x" `),
 *    followed by "at ..." frames within PROOF_PENDING_LINES lines (jest's
 *    code frame lies between); the message runs on until a blank line or
 *    the first frame. A header without a message must be followed by a
 *    frame at once. "... N more" lines stay in the frames; each
 *    "Caused by:" is a failure of its own.
 *  - node's test runner TAP output: a "not ok" test's YAML block with
 *    name, error and a stack of frames without "at".
 *  - Anything else: a line "Type: message" whose Type is the target's type
 *    (and that is no part of the blocks above): a failure without frames,
 *    so type and message decide when the target has no production frames.
 */
#include "proof.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fence.h"
#include "self_heal/frames.h"
#include "self_heal/normalize.h"

#define PROOF_TOP_FRAMES 3           /* production frames compared */
#define PROOF_PENDING_LINES 12       /* lines between a JS/Java header and its first frame */
#define PROOF_WAIT_LINES 64          /* ExUnit lines between a message and its stack trace */
#define PROOF_MSG_LINES 64           /* lines of one message */
#define PROOF_TYPE_MAX 256           /* bytes of an exception type */
#define PROOF_TARGET_MSG (64u << 10) /* bytes of the target's message looked at */
#define PROOF_STACK_SCAN (1u << 20)  /* bytes of the target's stack trace looked at */
#define PROOF_PATH_MAX 1024          /* bytes of a frame's path without a resolver */
#define PROOF_SHOW 120               /* bytes of a message or type quoted in the detail */

/* ---------------------------------------------------------------- failures */

typedef enum fail_kind { FK_PYTHON, FK_PYTEST, FK_EXUNIT, FK_STACK, FK_LINE } fail_kind;

/* A failure being read from the log. Slices point into the log. */
typedef struct fail {
    int active;
    fail_kind kind;
    int outer_first; /* frames listed outermost first (Python): the last ones are kept */
    int cmp_lines;   /* compare as many message lines as the target's message has */
    sh_slice type;
    sh_buf msg; /* message lines joined by '\n' */
    size_t msg_lines;
    int msg_open; /* still taking continuation lines */
    int has_msg;  /* JS/Java header: "Type: message" with a message */
    sh_frame frames[PROOF_MAX_FRAMES];
    size_t nframes; /* frames seen; at most PROOF_MAX_FRAMES stored */
} fail;

static void fail_start(fail *f, fail_kind kind, int outer_first, sh_slice type)
{
    f->active = 1;
    f->kind = kind;
    f->outer_first = outer_first;
    f->cmp_lines = kind == FK_PYTHON || kind == FK_PYTEST;
    f->type = type;
    sh_buf_reset(&f->msg);
    f->msg_lines = 0;
    f->msg_open = 1;
    f->has_msg = 0;
    f->nframes = 0;
}

static void fail_add_line(fail *f, const char *p, size_t n)
{
    if (!f->msg_open || f->msg_lines >= PROOF_MSG_LINES || f->msg.len >= PROOF_MESSAGE_MAX)
        return;
    if (f->msg_lines > 0)
        sh_buf_append_byte(&f->msg, '\n');
    size_t room = PROOF_MESSAGE_MAX - f->msg.len;
    sh_buf_append(&f->msg, p, n > room ? sh_utf8_truncate(p, n, room) : n);
    f->msg_lines++;
}

static void fail_add_frame(fail *f, const sh_frame *fr)
{
    if (f->outer_first)
        f->frames[f->nframes % PROOF_MAX_FRAMES] = *fr; /* a ring: the innermost stay */
    else if (f->nframes < PROOF_MAX_FRAMES)
        f->frames[f->nframes] = *fr;
    else
        return;
    f->nframes++;
}

/* The stored frames innermost first; returns how many. */
static size_t fail_order(const fail *f, const sh_frame **out)
{
    size_t n = f->nframes < PROOF_MAX_FRAMES ? f->nframes : PROOF_MAX_FRAMES;
    for (size_t i = 0; i < n; i++)
        out[i] =
            f->outer_first ? &f->frames[(f->nframes - 1 - i) % PROOF_MAX_FRAMES] : &f->frames[i];
    return n;
}

/* ---------------------------------------------------------------- the detail */

typedef struct dbuf {
    char *d;
    size_t cap;
    size_t len;
} dbuf;

static void d_put(dbuf *b, const char *s, size_t n)
{
    if (b->len + 1 >= b->cap)
        return;
    size_t room = b->cap - 1 - b->len;
    if (n > room)
        n = sh_utf8_truncate(s, n, room);
    memcpy(b->d + b->len, s, n);
    b->len += n;
    b->d[b->len] = '\0';
}

static void d_str(dbuf *b, const char *s)
{
    d_put(b, s, strlen(s));
}

/* Untrusted text: at most max bytes on a code point (then "..."), one
 * line, no control or invisible characters, invalid UTF-8 as '?',
 * backticks as quotes. */
static void d_text(dbuf *b, const char *s, size_t n, size_t max)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, used = 0;
    int cut = 0;
    while (i < n) {
        size_t k = sh_utf8_seq_len(u + i, n - i);
        if (used + (k == 0 ? 1 : k) > max) {
            cut = 1;
            break;
        }
        if (k == 0) {
            d_put(b, "?", 1);
            used++;
            i++;
            continue;
        }
        unsigned int cp = sh_utf8_cp(u + i, k);
        if (cp == '\n' || cp == '\t' || cp == '\r')
            d_put(b, " ", 1);
        else if (cp == '`')
            d_put(b, "'", 1);
        else if (!fence_unsafe_cp(cp))
            d_put(b, s + i, k);
        used += k;
        i += k;
    }
    if (cut)
        d_put(b, "...", 3);
}

/* ---------------------------------------------------------------- text helpers */

static int is_blank(char c)
{
    return c == ' ' || c == '\t';
}

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static int is_ident_start(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == '$';
}

static int is_ident(char c)
{
    return is_ident_start(c) || is_digit(c);
}

static int has(const char *p, size_t n, const char *lit)
{
    size_t m = strlen(lit);
    return n >= m && memcmp(p, lit, m) == 0;
}

static int contains(const char *p, size_t n, const char *lit)
{
    size_t m = strlen(lit);
    for (size_t i = 0; i + m <= n; i++)
        if (p[i] == lit[0] && memcmp(p + i, lit, m) == 0)
            return 1;
    return 0;
}

/* A buffer's bytes ("" before its first byte). */
static const char *bd(const sh_buf *b)
{
    return b->data != NULL ? b->data : "";
}

static sh_slice slice(const char *p, size_t n)
{
    sh_slice s = {p, n};
    return s;
}

static sh_slice trim(sh_slice s)
{
    while (s.len > 0 && is_space(s.ptr[0])) {
        s.ptr++;
        s.len--;
    }
    while (s.len > 0 && is_space(s.ptr[s.len - 1]))
        s.len--;
    return s;
}

/* A dotted identifier chain (Java, Python, Elixir, JS types) at p: its
 * length, or 0. */
static size_t type_token(const char *p, size_t n)
{
    size_t i = 0;
    for (;;) {
        if (i >= n || !is_ident_start(p[i]))
            return 0;
        while (i < n && is_ident(p[i]))
            i++;
        if (i + 1 < n && p[i] == '.' && is_ident_start(p[i + 1])) {
            i++;
            continue;
        }
        break;
    }
    return i <= PROOF_TYPE_MAX ? i : 0;
}

enum { EXC_NONE, EXC_BARE, EXC_COLON };

/* "Type: message", "Type:", "Type [CODE]: message" (with_code) or a bare
 * "Type" (the whole text); EXC_NONE when the text is none of these. */
static int parse_exc(const char *p, size_t n, int with_code, sh_slice *type, sh_slice *msg)
{
    size_t t = type_token(p, n);
    if (t == 0)
        return EXC_NONE;
    *type = slice(p, t);
    *msg = slice(p + n, 0);
    if (t == n)
        return EXC_BARE;
    size_t i = t;
    if (with_code && i + 1 < n && p[i] == ' ' && p[i + 1] == '[') {
        const char *close = memchr(p + i + 2, ']', n - i - 2);
        if (close == NULL || close == p + i + 2)
            return EXC_NONE;
        i = (size_t)(close - p) + 1;
        if (i == n)
            return EXC_BARE;
    }
    if (p[i] != ':')
        return EXC_NONE;
    if (i + 1 == n)
        return EXC_COLON;
    if (p[i + 1] != ' ')
        return EXC_NONE;
    *msg = trim(slice(p + i + 2, n - i - 2));
    return EXC_COLON;
}

/* The first max_lines lines (0: all) of p[0..n). */
static size_t lines_prefix(const char *p, size_t n, size_t max_lines)
{
    if (max_lines == 0)
        return n;
    size_t i = 0, lines = 0;
    while (i < n) {
        const char *nl = memchr(p + i, '\n', n - i);
        if (nl == NULL)
            return n;
        if (++lines == max_lines)
            return (size_t)(nl - p);
        i = (size_t)(nl - p) + 1;
    }
    return n;
}

/* A message cut as the matching rules say: lines up to the first blank
 * line (leading blank lines skipped), a "stacktrace:" line or a frame;
 * at most PROOF_MSG_LINES lines and PROOF_MESSAGE_MAX bytes. The lines go
 * to out joined by '\n'; returns how many. */
static size_t cut_message(sh_buf *out, const char *p, size_t n)
{
    sh_buf_reset(out);
    size_t i = 0, lines = 0;
    while (i < n && lines < PROOF_MSG_LINES && out->len < PROOF_MESSAGE_MAX) {
        const char *nl = memchr(p + i, '\n', n - i);
        size_t e = nl != NULL ? (size_t)(nl - p) : n;
        sh_slice l = trim(slice(p + i, e - i));
        i = e + 1;
        if (l.len == 0) {
            if (lines > 0)
                break;
            continue;
        }
        if (lines > 0) {
            sh_frame fr;
            if (has(l.ptr, l.len, "stacktrace:") ||
                sh_frame_parse_line(&fr, l.ptr, l.len < PROOF_LINE_MAX ? l.len : PROOF_LINE_MAX))
                break;
            sh_buf_append_byte(out, '\n');
        }
        size_t room = PROOF_MESSAGE_MAX - out->len;
        sh_buf_append(out, l.ptr, l.len > room ? sh_utf8_truncate(l.ptr, l.len, room) : l.len);
        lines++;
    }
    return lines;
}

/* Whitespace runs of p[0..n) as one blank, trimmed, appended to out. */
static void collapse(sh_buf *out, const char *p, size_t n)
{
    int gap = 0;
    for (size_t i = 0; i < n; i++) {
        if (is_space(p[i])) {
            gap = 1;
            continue;
        }
        if (gap && out->len > 0)
            sh_buf_append_byte(out, ' ');
        gap = 0;
        sh_buf_append_byte(out, p[i]);
    }
}

/* Type comparison: ka/kb are the compared forms. */
static sh_slice type_clean(sh_slice t)
{
    t = trim(t);
    if (t.len > 7 && memcmp(t.ptr, "Elixir.", 7) == 0) {
        t.ptr += 7;
        t.len -= 7;
    }
    return t;
}

static sh_slice last_segment(sh_slice t)
{
    for (size_t i = t.len; i > 0; i--)
        if (t.ptr[i - 1] == '.')
            return slice(t.ptr + i, t.len - i);
    return t;
}

static int type_match(sh_slice a, sh_slice b, sh_slice *ka, sh_slice *kb)
{
    a = type_clean(a);
    b = type_clean(b);
    if (memchr(a.ptr, '.', a.len) != NULL && memchr(b.ptr, '.', b.len) != NULL) {
        *ka = a;
        *kb = b;
    } else {
        *ka = last_segment(a);
        *kb = last_segment(b);
    }
    return sh_slice_eq(*ka, *kb);
}

/* ---------------------------------------------------------------- the check */

enum { PY_NONE, PY_FRAMES, PY_MSG };
enum { EX_NONE, EX_MSG, EX_WAIT, EX_FRAMES };
enum { GEN_NONE, GEN_PENDING, GEN_FRAMES };
enum { TAP_NONE, TAP_ARMED, TAP_YAML };
enum { TAP_KEY, TAP_ERROR, TAP_STACK };

/* Production frames of one side: keys in a buffer, the top one for the
 * detail. */
typedef struct prod {
    size_t n;
    size_t off[PROOF_TOP_FRAMES];
    size_t len[PROOF_TOP_FRAMES];
    int raised_in_test; /* the first frame that resolves is test code */
    char where[256];    /* the top production frame (or the test frame), for the detail */
} prod;

typedef struct line {
    const char *p; /* the line, at most PROOF_LINE_MAX bytes, trailing blanks cut */
    size_t n;
    const char *b; /* its body, after the indentation */
    size_t bn;
    size_t indent;
    int blank;
    int is_frame;
    sh_frame fr;
} line;

typedef struct scan {
    proof_result *out;
    const context_files *files;
    proof_is_test_fn is_test;
    void *payload;
    sh_fp_ctx *fp;
    int oom;

    /* the target */
    sh_slice ttype;
    sh_buf tmsg; /* cut message */
    size_t tmsg_lines;
    sh_buf tnorm; /* its comparable form */
    sh_buf tkeys;
    prod tprod;

    /* scratch */
    sh_buf plain; /* the log without terminal control sequences, when it has some */
    sh_buf fmsg, fnorm, tmp, fkeys, fpmsg;
    char path[PROOF_PATH_MAX];
    char tapline[PROOF_LINE_MAX + 4];
    const sh_frame *order[PROOF_MAX_FRAMES];

    /* results */
    size_t evaluated;
    int best;
    char best_detail[sizeof(((proof_result *)0)->detail)];

    /* readers */
    fail py, pt, ex[2], gen, tap;
    int py_state;
    size_t py_indent;
    int pt_mode, pt_have_e;
    sh_slice pt_def, pt_etype;
    int ex_state;
    size_t nex, ex_indent, ex_wait;
    int gen_state;
    size_t gen_after;
    int tap_state, tap_part;
    size_t tap_indent;
} scan;

/* The repository path of a frame, or NULL: through the resolver, else
 * the file as written (an in-app frame's, leading "./" dropped). */
static const char *frame_path(scan *s, const sh_frame *fr)
{
    if (fr->file.len == 0)
        return NULL;
    if (s->files != NULL)
        return context_files_resolve(s->files, fr->file.ptr, fr->file.len);
    if (!sh_frame_is_in_app(fr, NULL))
        return NULL;
    sh_slice f = fr->file;
    while (f.len > 2 && f.ptr[0] == '.' && f.ptr[1] == '/') {
        f.ptr += 2;
        f.len -= 2;
    }
    if (f.len >= sizeof(s->path))
        return NULL;
    for (size_t i = 0; i < f.len; i++)
        if ((unsigned char)f.ptr[i] < 0x20)
            return NULL;
    memcpy(s->path, f.ptr, f.len);
    s->path[f.len] = '\0';
    return s->path;
}

static void describe_frame(char *out, size_t cap, const sh_frame *fr, const char *path)
{
    dbuf b = {out, cap, 0};
    out[0] = '\0';
    if (fr->module.len > 0) {
        d_text(&b, fr->module.ptr, fr->module.len, 80);
        d_str(&b, ".");
    }
    d_text(&b, fr->function.ptr, fr->function.len, 60);
    d_str(&b, fr->function.len > 0 || fr->module.len > 0 ? " (" : "(");
    d_text(&b, path, strlen(path), 100);
    d_str(&b, ")");
}

/* The production frames of frames[0..n) (innermost first): their keys
 * appended to keys. */
static void production(scan *s, const sh_frame *const *frames, size_t n, sh_buf *keys, prod *p)
{
    memset(p, 0, sizeof(*p));
    int resolved = 0;
    for (size_t i = 0; i < n && p->n < PROOF_TOP_FRAMES; i++) {
        const char *path = frame_path(s, frames[i]);
        if (path == NULL)
            continue;
        int first = !resolved;
        resolved = 1;
        if (s->is_test != NULL && s->is_test(s->payload, path)) {
            if (first) {
                p->raised_in_test = 1;
                describe_frame(p->where, sizeof(p->where), frames[i], path);
            }
            continue;
        }
        if (p->n == 0)
            describe_frame(p->where, sizeof(p->where), frames[i], path);
        sh_frame c = *frames[i];
        c.file = slice(path, strlen(path));
        p->off[p->n] = keys->len;
        sh_fp_frame_key(keys, &c);
        p->len[p->n] = keys->len - p->off[p->n];
        p->n++;
    }
}

/* The message as the fingerprint takes it: lines joined by blanks. */
static void fp_message(sh_buf *out, const char *p, size_t n)
{
    sh_buf_reset(out);
    sh_buf_append(out, p, n);
    for (size_t i = 0; i < out->len && !out->oom; i++)
        if (out->data[i] == '\n')
            out->data[i] = ' ';
}

static int fingerprint(scan *s, sh_fp_result *r, sh_slice type, const sh_buf *keys, const prod *p,
                       size_t k, const char *msg, size_t msg_len)
{
    sh_fp_frame fr[PROOF_TOP_FRAMES];
    for (size_t i = 0; i < k; i++) {
        fr[i].frame = NULL;
        fr[i].key = slice(bd(keys) + p->off[i], p->len[i]);
        fr[i].in_app = 1;
    }
    fp_message(&s->fpmsg, msg, msg_len);
    if (s->fpmsg.oom)
        return -1;
    sh_slice m = trim(slice(bd(&s->fpmsg), s->fpmsg.len));
    return sh_fingerprint_frames(r, s->fp, type, m, fr, k);
}

/* The comparable form of a message (first max_lines lines, 0: all). */
static int norm_message(scan *s, sh_buf *out, const char *p, size_t n, size_t max_lines)
{
    n = lines_prefix(p, n, max_lines);
    sh_buf_reset(&s->tmp);
    sh_buf_reset(out);
    if (sh_normalize(&s->tmp, p, n) != 0)
        return -1;
    collapse(out, bd(&s->tmp), s->tmp.len);
    return out->oom ? -1 : 0;
}

/* Records why failure number idx did not reproduce, when it is closer
 * than the best so far. */
static void closest(scan *s, int score, size_t idx, const fail *f, const char *why, const char *a,
                    size_t an, const char *b, size_t bn)
{
    if (score <= s->best)
        return;
    s->best = score;
    dbuf d = {s->best_detail, sizeof(s->best_detail), 0};
    s->best_detail[0] = '\0';
    char head[48];
    snprintf(head, sizeof(head), "closest: failure %zu, ", idx);
    d_str(&d, head);
    d_text(&d, f->type.ptr, f->type.len, 80);
    d_str(&d, ": ");
    d_text(&d, bd(&f->msg), f->msg.len, PROOF_SHOW);
    d_str(&d, "; ");
    d_str(&d, why);
    if (a != NULL) {
        d_str(&d, " ");
        d_text(&d, a, an, PROOF_SHOW);
    }
    if (b != NULL) {
        d_str(&d, ", not ");
        d_text(&d, b, bn, PROOF_SHOW);
    }
}

static void evaluate(scan *s, fail *f)
{
    size_t idx = ++s->out->failures;
    if (s->out->reproduced || s->evaluated >= PROOF_MAX_FAILURES || s->oom)
        return;
    const char *tt = s->ttype.len > 0 ? s->ttype.ptr : "";
    sh_slice kt = SH_SLICE_EMPTY, kf = SH_SLICE_EMPTY;
    if (s->ttype.len > 0 && !type_match(s->ttype, f->type, &kt, &kf)) {
        closest(s, 0, idx, f, "another exception type than", tt, s->ttype.len, NULL, 0);
        return;
    }
    size_t mlines = cut_message(&s->fmsg, bd(&f->msg), f->msg.len);
    size_t cmp = f->cmp_lines && s->tmsg_lines > 0 && s->tmsg_lines < mlines ? s->tmsg_lines : 0;
    if (norm_message(s, &s->fnorm, bd(&s->fmsg), s->fmsg.len, cmp) != 0) {
        s->oom = 1;
        return;
    }
    if (s->fnorm.len != s->tnorm.len ||
        (s->fnorm.len > 0 && memcmp(bd(&s->fnorm), bd(&s->tnorm), s->fnorm.len) != 0)) {
        closest(s, 1, idx, f, "another message than", bd(&s->tmsg), s->tmsg.len, NULL, 0);
        return;
    }
    /* the frames of at most PROOF_MAX_FAILURES failures are resolved */
    s->evaluated++;
    size_t n = fail_order(f, s->order);
    prod fp;
    sh_buf_reset(&s->fkeys);
    production(s, s->order, n, &s->fkeys, &fp);
    if (s->fkeys.oom) {
        s->oom = 1;
        return;
    }
    if (fp.raised_in_test) {
        closest(s, 2, idx, f, "raised by the test code itself at", fp.where, strlen(fp.where), NULL,
                0);
        return;
    }
    size_t k = 0;
    if (s->tprod.n > 0) {
        k = fp.n < s->tprod.n ? fp.n : s->tprod.n;
        if (k == 0) {
            closest(s, 2, idx, f, "no production frame in its stack; expected", s->tprod.where,
                    strlen(s->tprod.where), NULL, 0);
            return;
        }
        for (size_t i = 0; i < k; i++) {
            if (fp.len[i] != s->tprod.len[i] ||
                memcmp(bd(&s->fkeys) + fp.off[i], bd(&s->tkeys) + s->tprod.off[i], fp.len[i]) !=
                    0) {
                closest(s, 3, idx, f, "raised at", fp.where, strlen(fp.where), s->tprod.where,
                        strlen(s->tprod.where));
                return;
            }
        }
    }
    sh_fp_result rt, rf;
    size_t fl = lines_prefix(bd(&s->fmsg), s->fmsg.len, cmp);
    if (fingerprint(s, &rt, kt, &s->tkeys, &s->tprod, k, bd(&s->tmsg), s->tmsg.len) != 0 ||
        fingerprint(s, &rf, kf, &s->fkeys, &fp, k, bd(&s->fmsg), fl) != 0) {
        s->oom = 1;
        return;
    }
    if (strcmp(rt.hex, rf.hex) != 0) {
        closest(s, 4, idx, f, "same type, message and frames but another fingerprint:", rf.hex,
                strlen(rf.hex), rt.hex, strlen(rt.hex));
        return;
    }
    proof_result *out = s->out;
    out->reproduced = 1;
    out->frames_matched = k;
    memcpy(out->fingerprint, rt.hex, sizeof(out->fingerprint));
    dbuf d = {out->detail, sizeof(out->detail), 0};
    out->detail[0] = '\0';
    char head[96];
    snprintf(head, sizeof(head), "reproduced by failure %zu (fingerprint %s): ", idx, rt.hex);
    d_str(&d, head);
    d_text(&d, f->type.ptr, f->type.len, 80);
    d_str(&d, ": ");
    d_text(&d, bd(&s->fmsg), fl, PROOF_SHOW);
    if (k > 0) {
        snprintf(head, sizeof(head), "; %zu production frame%s matched, raised in ", k,
                 k > 1 ? "s" : "");
        d_str(&d, head);
        d_text(&d, fp.where, strlen(fp.where), 200);
    } else {
        d_str(&d, "; type and message (the production stack names no production frame)");
    }
}

static void emit(scan *s, fail *f)
{
    if (!f->active)
        return;
    f->active = 0;
    evaluate(s, f);
}

/* ---------------------------------------------------------------- lines */

static void line_init(line *l, const char *p, size_t n)
{
    if (n > PROOF_LINE_MAX)
        n = sh_utf8_truncate(p, n, PROOF_LINE_MAX);
    while (n > 0 && (is_blank(p[n - 1]) || p[n - 1] == '\r'))
        n--;
    l->p = p;
    l->n = n;
    size_t i = 0;
    while (i < n && is_blank(p[i]))
        i++;
    l->indent = i;
    l->b = p + i;
    l->bn = n - i;
    l->blank = l->bn == 0;
    l->is_frame = !l->blank && sh_frame_parse_line(&l->fr, p, n);
}

static int body_has(const line *l, const char *lit)
{
    return has(l->b, l->bn, lit);
}

/* "===...", "---...", "___..." or "_ _ _": rules and pytest's headers. */
static int is_rule(const line *l)
{
    return body_has(l, "===") || body_has(l, "---") || body_has(l, "___") || body_has(l, "_ _");
}

static int is_chain_sentence(const line *l)
{
    return body_has(l, "During handling of the above exception") ||
           body_has(l, "The above exception was the direct cause");
}

/* ---------------------------------------------------------------- JS, Java, plain */

static void gen_expire(scan *s)
{
    if (s->gen_state != GEN_PENDING)
        return;
    s->gen_state = GEN_NONE;
    fail *f = &s->gen;
    sh_slice ka, kb;
    if (s->ttype.len > 0 && f->has_msg >= 0 && type_match(s->ttype, f->type, &ka, &kb)) {
        f->kind = FK_LINE; /* the line alone: what followed it is not its message */
        f->nframes = 0;
        const char *nl = memchr(bd(&f->msg), '\n', f->msg.len);
        if (nl != NULL)
            f->msg.len = (size_t)(nl - bd(&f->msg));
        emit(s, f);
    }
    f->active = 0;
}

/* A JS/Java header: type, message and whether the message is there. */
static int gen_header(const line *l, sh_slice *type, sh_slice *msg, int *has_msg)
{
    static const char *const prefixes[] = {"Caused by: ", "Suppressed: ", "Uncaught ",
                                           "[cause]: ", NULL};
    const char *p = l->b;
    size_t n = l->bn;
    for (size_t k = 0; prefixes[k] != NULL; k++)
        if (has(p, n, prefixes[k])) {
            size_t m = strlen(prefixes[k]);
            p += m;
            n -= m;
            break;
        }
    if (has(p, n, "Exception in thread \"")) {
        const char *q = memchr(p + 21, '"', n - 21);
        if (q == NULL || (size_t)(q - p) + 2 > n || q[1] != ' ')
            return 0;
        n -= (size_t)(q + 2 - p);
        p = q + 2;
    }
    int form = parse_exc(p, n, 1, type, msg);
    if (form == EXC_NONE)
        return 0;
    /* 1: a header with a message (frames may come some lines later), 0:
     * "Type:", -1: bare "Type" (frames at once; never a plain line) */
    *has_msg = form == EXC_BARE ? -1 : msg->len > 0;
    return 1;
}

static int gen_line(scan *s, const line *l)
{
    fail *f = &s->gen;
    int stack = l->is_frame && (l->fr.kind == SH_FRAME_JS || l->fr.kind == SH_FRAME_JAVA);
    if (s->gen_state == GEN_FRAMES) {
        if (stack) {
            fail_add_frame(f, &l->fr);
            return 1;
        }
        if (body_has(l, "..."))
            return 1; /* "... 23 more", "... 4 lines matching cause stack trace ..." */
        s->gen_state = GEN_NONE;
        emit(s, f);
    }
    if (stack) {
        if (s->gen_state == GEN_PENDING && (s->gen_after == 0 || f->has_msg == 1)) {
            s->gen_state = GEN_FRAMES;
            fail_add_frame(f, &l->fr);
            return 1;
        }
        gen_expire(s);
        return 0;
    }
    sh_slice type, msg;
    int has_msg;
    if (!l->blank && gen_header(l, &type, &msg, &has_msg)) {
        gen_expire(s);
        fail_start(f, FK_STACK, 0, type);
        f->has_msg = has_msg;
        if (msg.len > 0)
            fail_add_line(f, msg.ptr, msg.len);
        s->gen_state = GEN_PENDING;
        s->gen_after = 0;
        return 1;
    }
    if (s->gen_state == GEN_PENDING) {
        s->gen_after++;
        if (f->has_msg != 1 || s->gen_after > PROOF_PENDING_LINES) {
            gen_expire(s);
            return 0;
        }
        if (l->blank)
            f->msg_open = 0;
        else
            fail_add_line(f, l->b, l->bn);
    }
    return 0;
}

/* ---------------------------------------------------------------- Python */

static int py_line(scan *s, const line *l)
{
    fail *f = &s->py;
    if (s->py_state == PY_FRAMES) {
        if (l->blank)
            return 1;
        if (l->indent > s->py_indent) {
            if (l->is_frame && l->fr.kind == SH_FRAME_PYTHON)
                fail_add_frame(f, &l->fr);
            return 1;
        }
        sh_slice type, msg;
        if (parse_exc(l->b, l->bn, 0, &type, &msg) != EXC_NONE) {
            f->type = type;
            if (msg.len > 0)
                fail_add_line(f, msg.ptr, msg.len);
            s->py_state = PY_MSG;
            return 1;
        }
        s->py_state = PY_NONE; /* not a traceback after all */
        f->active = 0;
    } else if (s->py_state == PY_MSG) {
        if (l->blank || is_rule(l) || body_has(l, "Traceback (most recent call last):") ||
            is_chain_sentence(l) || l->is_frame || f->msg_lines >= PROOF_MSG_LINES) {
            s->py_state = PY_NONE;
            emit(s, f);
            if (l->blank)
                return 1;
        } else {
            fail_add_line(f, l->p, l->n);
            return 1;
        }
    }
    if (body_has(l, "Traceback (most recent call last):")) {
        gen_expire(s);
        fail_start(f, FK_PYTHON, 1, SH_SLICE_EMPTY);
        s->py_indent = l->indent;
        s->py_state = PY_FRAMES;
        return 1;
    }
    return 0;
}

/* ---------------------------------------------------------------- pytest */

static void pt_reset(scan *s)
{
    s->pt.active = 0;
    s->pt_have_e = 0;
    s->pt_def = SH_SLICE_EMPTY;
    s->pt_etype = SH_SLICE_EMPTY;
}

static void pt_begin(scan *s)
{
    if (!s->pt.active) {
        fail_start(&s->pt, FK_PYTEST, 1, SH_SLICE_EMPTY);
        s->pt_have_e = 0;
        s->pt_etype = SH_SLICE_EMPTY;
    }
}

/* A boundary: a failure read in the short format (frames, then E lines)
 * is complete. */
static void pt_flush(scan *s)
{
    if (s->pt.active && s->pt.nframes > 0 && s->pt_etype.len > 0) {
        s->pt.type = s->pt_etype;
        emit(s, &s->pt);
    }
    pt_reset(s);
}

/* "path:N: rest" at the start of a line (path without blanks). */
static int pt_location(const line *l, sh_frame *fr, sh_slice *rest)
{
    if (l->indent != 0)
        return 0;
    const char *p = l->b;
    size_t n = l->bn, i = 0;
    for (; i < n; i++) {
        if (is_blank(p[i]))
            return 0;
        if (p[i] != ':' || i == 0)
            continue;
        size_t j = i + 1, d = j;
        while (j < n && is_digit(p[j]) && j - d < 9)
            j++;
        if (j == d || j >= n || p[j] != ':')
            continue;
        if (j + 1 < n && p[j + 1] != ' ')
            continue;
        memset(fr, 0, sizeof(*fr));
        fr->kind = SH_FRAME_PYTHON;
        fr->app = fr->module = fr->function = SH_SLICE_EMPTY;
        fr->file = slice(p, i);
        for (size_t k = d; k < j; k++)
            fr->line = fr->line * 10 + (uint32_t)(p[k] - '0');
        *rest = j + 1 < n ? trim(slice(p + j + 2, n - j - 2)) : slice(p + n, 0);
        return 1;
    }
    return 0;
}

static int pt_line(scan *s, const line *l)
{
    if (l->indent == 0 && body_has(l, "===")) {
        pt_flush(s);
        s->pt_mode = contains(l->b, l->bn, " FAILURES ") || contains(l->b, l->bn, " ERRORS ");
        return 1;
    }
    if (!s->pt_mode)
        return 0;
    if (l->indent == 0 && (body_has(l, "___") || body_has(l, "_ _"))) {
        if (body_has(l, "_ _"))
            s->pt_def = SH_SLICE_EMPTY; /* the next entry of the same failure */
        else
            pt_flush(s); /* the next test */
        return 1;
    }
    if (is_chain_sentence(l)) {
        pt_flush(s);
        return 1;
    }
    if (l->indent == 0 && l->bn >= 1 && l->b[0] == 'E' && (l->bn == 1 || is_blank(l->b[1]))) {
        sh_slice text = trim(slice(l->b + 1, l->bn - 1)), type, msg;
        pt_begin(s);
        if (!s->pt_have_e) {
            s->pt_have_e = 1;
            if (parse_exc(text.ptr, text.len, 0, &type, &msg) != EXC_NONE) {
                s->pt_etype = type;
                text = msg;
            }
        }
        if (text.len > 0 || s->pt.msg_lines > 0)
            fail_add_line(&s->pt, text.ptr, text.len);
        return 1;
    }
    if (l->indent >= 4 && s->pt_def.len == 0 &&
        (body_has(l, "def ") || body_has(l, "async def "))) {
        const char *q = l->b + (body_has(l, "def ") ? 4 : 10);
        size_t m = type_token(q, l->bn - (size_t)(q - l->b));
        if (m > 0 && (size_t)(q - l->b) + m < l->bn && q[m] == '(')
            s->pt_def = slice(q, m);
        return 0;
    }
    sh_frame fr;
    sh_slice rest, type, msg;
    if (!pt_location(l, &fr, &rest))
        return 0;
    if (rest.len == 0 || has(rest.ptr, rest.len, "in ")) {
        fr.function = rest.len > 0 ? trim(slice(rest.ptr + 3, rest.len - 3)) : s->pt_def;
        pt_begin(s);
        fail_add_frame(&s->pt, &fr);
        s->pt_def = SH_SLICE_EMPTY;
        return 1;
    }
    int form = parse_exc(rest.ptr, rest.len, 0, &type, &msg);
    if (form == EXC_NONE)
        return 0;
    fr.function = s->pt_def;
    pt_begin(s);
    fail_add_frame(&s->pt, &fr);
    fail *f = &s->pt;
    sh_slice ka, kb;
    if (form == EXC_COLON && msg.len > 0) { /* --tb=line: "path:N: Type: message" */
        sh_buf_reset(&f->msg);
        f->msg_lines = 0;
        fail_add_line(f, msg.ptr, msg.len);
        f->type = type;
    } else if (s->pt_etype.len > 0 && type_match(s->pt_etype, type, &ka, &kb)) {
        f->type = s->pt_etype; /* E names it in full */
    } else {
        f->type = type;
    }
    emit(s, f);
    pt_reset(s);
    return 1;
}

/* ---------------------------------------------------------------- ExUnit */

static int ex_header(const line *l, sh_slice *type, sh_slice *msg)
{
    if (!body_has(l, "** ("))
        return 0;
    const char *p = l->b + 4, *e = l->b + l->bn;
    const char *close = memchr(p, ')', (size_t)(e - p));
    if (close == NULL || close == p || (size_t)(close - p) > PROOF_TYPE_MAX)
        return 0;
    *type = slice(p, (size_t)(close - p));
    *msg = close + 1 < e ? trim(slice(close + 1, (size_t)(e - close - 1))) : slice(e, 0);
    return 1;
}

/* "  1) test name (Module)": ExUnit's failure heading. */
static int ex_test_heading(const line *l)
{
    size_t i = 0;
    while (i < l->bn && is_digit(l->b[i]))
        i++;
    return l->indent > 0 && i > 0 && i + 1 < l->bn && l->b[i] == ')' && l->b[i + 1] == ' ';
}

static int is_beam(const line *l)
{
    return l->is_frame && (l->fr.kind == SH_FRAME_ELIXIR || l->fr.kind == SH_FRAME_ERLANG);
}

static void ex_emit(scan *s)
{
    for (size_t k = 0; k < s->nex; k++)
        emit(s, &s->ex[k]);
    s->nex = 0;
    s->ex_state = EX_NONE;
}

static void ex_frame(scan *s, const line *l)
{
    for (size_t k = 0; k < s->nex; k++)
        fail_add_frame(&s->ex[k], &l->fr);
}

static int ex_line(scan *s, const line *l)
{
    sh_slice type, msg;
    int hdr = !l->blank && ex_header(l, &type, &msg);
    switch (s->ex_state) {
    case EX_MSG:
        if (hdr && l->indent > s->ex_indent) { /* inside the message: an exit's reason */
            for (size_t k = 0; k < s->nex; k++)
                fail_add_line(&s->ex[k], l->b, l->bn);
            if (s->nex < 2) {
                fail *f = &s->ex[s->nex++];
                fail_start(f, FK_EXUNIT, 0, type);
                if (msg.len > 0)
                    fail_add_line(f, msg.ptr, msg.len);
            }
            return 1;
        }
        if (hdr)
            break;
        if (l->blank || body_has(l, "code:")) {
            s->ex_state = EX_WAIT;
            s->ex_wait = 0;
            return 1;
        }
        if (body_has(l, "stacktrace:")) {
            s->ex_state = EX_FRAMES;
            return 1;
        }
        if (is_beam(l)) {
            ex_frame(s, l);
            s->ex_state = EX_FRAMES;
            return 1;
        }
        if (ex_test_heading(l)) {
            ex_emit(s);
            return 1;
        }
        for (size_t k = 0; k < s->nex; k++)
            fail_add_line(&s->ex[k], l->b, l->bn);
        return 1;
    case EX_WAIT:
        if (hdr)
            break;
        if (body_has(l, "stacktrace:")) {
            s->ex_state = EX_FRAMES;
            return 1;
        }
        if (is_beam(l)) {
            ex_frame(s, l);
            s->ex_state = EX_FRAMES;
            return 1;
        }
        if (ex_test_heading(l) || ++s->ex_wait > PROOF_WAIT_LINES) {
            ex_emit(s);
            return 0;
        }
        return 1;
    case EX_FRAMES:
        if (is_beam(l)) {
            ex_frame(s, l);
            return 1;
        }
        if (hdr)
            break;
        ex_emit(s);
        return l->blank;
    default:
        break;
    }
    if (!hdr)
        return 0;
    ex_emit(s);
    gen_expire(s);
    fail_start(&s->ex[0], FK_EXUNIT, 0, type);
    if (msg.len > 0)
        fail_add_line(&s->ex[0], msg.ptr, msg.len);
    s->nex = 1;
    s->ex_indent = l->indent;
    s->ex_state = EX_MSG;
    return 1;
}

/* ---------------------------------------------------------------- node's TAP */

/* A YAML scalar: quotes dropped, '' and the usual backslash escapes undone. */
static void tap_scalar(fail *f, const char *p, size_t n)
{
    if (n >= 2 && (p[0] == '"' || p[0] == '\'') && p[n - 1] == p[0]) {
        char q = p[0];
        sh_buf_reset(&f->msg);
        f->msg_lines = 1;
        for (size_t i = 1; i + 1 < n && f->msg.len < PROOF_MESSAGE_MAX; i++) {
            char c = p[i];
            if (q == '\'' && c == '\'' && i + 2 < n && p[i + 1] == '\'') {
                i++;
            } else if (q == '"' && c == '\\' && i + 2 < n) {
                c = p[++i];
                c = c == 'n' ? '\n' : c == 't' ? '\t' : c;
            }
            sh_buf_append_byte(&f->msg, c);
        }
        return;
    }
    fail_add_line(f, p, n);
}

static int tap_line(scan *s, const line *l)
{
    fail *f = &s->tap;
    if (s->tap_state == TAP_NONE || s->tap_state == TAP_ARMED) {
        if (body_has(l, "not ok ")) {
            s->tap_state = TAP_ARMED;
            return 0;
        }
        if (s->tap_state == TAP_ARMED && l->bn == 3 && body_has(l, "---")) {
            s->tap_state = TAP_YAML;
            s->tap_part = TAP_KEY;
            s->tap_indent = l->indent;
            fail_start(f, FK_STACK, 0, SH_SLICE_EMPTY);
            return 1;
        }
        if (!l->blank && !body_has(l, "#"))
            s->tap_state = TAP_NONE;
        return 0;
    }
    /* in the YAML block */
    if (l->bn == 3 && body_has(l, "...") && l->indent <= s->tap_indent) {
        s->tap_state = TAP_NONE;
        if (f->type.len > 0)
            emit(s, f);
        f->active = 0;
        return 1;
    }
    if (!l->blank && l->indent <= s->tap_indent) {
        /* a key of the block */
        s->tap_part = TAP_KEY;
        sh_slice v;
        if (body_has(l, "name: ")) {
            v = trim(slice(l->b + 6, l->bn - 6));
            if (v.len >= 2 && (v.ptr[0] == '\'' || v.ptr[0] == '"') && v.ptr[v.len - 1] == v.ptr[0])
                v = slice(v.ptr + 1, v.len - 2);
            if (type_token(v.ptr, v.len) == v.len)
                f->type = v;
        } else if (body_has(l, "error: ")) {
            v = trim(slice(l->b + 7, l->bn - 7));
            sh_buf_reset(&f->msg);
            f->msg_lines = 0;
            if (v.len > 0 && v.ptr[0] == '|')
                s->tap_part = TAP_ERROR;
            else
                tap_scalar(f, v.ptr, v.len);
        } else if (body_has(l, "stack: |")) {
            s->tap_part = TAP_STACK;
        }
        return 1;
    }
    if (s->tap_part == TAP_ERROR) {
        fail_add_line(f, l->b, l->bn);
    } else if (s->tap_part == TAP_STACK && !l->blank) {
        /* "fn (file:line:col)" or "file:line:col": a V8 frame without "at " */
        memcpy(s->tapline, "at ", 3);
        memcpy(s->tapline + 3, l->b, l->bn);
        sh_frame fr;
        if (sh_frame_parse_line(&fr, s->tapline, l->bn + 3) && fr.kind == SH_FRAME_JS) {
            sh_slice *parts[] = {&fr.app, &fr.module, &fr.function, &fr.file};
            for (size_t k = 0; k < 4; k++) {
                const char *p = parts[k]->ptr;
                if (parts[k]->len > 0 && p >= s->tapline + 3 && p < s->tapline + 3 + l->bn)
                    parts[k]->ptr = l->b + (p - (s->tapline + 3));
                else if (parts[k]->len == 0)
                    *parts[k] = SH_SLICE_EMPTY;
            }
            fail_add_frame(f, &fr);
        }
    }
    return 1;
}

/* ---------------------------------------------------------------- the log */

static void scan_line(scan *s, const line *l)
{
    if (py_line(s, l) || pt_line(s, l) || ex_line(s, l) || tap_line(s, l))
        return;
    gen_line(s, l);
}

static void scan_end(scan *s)
{
    if (s->py_state == PY_MSG)
        emit(s, &s->py);
    s->py_state = PY_NONE;
    pt_flush(s);
    ex_emit(s);
    if (s->gen_state == GEN_FRAMES)
        emit(s, &s->gen);
    gen_expire(s);
    s->gen_state = GEN_NONE;
}

/* Appends p[0..n) to out without its terminal control sequences: CSI
 * (ESC [ ... final byte: colours, cursor moves) and OSC (ESC ] ... BEL or
 * ESC \\: hyperlinks, titles), so that coloured output reads as plain. */
static void strip_ansi(sh_buf *out, const char *p, size_t n)
{
    size_t i = 0, from = 0;
    while (i < n) {
        const char *esc = memchr(p + i, '\x1b', n - i);
        if (esc == NULL)
            break;
        i = (size_t)(esc - p);
        size_t j = i + 1;
        if (j < n && p[j] == '[') {
            j++;
            while (j < n && (unsigned char)p[j] >= 0x20 && (unsigned char)p[j] <= 0x3F)
                j++;
            if (j < n && (unsigned char)p[j] >= 0x40 && (unsigned char)p[j] <= 0x7E)
                j++;
        } else if (j < n && p[j] == ']') {
            j++;
            while (j < n && p[j] != '\a' && p[j] != '\n' && !(p[j] == '\x1b' && j + 1 < n))
                j++;
            if (j < n && p[j] == '\a')
                j++;
            else if (j + 1 < n && p[j] == '\x1b' && p[j + 1] == '\\')
                j += 2;
        } else {
            i++; /* a lone ESC stays */
            continue;
        }
        sh_buf_append(out, p + from, i - from);
        i = from = j;
    }
    sh_buf_append(out, p + from, n - from);
}

static void scan_log(scan *s, const char *log, size_t len)
{
    size_t start = 0;
    if (len > PROOF_SCAN_BYTES) { /* the last bytes, from a line start */
        start = len - PROOF_SCAN_BYTES;
        const char *nl = memchr(log + start, '\n', len - start);
        start = nl != NULL ? (size_t)(nl - log) + 1 : len;
    }
    const char *p = log + start, *end = log + len;
    if (memchr(p, '\x1b', (size_t)(end - p)) != NULL) {
        /* coloured output: read a plain copy (the failures' slices point
         * into it until the end of the check) */
        strip_ansi(&s->plain, p, (size_t)(end - p));
        if (s->plain.oom) {
            s->oom = 1;
            return;
        }
        p = bd(&s->plain);
        end = p + s->plain.len;
    }
    line *l = &(line){0};
    while (p < end && !s->oom) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl != NULL ? nl : end;
        line_init(l, p, (size_t)(le - p));
        scan_line(s, l);
        p = nl != NULL ? nl + 1 : end;
    }
    scan_end(s);
}

/* ---------------------------------------------------------------- the target */

static int prepare_target(scan *s, const proof_target *t)
{
    s->ttype = type_clean(t->type != NULL ? slice(t->type, strnlen(t->type, PROOF_TYPE_MAX))
                                          : SH_SLICE_EMPTY);
    const char *m = t->message != NULL ? t->message : "";
    s->tmsg_lines = cut_message(&s->tmsg, m, strnlen(m, PROOF_TARGET_MSG));
    if (s->tmsg.oom || norm_message(s, &s->tnorm, bd(&s->tmsg), s->tmsg.len, 0) != 0)
        return -1;

    /* frames: of a chained Python traceback the last block, innermost first */
    fail *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return -1;
    const char *st = t->stacktrace != NULL ? t->stacktrace : "";
    size_t n = strnlen(st, PROOF_STACK_SCAN), i = 0, from = 0;
    while (i < n) {
        const char *nl = memchr(st + i, '\n', n - i);
        size_t e = nl != NULL ? (size_t)(nl - st) : n;
        if (contains(st + i, e - i, "Traceback (most recent call last):"))
            from = i;
        i = e + 1;
    }
    fail_start(f, FK_STACK, 0, SH_SLICE_EMPTY);
    for (i = from; i < n;) {
        const char *nl = memchr(st + i, '\n', n - i);
        size_t e = nl != NULL ? (size_t)(nl - st) : n;
        size_t ll = e - i < PROOF_LINE_MAX ? e - i : PROOF_LINE_MAX;
        sh_frame fr;
        if (sh_frame_parse_line(&fr, st + i, ll)) {
            if (f->nframes == 0)
                f->outer_first = fr.kind == SH_FRAME_PYTHON;
            fail_add_frame(f, &fr);
        }
        i = e + 1;
    }
    const sh_frame *order[PROOF_MAX_FRAMES];
    size_t nf = fail_order(f, order);
    production(s, order, nf, &s->tkeys, &s->tprod);
    sh_buf_free(&f->msg);
    free(f);
    return s->tkeys.oom ? -1 : 0;
}

/* ---------------------------------------------------------------- entry points */

static void scan_free(scan *s)
{
    sh_fp_ctx_free(s->fp);
    sh_buf *bufs[] = {&s->plain,  &s->tmsg,      &s->tnorm,     &s->tkeys,   &s->fmsg,
                      &s->fnorm,  &s->tmp,       &s->fkeys,     &s->fpmsg,   &s->py.msg,
                      &s->pt.msg, &s->ex[0].msg, &s->ex[1].msg, &s->gen.msg, &s->tap.msg};
    for (size_t k = 0; k < sizeof(bufs) / sizeof(*bufs); k++)
        sh_buf_free(bufs[k]);
    free(s);
}

int proof_check(proof_result *out, const char *log, size_t len, const proof_target *target,
                const context_files *files, proof_is_test_fn is_test, void *payload)
{
    if (out == NULL)
        return -1;
    memset(out, 0, sizeof(*out));
    if (target == NULL) {
        snprintf(out->detail, sizeof(out->detail), "no production error to reproduce");
        return 0;
    }
    scan *s = calloc(1, sizeof(*s));
    if (s == NULL)
        goto oom;
    s->out = out;
    s->files = files;
    s->is_test = is_test;
    s->payload = payload;
    s->best = -1;
    if (sh_fp_ctx_new(&s->fp) != 0 || prepare_target(s, target) != 0)
        goto oom;
    if (log != NULL && len > 0)
        scan_log(s, log, len);
    if (s->oom)
        goto oom;
    if (!out->reproduced) {
        if (out->failures == 0) {
            snprintf(out->detail, sizeof(out->detail),
                     "no failure (exception) found in the test output");
        } else {
            dbuf d = {out->detail, sizeof(out->detail), 0};
            char head[64];
            snprintf(head, sizeof(head), "not reproduced by %zu failure%s; ", out->failures,
                     out->failures > 1 ? "s" : "");
            d_str(&d, head);
            d_str(&d, s->best_detail);
        }
    }
    scan_free(s);
    return 0;
oom:
    if (s != NULL)
        scan_free(s);
    memset(out, 0, sizeof(*out));
    snprintf(out->detail, sizeof(out->detail), "out of memory");
    return -1;
}

int proof_is_test_path(void *payload, const char *repo_path)
{
    (void)payload;
    if (repo_path == NULL)
        return 0;
    if (context_is_test_path(repo_path))
        return 1;
    static const char *const dirs[] = {"test", "tests", "spec", "__tests__", NULL};
    const char *p = repo_path;
    for (;;) {
        const char *slash = strchr(p, '/');
        if (slash == NULL)
            return 0; /* the file name itself is no directory */
        size_t n = (size_t)(slash - p);
        for (size_t k = 0; dirs[k] != NULL; k++)
            if (n == strlen(dirs[k]) && memcmp(p, dirs[k], n) == 0)
                return 1;
        p = slash + 1;
    }
}

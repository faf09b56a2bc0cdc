/*
 * Stack frames: hand-written scanners for text stack traces of Elixir,
 * Erlang, JavaScript (V8, Firefox, Safari), Python and Java; the canonical
 * file of a frame; the in-app decision.
 *
 * Every parser is a constant number of forward or backward passes over one
 * line, never allocates, and returns slices into the line, so parsing is
 * linear in the input whatever it holds.
 *
 * Choices the header leaves open:
 *  - Elixir anonymous functions ("anonymous fn/0 in MyApp.Worker.init/1")
 *    are identified by their enclosing function: module MyApp.Worker,
 *    function init/1. Erlang's "-init/1-fun-0-" names are kept as written.
 *  - Elixir/Erlang function slices carry the arity ("handle_call/3") when
 *    the text has it in that form; frames written with an argument list
 *    ("Foo.bar(1, 2)") and Erlang stack-entry terms ({m,f,2,[...]}) give
 *    the bare name ("bar"): a slice cannot hold "bar/2".
 *  - Quoted function names keep their quotes (Enum."-map/2-.../1-0-"/2 ->
 *    "-map/2-.../1-0-"/2); quoted modules lose them, and an "Elixir."
 *    prefix of an Erlang-written module is dropped ('Elixir.Foo' -> Foo)
 *    so the same frame gets the same module in both syntaxes.
 *  - The ExUnit/compiler pseudo functions "(test)", "(module)", "(file)"
 *    are the function, with an empty module.
 *  - JavaScript: module stays empty; the function is the text V8/Firefox
 *    print (Object.<anonymous>, Foo/<) without "new ", "async ", a V8
 *    " [as alias]" suffix or a Firefox "async*" style prefix. An eval frame
 *    takes the location of the code that called eval; "(index 0)" of
 *    Promise.all gives an empty file; "native", "<anonymous>" and
 *    "[native code]" are kept as the file.
 *  - Java: "(Native Method)" and "(Unknown Source)" give an empty file; a
 *    logback packaging suffix (" ~[app.jar:1.0]") is ignored.
 *  - Canonical files: version numbers are kept (jquery-3.6.0.min.js stays);
 *    webpack:// paths lose their namespace and leading "./"
 *    (webpack:///./src/app.js -> src/app.js); file:// URLs keep their path
 *    as written (no hash stripping, only query and fragment dropped).
 *    The hash rule follows the letter of the spec, so an unhashed URL name
 *    such as user-profile2.js (8 alphanumerics, digit and letter) loses
 *    "-profile2"; bundlers hash their output, so this is rare.
 *  - sh_frame_parse_line parses in place: when it returns 0, *out is left
 *    cleared (kind SH_FRAME_UNKNOWN, empty slices).
 *  - In-app with a configuration: empty entries in apps/prefixes are
 *    ignored (an empty prefix would otherwise match every frame).
 *  - In-app heuristic, beyond the header's list: com.sun., kotlinx. and
 *    scala. classes; JS frames without a file or in node:/internal/ files;
 *    Python "<frozen ...>" files; Erlang modules of OTP families (erl_*,
 *    elixir_*, ssl_*, tls_*, inet_*, ...). The Elixir/Erlang module rules
 *    also apply to SH_FRAME_UNKNOWN frames (built by hand from BEAM
 *    stacktraces).
 */
#include "self_heal/frames.h"

#include <string.h>

/* ------------------------------------------------------------ basics */

/* Character classes by table: one load per test on the hot loops. */
enum { C_DIGIT = 1, C_LOWER = 2, C_UPPER = 4, C_HEX = 8, C_UNDER = 16, C_BLANK = 32, C_FSTOP = 64 };

static const unsigned char cclass[256] = {
    ['\t'] = C_BLANK | C_FSTOP,
    [' '] = C_BLANK | C_FSTOP,
    ['/'] = C_FSTOP,
    ['('] = C_FSTOP,
    [')'] = C_FSTOP,
    ['_'] = C_UNDER,
    ['0'] = C_DIGIT | C_HEX,
    ['1'] = C_DIGIT | C_HEX,
    ['2'] = C_DIGIT | C_HEX,
    ['3'] = C_DIGIT | C_HEX,
    ['4'] = C_DIGIT | C_HEX,
    ['5'] = C_DIGIT | C_HEX,
    ['6'] = C_DIGIT | C_HEX,
    ['7'] = C_DIGIT | C_HEX,
    ['8'] = C_DIGIT | C_HEX,
    ['9'] = C_DIGIT | C_HEX,
    ['a'] = C_LOWER | C_HEX,
    ['b'] = C_LOWER | C_HEX,
    ['c'] = C_LOWER | C_HEX,
    ['d'] = C_LOWER | C_HEX,
    ['e'] = C_LOWER | C_HEX,
    ['f'] = C_LOWER | C_HEX,
    ['g'] = C_LOWER,
    ['h'] = C_LOWER,
    ['i'] = C_LOWER,
    ['j'] = C_LOWER,
    ['k'] = C_LOWER,
    ['l'] = C_LOWER,
    ['m'] = C_LOWER,
    ['n'] = C_LOWER,
    ['o'] = C_LOWER,
    ['p'] = C_LOWER,
    ['q'] = C_LOWER,
    ['r'] = C_LOWER,
    ['s'] = C_LOWER,
    ['t'] = C_LOWER,
    ['u'] = C_LOWER,
    ['v'] = C_LOWER,
    ['w'] = C_LOWER,
    ['x'] = C_LOWER,
    ['y'] = C_LOWER,
    ['z'] = C_LOWER,
    ['A'] = C_UPPER | C_HEX,
    ['B'] = C_UPPER | C_HEX,
    ['C'] = C_UPPER | C_HEX,
    ['D'] = C_UPPER | C_HEX,
    ['E'] = C_UPPER | C_HEX,
    ['F'] = C_UPPER | C_HEX,
    ['G'] = C_UPPER,
    ['H'] = C_UPPER,
    ['I'] = C_UPPER,
    ['J'] = C_UPPER,
    ['K'] = C_UPPER,
    ['L'] = C_UPPER,
    ['M'] = C_UPPER,
    ['N'] = C_UPPER,
    ['O'] = C_UPPER,
    ['P'] = C_UPPER,
    ['Q'] = C_UPPER,
    ['R'] = C_UPPER,
    ['S'] = C_UPPER,
    ['T'] = C_UPPER,
    ['U'] = C_UPPER,
    ['V'] = C_UPPER,
    ['W'] = C_UPPER,
    ['X'] = C_UPPER,
    ['Y'] = C_UPPER,
    ['Z'] = C_UPPER,
};

static inline int cc(char c, int mask)
{
    return cclass[(unsigned char)c] & mask;
}

static inline int c_digit(char c)
{
    return cc(c, C_DIGIT);
}

static inline int c_lower(char c)
{
    return cc(c, C_LOWER);
}

static inline int c_upper(char c)
{
    return cc(c, C_UPPER);
}

static inline int c_alpha(char c)
{
    return cc(c, C_LOWER | C_UPPER);
}

static inline int c_alnum(char c)
{
    return cc(c, C_DIGIT | C_LOWER | C_UPPER);
}

static inline int c_word(char c)
{
    return cc(c, C_DIGIT | C_LOWER | C_UPPER | C_UNDER);
}

static inline int c_hex(char c)
{
    return cc(c, C_HEX);
}

static inline int c_blank(char c)
{
    return cc(c, C_BLANK);
}

static inline sh_slice mk(const char *b, const char *e)
{
    sh_slice s = {b, (size_t)(e - b)};
    return s;
}

static inline int has_prefix(const char *b, const char *e, const char *lit, size_t n)
{
    return (size_t)(e - b) >= n && memcmp(b, lit, n) == 0;
}

#define HAS(b, e, lit) has_prefix((b), (e), (lit), sizeof(lit) - 1)

static inline int slice_has(sh_slice s, const char *lit, size_t n)
{
    return s.len >= n && memcmp(s.ptr, lit, n) == 0;
}

#define SLICE_HAS(s, lit) slice_has((s), (lit), sizeof(lit) - 1)
#define SLICE_IS(s, lit) ((s).len == sizeof(lit) - 1 && memcmp((s).ptr, (lit), (s).len) == 0)

static void frame_clear(sh_frame *f, sh_frame_kind kind)
{
    f->kind = kind;
    f->app = SH_SLICE_EMPTY;
    f->module = SH_SLICE_EMPTY;
    f->function = SH_SLICE_EMPTY;
    f->file = SH_SLICE_EMPTY;
    f->line = 0;
    f->column = 0;
}

static const char *skip_blanks(const char *q, const char *e)
{
    while (q < e && c_blank(*q))
        q++;
    return q;
}

static const char *skip_digits(const char *q, const char *e)
{
    while (q < e && c_digit(*q))
        q++;
    return q;
}

/* Start of the run of digits that ends at e. */
static const char *rskip_digits(const char *b, const char *e)
{
    while (e > b && c_digit(e[-1]))
        e--;
    return e;
}

static const char *find_blank(const char *q, const char *e)
{
    while (q < e && !c_blank(*q))
        q++;
    return q;
}

/* Decimal digits [b, e) as a uint32, clamped at UINT32_MAX. */
static uint32_t parse_u32(const char *b, const char *e)
{
    uint64_t v = 0;
    for (; b < e; b++) {
        v = v * 10 + (uint64_t)(*b - '0');
        if (v > UINT32_MAX)
            v = (uint64_t)UINT32_MAX + 1; /* stays small enough for *10 + 9 */
    }
    return v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
}

/* Cuts ":line" or ":line:col" off the end of [b, e) and returns the end of
 * what remains; *line and *col are 0 when absent. */
static const char *cut_line_col(const char *b, const char *e, uint32_t *line, uint32_t *col)
{
    *line = 0;
    *col = 0;
    const char *d = rskip_digits(b, e);
    if (d == e || d == b || d[-1] != ':')
        return e;
    const char *fe = d - 1;
    uint32_t n = parse_u32(d, e);
    const char *d2 = rskip_digits(b, fe);
    if (d2 < fe && d2 > b && d2[-1] == ':') {
        *line = parse_u32(d2, fe);
        *col = n;
        return d2 - 1;
    }
    *line = n;
    return fe;
}

/* q at an opening quote: returns the matching closing quote (backslash
 * escapes honoured) or NULL. */
static const char *scan_quoted(const char *q, const char *e)
{
    char quote = *q++;
    while (q < e) {
        if (*q == '\\') {
            if (e - q < 2)
                return NULL;
            q += 2;
            continue;
        }
        if (*q == quote)
            return q;
        q++;
    }
    return NULL;
}

/* Walks from q outside quotes, tracking bracket depth (kinds not checked).
 * With stop_at_sep, stops at a ',' outside brackets or at an unmatched
 * closing bracket and returns that position (e when there is none).
 * Without it, q is at an opening bracket and the position after its
 * matching closing bracket is returned, or NULL. */
static const char *scan_brackets(const char *q, const char *e, int stop_at_sep)
{
    const char *fail = stop_at_sep ? e : NULL;
    size_t depth = 0;
    while (q < e) {
        char c = *q;
        if (c == '"' || c == '\'') {
            const char *z = scan_quoted(q, e);
            if (z == NULL)
                return fail;
            q = z + 1;
            continue;
        }
        if (c == '(' || c == '[' || c == '{') {
            depth++;
        } else if (c == ')' || c == ']' || c == '}') {
            if (depth == 0)
                return stop_at_sep ? q : NULL;
            if (--depth == 0 && !stop_at_sep)
                return q + 1;
        } else if (c == ',' && depth == 0 && stop_at_sep) {
            return q;
        }
        q++;
    }
    return fail;
}

/* q at an opening bracket: the position after its matching closing bracket
 * (quotes skipped) or NULL. */
static const char *skip_group(const char *q, const char *e)
{
    return scan_brackets(q, e, 0);
}

/* First position at or after q, outside brackets and quotes, holding ',' or
 * an unmatched closing bracket; e when there is none. */
static const char *skip_to_sep(const char *q, const char *e)
{
    return scan_brackets(q, e, 1);
}

static sh_slice strip_elixir_prefix(sh_slice m)
{
    if (m.len > 7 && memcmp(m.ptr, "Elixir.", 7) == 0) {
        m.ptr += 7;
        m.len -= 7;
    }
    return m;
}

/* ------------------------------------------------------------ Elixir */

/* The function part of an MFA, up to the end of the line: name/arity,
 * "quoted"/arity, name(args) or "quoted"(args). */
static int ex_function(sh_frame *f, const char *b, const char *e)
{
    if (b >= e)
        return 0;
    if (*b == '"') {
        const char *z = scan_quoted(b, e);
        if (z == NULL)
            return 0;
        const char *a = z + 1;
        if (a < e && *a == '/') {
            if (a + 1 == e || skip_digits(a + 1, e) != e)
                return 0;
            f->function = mk(b, e);
            return 1;
        }
        if (a < e && *a == '(' && e[-1] == ')') {
            f->function = mk(b, a);
            return 1;
        }
        return 0;
    }
    /* one pass: the name runs to a blank or parenthesis; the arity follows
     * the last '/' (operators such as // hold slashes themselves) */
    const char *q = b, *slash = NULL;
    for (;;) {
        while (q < e && !cc(*q, C_FSTOP))
            q++;
        if (q < e && *q == '/') {
            slash = q++;
            continue;
        }
        break;
    }
    if (q == e) {
        if (slash == NULL || slash == b || slash + 1 == e || skip_digits(slash + 1, e) != e)
            return 0;
        f->function = mk(b, e);
        return 1;
    }
    if (*q == '(' && q > b && e[-1] == ')') {
        f->function = mk(b, q);
        return 1;
    }
    return 0;
}

/* Module.function: an alias chain or an Erlang atom (:gen_server,
 * :"quoted"), a dot, then the function. */
static int ex_plain_mfa(sh_frame *f, const char *b, const char *e)
{
    const char *q = b;
    if (q >= e)
        return 0;
    if (*q == ':') {
        q++;
        if (q < e && *q == '"') {
            const char *z = scan_quoted(q, e);
            if (z == NULL || z == q + 1)
                return 0;
            f->module = strip_elixir_prefix(mk(q + 1, z));
            q = z + 1;
        } else {
            const char *mb = q;
            while (q < e && (c_word(*q) || *q == '@'))
                q++;
            if (q == mb)
                return 0;
            f->module = mk(mb, q);
        }
        if (q >= e || *q != '.')
            return 0;
        return ex_function(f, q + 1, e);
    }
    if (!c_upper(*q))
        return 0;
    const char *mb = q;
    for (;;) {
        while (q < e && c_word(*q))
            q++;
        if (q >= e || *q != '.')
            return 0;
        if (q + 1 < e && c_upper(q[1])) {
            q++;
            continue;
        }
        break;
    }
    f->module = mk(mb, q);
    return ex_function(f, q + 1, e);
}

/* What follows "file:line: " in an Elixir frame, up to the end of line. */
static int ex_mfa(sh_frame *f, const char *b, const char *e)
{
    if (b >= e)
        return 0;
    if (HAS(b, e, "anonymous fn")) {
        const char *q = b + 12;
        if (q >= e || (*q != '/' && *q != '('))
            return 0;
        /* the enclosing function follows the last " in " */
        for (size_t i = (size_t)(e - q); i >= 4; i--) {
            const char *r = q + i - 4;
            if (r[0] == ' ' && r[1] == 'i' && r[2] == 'n' && r[3] == ' ')
                return ex_plain_mfa(f, r + 4, e);
        }
        return 0;
    }
    if (*b == '(') {
        const char *q = b + 1;
        while (q < e && c_word(*q))
            q++;
        if (q > b + 1 && q + 1 == e && *q == ')') {
            f->function = mk(b, e);
            return 1;
        }
        return 0;
    }
    return ex_plain_mfa(f, b, e);
}

/* "file:line: MFA", "file: MFA" or (with an app prefix only) "MFA". Without
 * the app prefix the file must have a line and no blanks, which keeps log
 * lines such as "Caused by: Foo.bar/1" out. */
static int ex_rest(sh_frame *f, const char *b, const char *e, int with_app)
{
    if (b >= e)
        return 0;
    if (with_app) {
        if (ex_mfa(f, b, e))
            return 1;
        f->module = SH_SLICE_EMPTY;
        f->function = SH_SLICE_EMPTY;
    }
    const char *c = b;
    while (c + 1 < e && !(c[0] == ':' && c[1] == ' '))
        c++; /* the first ": "; short, so a plain loop beats memchr */
    if (c + 1 >= e)
        return 0;
    uint32_t line, col;
    const char *fe = cut_line_col(b, c, &line, &col);
    if (fe == b)
        return 0;
    if (!with_app && (fe == c || find_blank(b, fe) != fe))
        return 0;
    if (!ex_mfa(f, c + 2, e))
        return 0;
    f->file = mk(b, fe);
    f->line = line;
    f->column = col;
    return 1;
}

/* "(app vsn) ..." or "(app) ..."; p at '('. */
static int parse_elixir_app(sh_frame *f, const char *p, const char *e)
{
    const char *ab = p + 1, *q = ab;
    if (q >= e || !c_lower(*q))
        return 0;
    while (q < e && c_word(*q))
        q++;
    const char *ae = q;
    if (q < e && *q == ' ') {
        const char *vb = ++q;
        while (q < e && *q != ')' && !c_blank(*q))
            q++;
        if (q == vb)
            return 0;
    }
    if (e - q < 2 || q[0] != ')' || q[1] != ' ')
        return 0;
    if (!ex_rest(f, q + 2, e, 1))
        return 0;
    f->app = mk(ab, ae);
    return 1;
}

/* ------------------------------------------------------------ Erlang */

/* Unquoted [a-z][A-Za-z0-9_@]* or quoted '...'; *inner excludes quotes. */
static const char *erl_atom(const char *q, const char *e, sh_slice *inner)
{
    if (q >= e)
        return NULL;
    if (*q == '\'') {
        const char *z = scan_quoted(q, e);
        if (z == NULL || z == q + 1)
            return NULL;
        *inner = mk(q + 1, z);
        return z + 1;
    }
    if (!c_lower(*q))
        return NULL;
    const char *b = q;
    while (q < e && (c_word(*q) || *q == '@'))
        q++;
    *inner = mk(b, q);
    return q;
}

/* "file, line N", "file:N[:C]" or "file" inside the parentheses. */
static int erl_location(sh_frame *f, const char *b, const char *e)
{
    const char *c = b;
    while ((c = memchr(c, ',', (size_t)(e - c))) != NULL) {
        if (HAS(c, e, ", line ")) {
            const char *d = c + 7, *de = skip_digits(d, e);
            if (de == d || de != e || c == b)
                return 0;
            f->file = mk(b, c);
            f->line = parse_u32(d, de);
            return 1;
        }
        c++;
    }
    uint32_t line, col;
    const char *fe = cut_line_col(b, e, &line, &col);
    if (fe == b)
        return 0;
    f->file = mk(b, fe);
    f->line = line;
    f->column = col;
    return 1;
}

/* After "in function", "in call from" or "in operator". */
static int parse_erlang_in(sh_frame *f, const char *q, const char *e, int op)
{
    q = skip_blanks(q, e);
    const char *fb = q, *z;
    if (op) {
        z = find_blank(q, e);
        const char *d = rskip_digits(q, z);
        if (d == z || d - q < 2 || d[-1] != '/')
            return 0;
        f->function = mk(fb, z);
    } else {
        sh_slice mod = SH_SLICE_EMPTY, fun;
        z = erl_atom(q, e, &fun);
        if (z == NULL || z >= e)
            return 0;
        if (*z == ':') { /* auto-imported BIFs come without "erlang:" */
            mod = fun;
            fb = z + 1;
            z = erl_atom(fb, e, &fun);
            if (z == NULL || z >= e)
                return 0;
        }
        if (*z == '/') {
            const char *d = z + 1;
            z = skip_digits(d, e);
            if (z == d)
                return 0;
            f->function = mk(fb, z);
        } else if (*z == '(') {
            const char *a = z;
            z = skip_group(a, e);
            if (z == NULL)
                return 0;
            f->function = mk(fb, a);
        } else {
            return 0;
        }
        f->module = strip_elixir_prefix(mod);
    }
    z = skip_blanks(z, e);
    if (z == e)
        return 1;
    if (*z != '(' || e - z < 3 || e[-1] != ')')
        return 0;
    return erl_location(f, z + 1, e - 1);
}

/* Module or function of a stack-entry term: x, 'x', :x, :"x" or an Elixir
 * alias (the term as Elixir's inspect prints it). */
static const char *term_atom(const char *q, const char *e, sh_slice *out)
{
    if (q >= e)
        return NULL;
    if (*q == ':') {
        q++;
        if (q < e && *q == '"') {
            const char *z = scan_quoted(q, e);
            if (z == NULL || z == q + 1)
                return NULL;
            *out = mk(q + 1, z);
            return z + 1;
        }
        const char *b = q;
        while (q < e && (c_word(*q) || *q == '@' || *q == '?' || *q == '!'))
            q++;
        if (q == b)
            return NULL;
        *out = mk(b, q);
        return q;
    }
    if (c_upper(*q)) {
        const char *b = q;
        while (q < e && (c_word(*q) || *q == '.'))
            q++;
        *out = mk(b, q);
        return q;
    }
    return erl_atom(q, e, out);
}

/* "..." / '...' / ~c"..." */
static const char *term_string(const char *q, const char *e, sh_slice *out)
{
    if (HAS(q, e, "~c"))
        q += 2;
    if (q >= e || (*q != '"' && *q != '\''))
        return NULL;
    const char *z = scan_quoted(q, e);
    if (z == NULL)
        return NULL;
    *out = mk(q + 1, z);
    return z + 1;
}

/* The location list [{file,"x"},{line,1}] or [file: ~c"x", line: 1]; q at
 * '['. Returns the position after ']' or NULL. */
static const char *term_location(sh_frame *f, const char *q, const char *e)
{
    q = skip_blanks(q + 1, e);
    while (q < e && *q != ']') {
        int tuple = *q == '{';
        const char *k = tuple ? skip_blanks(q + 1, e) : q;
        sh_slice key;
        const char *z = erl_atom(k, e, &key), *v = NULL;
        if (z != NULL) {
            if (tuple) {
                z = skip_blanks(z, e);
                if (z < e && *z == ',')
                    v = skip_blanks(z + 1, e);
            } else if (e - z >= 2 && z[0] == ':' && c_blank(z[1])) {
                v = skip_blanks(z + 1, e);
            }
        }
        if (v != NULL) {
            if (SLICE_IS(key, "file")) {
                term_string(v, e, &f->file);
            } else if (SLICE_IS(key, "line") && v < e && c_digit(*v)) {
                f->line = parse_u32(v, skip_digits(v, e));
            }
        }
        if (tuple) {
            q = skip_group(q, e);
            if (q == NULL)
                return NULL;
            q = skip_blanks(q, e);
        } else {
            q = skip_to_sep(q, e);
        }
        if (q < e && *q == ',') {
            q = skip_blanks(q + 1, e);
            continue;
        }
        if (q < e && *q == ']')
            break;
        return NULL;
    }
    return q < e ? q + 1 : NULL;
}

/* {Module, Function, Arity | Args, Location}, optionally after '[' or ',';
 * only closing brackets, commas and blanks may follow. */
static int parse_erlang_term(sh_frame *f, const char *q, const char *e)
{
    if (*q == '[' || *q == ',')
        q = skip_blanks(q + 1, e);
    if (q >= e || *q != '{')
        return 0;
    sh_slice mod, fun;
    q = term_atom(skip_blanks(q + 1, e), e, &mod);
    if (q == NULL)
        return 0;
    q = skip_blanks(q, e);
    if (q >= e || *q != ',')
        return 0;
    q = term_atom(skip_blanks(q + 1, e), e, &fun);
    if (q == NULL)
        return 0;
    q = skip_blanks(q, e);
    if (q >= e || *q != ',')
        return 0;
    q = skip_blanks(q + 1, e);
    if (q < e && c_digit(*q))
        q = skip_digits(q, e);
    else if (q < e && *q == '[')
        q = skip_group(q, e);
    else
        return 0;
    if (q == NULL)
        return 0;
    q = skip_blanks(q, e);
    if (q >= e || *q != ',')
        return 0;
    q = skip_blanks(q + 1, e);
    if (q >= e || *q != '[')
        return 0;
    q = term_location(f, q, e);
    if (q == NULL)
        return 0;
    q = skip_blanks(q, e);
    if (q >= e || *q != '}')
        return 0;
    for (q++; q < e; q++)
        if (!c_blank(*q) && *q != ',' && *q != ']' && *q != '}' && *q != ')')
            return 0;
    f->module = strip_elixir_prefix(mod);
    f->function = fun;
    return 1;
}

/* ------------------------------------------------------------ Python */

/* After `File "`: path", line N[, in name] */
static int parse_python(sh_frame *f, const char *q, const char *e)
{
    const char *fb = q, *c;
    for (;;) {
        c = memchr(q, '"', (size_t)(e - q));
        if (c == NULL)
            return 0;
        if (HAS(c, e, "\", line "))
            break;
        q = c + 1;
    }
    const char *d = c + 8, *de = skip_digits(d, e);
    if (de == d || c == fb)
        return 0;
    if (de < e) {
        if (!HAS(de, e, ", in "))
            return 0;
        f->function = mk(de + 5, e);
    }
    f->file = mk(fb, c);
    f->line = parse_u32(d, de);
    return 1;
}

/* ------------------------------------------------------------ Java */

/* After "at ": [loader/][module[@vsn]/]pkg.Class.method(File.java:N) */
static int parse_java(sh_frame *f, const char *b, const char *e)
{
    if (e > b && e[-1] == ']') { /* logback packaging data: ") ~[app.jar:1.0]" */
        const char *r = e - 1;
        while (r > b && *r != '[')
            r--;
        const char *s = r;
        if (s > b && s[-1] == '~')
            s--;
        if (*r == '[' && s > b && c_blank(s[-1]))
            e = s - 1;
        while (e > b && c_blank(e[-1]))
            e--;
    }
    if (e - b < 4 || e[-1] != ')')
        return 0;
    const char *paren = b;
    while (paren < e && *paren != '(' && !c_blank(*paren))
        paren++;
    if (paren >= e || *paren != '(' || paren == b)
        return 0;
    const char *nb = b, *dot = NULL;
    for (const char *r = b; r < paren; r++) {
        if (*r == '/') {
            nb = r + 1;
            dot = NULL;
        } else if (*r == '.') {
            dot = r;
        }
    }
    if (dot == NULL || dot == nb || dot + 1 == paren)
        return 0;
    const char *ib = paren + 1, *ie = e - 1;
    if (ib == ie)
        return 0;
    for (const char *r = ib; r < ie; r++)
        if (*r == '(' || *r == ')')
            return 0;
    f->module = mk(nb, dot);
    f->function = mk(dot + 1, paren);
    sh_slice in = mk(ib, ie);
    if (SLICE_IS(in, "Native Method") || SLICE_IS(in, "Unknown Source"))
        return 1;
    uint32_t line, col;
    const char *fe = cut_line_col(ib, ie, &line, &col);
    if (fe == ib)
        return 0;
    f->file = mk(ib, fe);
    f->line = line;
    f->column = col;
    return 1;
}

/* ------------------------------------------------------------ JavaScript */

/* Location of a V8 frame, inside its parentheses. */
static int v8_location(sh_frame *f, const char *b, const char *e)
{
    uint32_t line, col;
    if (HAS(b, e, "eval at ")) {
        /* the innermost "(file:line:col)" is where eval was called */
        const char *close = memchr(b, ')', (size_t)(e - b));
        const char *open = NULL;
        if (close != NULL) {
            for (const char *r = close; r > b; r--) {
                if (r[-1] == '(') {
                    open = r - 1;
                    break;
                }
            }
        }
        if (open != NULL) {
            b = open + 1;
            e = close;
        } else {
            const char *r = e;
            while (r > b && !(r[-1] == ' ' && r - 1 > b && r[-2] == ','))
                r--;
            if (r == b)
                return 1; /* no usable location: leave the file empty */
            b = r;
        }
    } else if (HAS(b, e, "index ") && skip_digits(b + 6, e) == e) {
        return 1; /* Promise.all (index N) */
    }
    const char *fe = cut_line_col(b, e, &line, &col);
    if (fe == b)
        return 0;
    f->file = mk(b, fe);
    f->line = line;
    f->column = col;
    return 1;
}

/* After "at ": "fn (location)" or "location". */
static int parse_v8(sh_frame *f, const char *b, const char *e)
{
    if (HAS(b, e, "async "))
        b = skip_blanks(b + 6, e);
    if (b >= e)
        return 0;
    if (e[-1] != ')') {
        uint32_t line, col;
        if (find_blank(b, e) != e)
            return 0;
        sh_slice loc = mk(b, e);
        if (SLICE_IS(loc, "native") || SLICE_IS(loc, "<anonymous>")) {
            f->file = loc;
            return 1;
        }
        const char *fe = cut_line_col(b, e, &line, &col);
        if (fe == e || fe == b)
            return 0;
        f->file = mk(b, fe);
        f->line = line;
        f->column = col;
        return 1;
    }
    size_t depth = 0;
    const char *open = NULL;
    for (const char *r = e; r > b;) {
        r--;
        if (*r == ')') {
            depth++;
        } else if (*r == '(' && --depth == 0) {
            open = r;
            break;
        }
    }
    if (open == NULL)
        return 0;
    const char *fb = b, *fe = open;
    while (fe > fb && c_blank(fe[-1]))
        fe--;
    if (fe == open && open != b)
        return 0; /* V8 always puts a blank before the location */
    for (;;) {
        if (HAS(fb, fe, "new "))
            fb = skip_blanks(fb + 4, fe);
        else if (HAS(fb, fe, "async "))
            fb = skip_blanks(fb + 6, fe);
        else
            break;
    }
    if (fe > fb && fe[-1] == ']') { /* "Foo.bar [as baz]" */
        const char *r = fe - 1;
        while (r > fb && *r != '[')
            r--;
        if (r > fb && r[-1] == ' ' && HAS(r, fe, "[as ")) {
            fe = r - 1;
            while (fe > fb && c_blank(fe[-1]))
                fe--;
        }
    }
    if (!v8_location(f, open + 1, e - 1))
        return 0;
    f->function = mk(fb, fe);
    return 1;
}

/* "fn@location:line:col" (Firefox, Safari); at is the first '@'. */
static int parse_firefox(sh_frame *f, const char *b, const char *at, const char *e)
{
    const char *lb = at + 1;
    for (const char *r = b; r + 1 < at; r++)
        if (r[0] == ':' && r[1] == ' ')
            return 0; /* "Error: mail me@x:1" is a message, not a frame */
    sh_slice loc = mk(lb, e);
    if (SLICE_IS(loc, "[native code]")) {
        f->file = loc;
    } else {
        /* Firefox eval: "url line 2 > eval:1:5" -> url, line 2 */
        const char *s = lb, *evl = NULL;
        while ((s = memchr(s, ' ', (size_t)(e - s))) != NULL) {
            if (HAS(s, e, " line ") && s > lb) {
                const char *d = s + 6, *de = skip_digits(d, e);
                if (de > d && HAS(de, e, " > ")) {
                    evl = s;
                    f->file = mk(lb, s);
                    f->line = parse_u32(d, de);
                    break;
                }
            }
            s++;
        }
        if (evl == NULL) {
            uint32_t line, col;
            const char *fe = cut_line_col(lb, e, &line, &col);
            if (fe == e || fe == lb)
                return 0;
            f->file = mk(lb, fe);
            f->line = line;
            f->column = col;
        }
    }
    const char *fb = b;
    for (const char *r = b; r < at; r++)
        if (*r == '*')
            fb = r + 1; /* "async*fn", "promise callback*fn" */
    f->function = mk(fb, at);
    return 1;
}

/* ------------------------------------------------------------ Go */

/* A goroutine dump's file line: path.go:N, optionally " +0x1d". */
static int parse_go(sh_frame *f, const char *p, const char *e)
{
    const char *q = e;
    if (e - p > 4) {
        const char *plus = NULL;
        for (const char *r = e - 1; r > p; r--)
            if (r[0] == '+' && r[-1] == ' ') {
                plus = r - 1;
                break;
            }
        if (plus != NULL && HAS(plus, e, " +0x"))
            q = plus;
    }
    const char *d = rskip_digits(p, q);
    if (d == q || d - p < 5 || d[-1] != ':' || !HAS(d - 4, q, ".go:"))
        return 0;
    if (find_blank(p, d - 1) != d - 1)
        return 0;
    f->file = mk(p, d - 1);
    f->line = parse_u32(d, q);
    return 1;
}

/* The function of a goroutine dump's "pkg/path.(*T).Method(args)" or
 * "created by pkg/path.f in goroutine N" line: module "pkg/path",
 * function "(*T).Method". */
static void go_function(sh_frame *f, const char *p, const char *e)
{
    while (e > p && (e[-1] == '\r' || c_blank(e[-1])))
        e--;
    p = skip_blanks(p, e);
    const char *paren = NULL;
    if (HAS(p, e, "created by ")) {
        /* "created by pkg.f in goroutine 1": no arguments */
        p += 11;
        paren = find_blank(p, e);
    } else {
        for (const char *r = p; r < e; r++)
            if (*r == '(' && r > p && r[-1] != '.' && r[-1] != '/') {
                paren = r;
                break;
            }
        if (paren == NULL || e[-1] != ')')
            return;
    }
    const char *slash = p;
    for (const char *r = p; r < paren; r++)
        if (*r == '/')
            slash = r + 1;
    const char *dot = memchr(slash, '.', (size_t)(paren - slash));
    if (dot == NULL)
        return;
    f->module = mk(p, dot);
    f->function = mk(dot + 1, paren);
}

/* ------------------------------------------------------------ lines */

int sh_frame_parse_line(sh_frame *out, const char *line, size_t len)
{
    if (out == NULL)
        return 0;
    /* Parsed in place: every attempt starts from a cleared frame, and a
     * line that is no frame leaves *out cleared (kind SH_FRAME_UNKNOWN). */
    sh_frame *f = out;
    const char *p = line, *e = line;
    if (line != NULL)
        e += len;
    while (e > p && (e[-1] == '\r' || c_blank(e[-1])))
        e--;
    p = skip_blanks(p, e);
    if (p == e)
        goto none;

    switch (*p) {
    case '(':
        frame_clear(f, SH_FRAME_ELIXIR);
        if (parse_elixir_app(f, p, e))
            goto found;
        break;
    case 'a':
        if (e - p > 3 && p[1] == 't' && c_blank(p[2])) {
            const char *q = skip_blanks(p + 3, e), *t = q;
            while (t < e && *t != '(' && !c_blank(*t))
                t++;
            if (t < e && *t == '(') {
                frame_clear(f, SH_FRAME_JAVA);
                if (parse_java(f, q, e))
                    goto found;
            }
            frame_clear(f, SH_FRAME_JS);
            if (parse_v8(f, q, e))
                goto found;
        }
        break;
    case 'F':
        if (HAS(p, e, "File \"")) {
            frame_clear(f, SH_FRAME_PYTHON);
            if (parse_python(f, p + 6, e))
                goto found;
        }
        break;
    case 'i':
        frame_clear(f, SH_FRAME_ERLANG);
        if (HAS(p, e, "in function ")) {
            if (parse_erlang_in(f, p + 12, e, 0))
                goto found;
        } else if (HAS(p, e, "in call from ")) {
            if (parse_erlang_in(f, p + 13, e, 0))
                goto found;
        } else if (HAS(p, e, "in operator ")) {
            if (parse_erlang_in(f, p + 12, e, 1))
                goto found;
        }
        break;
    case '[':
        if (SLICE_IS(mk(p, e), "[native code]")) {
            frame_clear(f, SH_FRAME_JS);
            f->file = mk(p, e);
            goto found;
        }
        /* fall through */
    case '{':
    case ',':
        frame_clear(f, SH_FRAME_ERLANG);
        if (parse_erlang_term(f, p, e))
            goto found;
        break;
    default:
        break;
    }
    if (e - p > 5 && e[-1] != ')') {
        frame_clear(f, SH_FRAME_GO);
        if (parse_go(f, p, e))
            goto found;
    }
    {
        const char *at = memchr(p, '@', (size_t)(e - p));
        if (at != NULL) {
            frame_clear(f, SH_FRAME_JS);
            if (parse_firefox(f, p, at, e))
                goto found;
        }
    }
    frame_clear(f, SH_FRAME_ELIXIR);
    if (ex_rest(f, p, e, 0))
        goto found;
none:
    frame_clear(f, SH_FRAME_UNKNOWN);
    return 0;
found:
    return 1;
}

size_t sh_frames_parse_text(sh_frame *out, size_t max, const char *text, size_t len)
{
    size_t n = 0;
    if (out == NULL || text == NULL)
        return 0;
    const char *p = text, *e = text + len, *prev = NULL, *prev_end = NULL;
    while (n < max && p < e) {
        const char *nl = memchr(p, '\n', (size_t)(e - p));
        const char *le = nl != NULL ? nl : e;
        if (sh_frame_parse_line(&out[n], p, (size_t)(le - p))) {
            if (out[n].kind == SH_FRAME_GO && prev != NULL)
                go_function(&out[n], prev, prev_end);
            n++;
        }
        prev = p;
        prev_end = le;
        if (nl == NULL)
            break;
        p = nl + 1;
    }
    return n;
}

/* ------------------------------------------------------------ canonical file */

/* Receives the canonical file: appended to a buffer, or compared with a
 * prefix without building it. */
typedef struct canon_sink {
    sh_buf *buf;
    const char *want;
    size_t want_len;
    size_t pos;
    int mismatch;
} canon_sink;

static void sink_put(canon_sink *s, const char *p, size_t n)
{
    if (s->buf != NULL) {
        sh_buf_append(s->buf, p, n);
        return;
    }
    if (!s->mismatch && s->pos < s->want_len) {
        size_t k = s->want_len - s->pos;
        if (k > n)
            k = n;
        if (memcmp(p, s->want + s->pos, k) != 0)
            s->mismatch = 1;
    }
    s->pos += n;
}

/* Length of a leading "scheme://", or 0. */
static size_t url_scheme_len(const char *p, size_t n)
{
    if (n == 0 || !c_alpha(p[0]))
        return 0;
    size_t i = 1;
    while (i < n && (c_alnum(p[i]) || p[i] == '+' || p[i] == '-' || p[i] == '.'))
        i++;
    if (n - i >= 3 && p[i] == ':' && p[i + 1] == '/' && p[i + 2] == '/')
        return i + 3;
    return 0;
}

/* A cache-busting hash: >= 6 hex chars with a digit, or >= 8 alphanumerics
 * with a digit and a letter. */
static int is_hash_part(const char *b, const char *e)
{
    size_t n = (size_t)(e - b);
    int digit = 0, letter = 0, hex = 1;
    for (; b < e; b++) {
        char c = *b;
        if (c_digit(c))
            digit = 1;
        else if (c_alpha(c))
            letter = 1;
        else
            return 0;
        if (!c_hex(c))
            hex = 0;
    }
    return (n >= 6 && hex && digit) || (n >= 8 && digit && letter);
}

static void emit_file_name(canon_sink *s, const char *b, const char *e)
{
    const char *q = b;
    while (q < e && *q != '.' && *q != '-')
        q++;
    sink_put(s, b, (size_t)(q - b)); /* the first part always stays */
    while (q < e) {
        const char *sep = q, *pe = q + 1;
        while (pe < e && *pe != '.' && *pe != '-')
            pe++;
        if (!is_hash_part(sep + 1, pe))
            sink_put(s, sep, (size_t)(pe - sep));
        q = pe;
    }
}

static void canon_emit(canon_sink *s, const char *p, size_t n)
{
    size_t sl = url_scheme_len(p, n);
    if (sl == 0) {
        sink_put(s, p, n);
        return;
    }
    const char *e = p + n, *a = p + sl;
    while (a < e && *a != '/' && *a != '?' && *a != '#')
        a++; /* userinfo, host and port */
    const char *pe = a;
    while (pe < e && *pe != '?' && *pe != '#')
        pe++;
    if ((sl == 10 && memcmp(p, "webpack://", 10) == 0) ||
        (sl == 19 && memcmp(p, "webpack-internal://", 19) == 0)) {
        const char *r = a;
        if (r < pe && *r == '/')
            r++;
        while (pe - r >= 2 && r[0] == '.' && r[1] == '/')
            r += 2;
        sink_put(s, r, (size_t)(pe - r));
        return;
    }
    if (sl == 7 && memcmp(p, "file://", 7) == 0) {
        sink_put(s, a, (size_t)(pe - a));
        return;
    }
    if (a == pe) {
        sink_put(s, "/", 1);
        return;
    }
    const char *slash = pe;
    while (slash > a && slash[-1] != '/')
        slash--;
    sink_put(s, a, (size_t)(slash - a));
    emit_file_name(s, slash, pe);
}

void sh_frame_file_canonical(sh_buf *out, sh_slice file)
{
    canon_sink s = {out, NULL, 0, 0, 0};
    if (file.len == 0)
        return;
    canon_emit(&s, file.ptr, file.len);
}

static int canon_starts_with(sh_slice file, sh_slice prefix)
{
    canon_sink s = {NULL, prefix.ptr, prefix.len, 0, 0};
    canon_emit(&s, file.ptr, file.len);
    return !s.mismatch && s.pos >= prefix.len;
}

/* ------------------------------------------------------------ in-app */

/* A table entry with its length. Tables are sorted (LC_ALL=C) for bsearch. */
typedef struct name_entry {
    const char *s;
    size_t n;
} name_entry;

#define N(lit)                                                                                     \
    {                                                                                              \
        (lit), sizeof(lit) - 1                                                                     \
    }

static int in_table(sh_slice s, const name_entry *table, size_t n)
{
    size_t lo = 0, hi = n;
    if (s.len == 0)
        return 0;
    unsigned char c0 = (unsigned char)s.ptr[0];
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const name_entry *t = &table[mid];
        int r = (int)c0 - (int)(unsigned char)t->s[0];
        if (r == 0) {
            size_t k = s.len < t->n ? s.len : t->n;
            r = memcmp(s.ptr, t->s, k);
            if (r == 0)
                r = s.len < t->n ? -1 : s.len > t->n ? 1 : 0;
        }
        if (r == 0)
            return 1;
        if (r < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return 0;
}

#define IN_TABLE(s, t) in_table((s), (t), sizeof(t) / sizeof((t)[0]))

static const name_entry otp_apps[] = {
    N("asn1"),     N("common_test"),   N("compiler"),     N("crypto"),     N("debugger"),
    N("dialyzer"), N("diameter"),      N("edoc"),         N("eex"),        N("eldap"),
    N("elixir"),   N("erl_interface"), N("erts"),         N("et"),         N("eunit"),
    N("ex_unit"),  N("ftp"),           N("iex"),          N("inets"),      N("jinterface"),
    N("kernel"),   N("logger"),        N("megaco"),       N("mix"),        N("mnesia"),
    N("observer"), N("odbc"),          N("os_mon"),       N("parsetools"), N("public_key"),
    N("reltool"),  N("runtime_tools"), N("sasl"),         N("snmp"),       N("ssh"),
    N("ssl"),      N("stdlib"),        N("syntax_tools"), N("tftp"),       N("tools"),
    N("wx"),       N("xmerl"),
};

static const name_entry elixir_namespaces[] = {
    N("Access"),
    N("Agent"),
    N("Application"),
    N("Atom"),
    N("Base"),
    N("Bitwise"),
    N("Calendar"),
    N("Code"),
    N("Collectable"),
    N("Config"),
    N("Date"),
    N("DateTime"),
    N("DynamicSupervisor"),
    N("EEx"),
    N("Enum"),
    N("Enumerable"),
    N("ExUnit"),
    N("Exception"),
    N("File"),
    N("Float"),
    N("Function"),
    N("GenServer"),
    N("IEx"),
    N("IO"),
    N("Inspect"),
    N("Integer"),
    N("Kernel"),
    N("Keyword"),
    N("List"),
    N("Logger"),
    N("Macro"),
    N("Map"),
    N("MapSet"),
    N("Mix"),
    N("Module"),
    N("NaiveDateTime"),
    N("Node"),
    N("OptionParser"),
    N("PartitionSupervisor"),
    N("Path"),
    N("Port"),
    N("Process"),
    N("Protocol"),
    N("Range"),
    N("Record"),
    N("Regex"),
    N("Registry"),
    N("Stream"),
    N("String"),
    N("StringIO"),
    N("Supervisor"),
    N("System"),
    N("Task"),
    N("Time"),
    N("Tuple"),
    N("URI"),
    N("Version"),
};

static const name_entry otp_modules[] = {
    N("application"),
    N("application_controller"),
    N("application_master"),
    N("application_starter"),
    N("array"),
    N("atomics"),
    N("base64"),
    N("beam_lib"),
    N("binary"),
    N("c"),
    N("calendar"),
    N("code"),
    N("code_server"),
    N("counters"),
    N("crypto"),
    N("dets"),
    N("dict"),
    N("digraph"),
    N("disk_log"),
    N("dist_util"),
    N("edlin"),
    N("elixir"),
    N("epp"),
    N("erlang"),
    N("erpc"),
    N("error_handler"),
    N("error_logger"),
    N("ets"),
    N("eunit"),
    N("file"),
    N("file_io_server"),
    N("file_server"),
    N("filelib"),
    N("filename"),
    N("gb_sets"),
    N("gb_trees"),
    N("gen"),
    N("gen_event"),
    N("gen_fsm"),
    N("gen_sctp"),
    N("gen_server"),
    N("gen_statem"),
    N("gen_tcp"),
    N("gen_tcp_socket"),
    N("gen_udp"),
    N("gen_udp_socket"),
    N("global"),
    N("global_group"),
    N("group"),
    N("group_history"),
    N("heart"),
    N("httpc"),
    N("httpd"),
    N("inet"),
    N("init"),
    N("io"),
    N("io_lib"),
    N("io_lib_pretty"),
    N("kernel_config"),
    N("lists"),
    N("logger"),
    N("maps"),
    N("math"),
    N("mnesia"),
    N("net_adm"),
    N("net_kernel"),
    N("orddict"),
    N("ordsets"),
    N("os"),
    N("otp_internal"),
    N("peer"),
    N("persistent_term"),
    N("pg"),
    N("proc_lib"),
    N("proplists"),
    N("public_key"),
    N("qlc"),
    N("queue"),
    N("ram_file"),
    N("rand"),
    N("raw_file_io"),
    N("re"),
    N("rpc"),
    N("sets"),
    N("shell"),
    N("slave"),
    N("socket"),
    N("ssh"),
    N("ssl"),
    N("standard_error"),
    N("string"),
    N("supervisor"),
    N("supervisor_bridge"),
    N("sys"),
    N("timer"),
    N("unicode"),
    N("unicode_util"),
    N("uri_string"),
    N("user_drv"),
    N("user_sup"),
    N("zlib"),
};

/* Families of OTP and Elixir-internal Erlang modules. */
static const name_entry otp_module_prefixes[] = {
    N("application_"), N("beam_"), N("disk_log_"), N("dtls_"),   N("elixir_"),
    N("erl_"),         N("erts_"), N("eunit_"),    N("httpc_"),  N("httpd_"),
    N("inet6_"),       N("inet_"), N("io_lib_"),   N("logger_"), N("mnesia_"),
    N("prim_"),        N("ssh_"),  N("ssl_"),      N("tls_"),
};

static int is_otp_module(sh_slice m)
{
    if (IN_TABLE(m, otp_modules))
        return 1;
    for (size_t i = 0; i < sizeof(otp_module_prefixes) / sizeof(otp_module_prefixes[0]); i++) {
        const name_entry *pfx = &otp_module_prefixes[i];
        if (pfx->s[0] == m.ptr[0] && slice_has(m, pfx->s, pfx->n))
            return 1;
    }
    return 0;
}

static int is_elixir_std_module(sh_slice m)
{
    const char *dot = memchr(m.ptr, '.', m.len);
    if (dot != NULL)
        m.len = (size_t)(dot - m.ptr);
    return IN_TABLE(m, elixir_namespaces);
}

/* deps/, node_modules/, site-packages/, dist-packages/ as a path segment,
 * or /usr/lib/, /lib/erlang/ anywhere. */
static int is_vendor_path(sh_slice file)
{
    const char *p = file.ptr, *e = p + file.len, *q = p;
    while (q < e) {
        switch (*q) {
        case 'd':
            if (HAS(q, e, "deps/") || HAS(q, e, "dist-packages/"))
                return 1;
            break;
        case 'n':
            if (HAS(q, e, "node_modules/"))
                return 1;
            break;
        case 's':
            if (HAS(q, e, "site-packages/"))
                return 1;
            break;
        case 'u':
            if (q > p && HAS(q, e, "usr/lib/"))
                return 1;
            break;
        case 'l':
            if (q > p && HAS(q, e, "lib/erlang/"))
                return 1;
            break;
        default:
            break;
        }
        const char *slash = memchr(q, '/', (size_t)(e - q));
        if (slash == NULL)
            return 0;
        q = slash + 1;
    }
    return 0;
}

static int slice_contains(sh_slice s, const char *lit)
{
    size_t n = strlen(lit);
    for (size_t i = 0; i + n <= s.len; i++)
        if (memcmp(s.ptr + i, lit, n) == 0)
            return 1;
    return 0;
}

static int heuristic_in_app(const sh_frame *f)
{
    if (f->app.len > 0 && IN_TABLE(f->app, otp_apps))
        return 0;
    /* SH_FRAME_UNKNOWN too: frames built by hand from BEAM stacktraces */
    if ((f->kind == SH_FRAME_ELIXIR || f->kind == SH_FRAME_ERLANG || f->kind == SH_FRAME_UNKNOWN) &&
        f->module.len > 0) {
        if (c_upper(f->module.ptr[0]) ? is_elixir_std_module(f->module) : is_otp_module(f->module))
            return 0;
    }
    if (f->kind == SH_FRAME_JAVA) {
        sh_slice m = f->module;
        if (SLICE_HAS(m, "java.") || SLICE_HAS(m, "javax.") || SLICE_HAS(m, "sun.") ||
            SLICE_HAS(m, "jdk.") || SLICE_HAS(m, "kotlin.") || SLICE_HAS(m, "kotlinx.") ||
            SLICE_HAS(m, "com.sun.") || SLICE_HAS(m, "scala."))
            return 0;
    }
    if (f->kind == SH_FRAME_JS) {
        sh_slice fl = f->file;
        if (fl.len == 0 || SLICE_IS(fl, "native") || SLICE_IS(fl, "<anonymous>") ||
            SLICE_IS(fl, "[native code]") || SLICE_HAS(fl, "node:") || SLICE_HAS(fl, "internal/"))
            return 0;
    }
    if (f->kind == SH_FRAME_PYTHON && SLICE_HAS(f->file, "<frozen "))
        return 0;
    /* Go's own packages (GOROOT/src) and modules (GOPATH/pkg/mod) */
    if (f->kind == SH_FRAME_GO &&
        (SLICE_IS(f->module, "runtime") || slice_contains(f->file, "/go/src/") ||
         slice_contains(f->file, "/pkg/mod/") || slice_contains(f->file, "/libexec/src/")))
        return 0;
    if (f->file.len > 0 && is_vendor_path(f->file))
        return 0;
    return 1;
}

int sh_frame_is_in_app(const sh_frame *frame, const sh_inapp_config *config)
{
    if (frame == NULL)
        return 0;
    if (config == NULL || (config->napps == 0 && config->nprefixes == 0))
        return heuristic_in_app(frame);
    if (frame->app.len > 0) {
        for (size_t i = 0; i < config->napps; i++)
            if (config->apps[i].len > 0 && sh_slice_eq(frame->app, config->apps[i]))
                return 1;
    }
    int url = url_scheme_len(frame->file.ptr, frame->file.len) != 0;
    for (size_t i = 0; i < config->nprefixes; i++) {
        sh_slice pfx = config->prefixes[i];
        if (pfx.len == 0)
            continue;
        if (sh_slice_starts_with(frame->module, pfx.ptr, pfx.len) ||
            sh_slice_starts_with(frame->file, pfx.ptr, pfx.len))
            return 1;
        if (url && canon_starts_with(frame->file, pfx))
            return 1;
    }
    return 0;
}

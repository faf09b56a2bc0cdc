/*
 * Stack frames: parsing text stack traces of Elixir, Erlang, JavaScript
 * (V8 and Firefox/Safari), Python, Java and Go (a goroutine dump's file
 * lines, with the function from the line before in sh_frames_parse_text), the canonical form of a
 * frame's file, and the in-app decision.
 */
#ifndef SELF_HEAL_FRAMES_H
#define SELF_HEAL_FRAMES_H

#include "self_heal/common.h"

typedef enum sh_frame_kind {
    SH_FRAME_UNKNOWN = 0,
    SH_FRAME_ELIXIR,
    SH_FRAME_ERLANG,
    SH_FRAME_JS,
    SH_FRAME_PYTHON,
    SH_FRAME_JAVA,
    SH_FRAME_GO,
} sh_frame_kind;

/* Slices point into the parsed text (or the caller's strings). */
typedef struct sh_frame {
    sh_frame_kind kind;
    sh_slice app;      /* OTP application ("(my_app 0.1.0)" -> my_app), or empty */
    sh_slice module;   /* Elixir/Erlang module, Java class, Python module; may be empty */
    sh_slice function; /* "fun/2", JS/Java/Python function name; may be empty */
    sh_slice file;     /* path or URL as written (line/column already cut off) */
    uint32_t line;     /* 0 when unknown */
    uint32_t column;   /* 0 when unknown */
} sh_frame;

/* Parses one line of a stack trace (leading blanks allowed). Returns 1 and
 * fills *out when the line is a frame of a known syntax, 0 otherwise. */
int sh_frame_parse_line(sh_frame *out, const char *line, size_t len);

/* Parses every line of text; stores up to max frames in out and returns
 * how many were stored. Lines that are not frames are skipped. */
size_t sh_frames_parse_text(sh_frame *out, size_t max, const char *text, size_t len);

/* Appends the canonical file of a frame to out: for URLs the scheme, host,
 * port, query and fragment are dropped and cache-busting hashes removed
 * from the file name (app.3f9a2b1c.js -> app.js, main-4f7a9e2b.js ->
 * main.js, chunk.abc123def456.min.js -> chunk.min.js); for paths the
 * text is kept as written but for a webpack:/// or file:// prefix. */
void sh_frame_file_canonical(sh_buf *out, sh_slice file);

/* Which frames belong to the application. An empty configuration uses a
 * heuristic: a frame is NOT in-app when its OTP app is one of Erlang/OTP's
 * or Elixir's own applications, its Erlang module is an OTP module, its
 * Elixir module is in Elixir's standard namespaces (Enum, GenServer,
 * Kernel, ...), its path holds deps/, node_modules/, site-packages/,
 * dist-packages/, /usr/lib/, /lib/erlang/, or it is a java./javax./sun./
 * jdk./kotlin. class or a JS native/<anonymous> frame. */
typedef struct sh_inapp_config {
    const sh_slice *apps; /* OTP application names */
    size_t napps;
    const sh_slice *prefixes; /* path, URL or module prefixes */
    size_t nprefixes;
} sh_inapp_config;

int sh_frame_is_in_app(const sh_frame *frame, const sh_inapp_config *config);

#endif

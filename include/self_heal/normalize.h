/*
 * Message normalisation: replaces the variable parts of an error message
 * with typed placeholders so that occurrences of one error compare equal.
 *
 * Placeholders (all ASCII, in angle brackets; the exact rules are at the
 * top of c_src/normalize.c and in docs/fingerprint.md):
 *   <ts>      timestamps and dates: ISO-8601, RFC 3339, syslog
 *             ("Jan  2 15:04:05"), common log format
 *             ("10/Oct/2000:13:55:36 -0700"), HTTP dates, bare dates and
 *             clock times
 *   <dur>     durations with a unit: 150ms, 3.2s, 10us, 5 min, 2h
 *   <int>     integers (optionally signed)         <float>  decimals
 *   <ver>     dotted versions of three or more parts (1.14.0)
 *   <hex>     0x-prefixed hex, or hex runs of >= 8 chars holding a digit
 *   <uuid>    UUIDs                                <ip>     IPv4/IPv6 (with :port)
 *   <email>   e-mail addresses                     <host>   hostname of a URL
 *   <val>     URL query values (?a=<val>&b=<val>)
 *   <str>     quoted values after '=' or ':' ( key="x", id: 'y' )
 *   <pid> <ref> <port> <fun>  Erlang #PID<0.1.0>, #Reference<...>,
 *             #Port<...>, #Function<...>
 *   <addr>    memory addresses (0x7ffd... with >= 8 hex digits)
 *   <args>    the arguments after the first of a GenServer.call and its
 *             kin (written ", <args>"), and the argument list of an
 *             {M, :f, [args]} tuple (undef exits)
 *
 * Words, punctuation, exception names, module names and arities (Foo.bar/2)
 * stay. Invalid UTF-8 is replaced by U+FFFD, tabs and control bytes (other
 * than \n) by a space, runs of spaces by one, so the output is always valid
 * UTF-8.
 */
#ifndef SELF_HEAL_NORMALIZE_H
#define SELF_HEAL_NORMALIZE_H

#include "self_heal/common.h"

/* Appends the normalised form of in[0..len) to out. The output is never
 * longer than 5 * len + 16 bytes (a lone digit becomes "<int>"). Returns 0,
 * or -1 on allocation failure. */
int sh_normalize(sh_buf *out, const char *in, size_t len);

#endif

/*
 * The port's watchdog. At start the process the BEAM started (the pid it
 * knows) splits in two: it stays a small watchdog, and a forked child, the
 * server, serves the protocol and runs every command.
 *
 * - The watchdog is the server's parent and a child subreaper. When the
 *   server dies, whatever the cause (kill -9 included), every process the
 *   server started is handed to the watchdog by the kernel, whatever its
 *   session or process group; the watchdog kills them all, reaps them and
 *   exits as the server did (its exit code, or the signal that killed it
 *   raised on itself), so the BEAM sees the port end as it always did.
 * - It forwards SIGTERM, SIGINT and SIGHUP to the server: a signal to the
 *   BEAM's pid is the server's normal shutdown.
 * - The server holds the read end of a pipe whose only writer is the
 *   watchdog: end of file there means the watchdog is gone (kill -9 of
 *   the BEAM's pid). The server then kills every process it started (it is
 *   a subreaper too, so they are all its descendants) and exits at once,
 *   as if it had crashed.
 *
 * Only both processes killed together leave the server's processes
 * without anyone to kill them; proc_mark_children() and
 * proc_kill_left_behind() (proc.h) let the next start find them.
 */
#ifndef SELF_HEAL_PORT_WATCHDOG_H
#define SELF_HEAL_PORT_WATCHDOG_H

#include <sys/types.h>

/* Splits the process; call it before any thread exists. Returns 0 in the
 * server with *watch_fd the pipe's read end (close-on-exec) and *watchdog
 * the watchdog's pid, or -1 with *watch_fd -1 and *watchdog 0 when it
 * could not split (the caller goes on alone, without a watchdog). Never
 * returns in the watchdog, which exits when the server has ended and
 * nothing it started is left. */
int watchdog_split(int *watch_fd, pid_t *watchdog);

/* The server's side of the pipe, after poll() reported it readable or
 * hung up: 1 when the watchdog is gone (end of file or an error), else 0. */
int watchdog_gone(int watch_fd);

/* The server's end when the watchdog is gone: as a crash would end it,
 * but with every descendant. Nothing more reaches the BEAM (stdout becomes
 * /dev/null), no child is started any more, the descendants are frozen
 * (SIGSTOP until all are stopped: no command sees its child die and
 * records that) and then killed, and the process _exits. */
void watchdog_lost(void) __attribute__((noreturn));

#endif

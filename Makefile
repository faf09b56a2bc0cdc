# SelfHeal: the two commands a newcomer needs are `make demo` and `make test`.
#
#   make demo     install what is missing, build, run the demo end to end
#                 (in a fresh directory, removed at the end unless KEEP=1)
#   make test     install what is missing, build, run every test suite
#   make agents   install the pinned Claude Code (npm) for its tests and the demo
#   make bench    print BENCH lines (see docs/benchmarks.md)
#   make priv     build priv/self_heal_nif.so and priv/self_heal_port
#                 (called by `mix compile` through the project's Mix compiler)
#   make ctest    C unit tests, normal build and under ASan + UBSan
#   make fuzz     run every libFuzzer target for FUZZ_SECONDS each (docs/fuzzing.md)
#   make ctest-tsan  the C unit tests and the port program under ThreadSanitizer
#   make format   reformat the C sources; `make format-check` checks them
#
# V=1 shows the full commands.

.DEFAULT_GOAL := all
# Objects of test binaries are kept between runs.
.SECONDARY:
SHELL := /bin/bash

BUILD ?= _build/c
PRIV := priv
NIF_SO := $(PRIV)/self_heal_nif.so
PORT_BIN := $(PRIV)/self_heal_port

ifeq ($(V),1)
Q :=
msg = @true
else
Q := @
msg = @printf '  %-6s %s\n' $(1) $(2)
endif

# ---------------------------------------------------------------- packages
# Debian packages the project needs. `make bootstrap` installs the missing
# ones non-interactively; when all are present it only asks dpkg (< 1 s).
DEB_PACKAGES := erlang-nox erlang-dev elixir pkg-config libssl-dev libjansson-dev \
	libgit2-dev libcurl4-openssl-dev libsqlite3-dev libcmocka-dev clang-format chromium \
	python3-aiosmtpd valgrind git openssl bubblewrap clang libclang-rt-14-dev prometheus

.PHONY: bootstrap
bootstrap:
	$(Q)missing=$$(dpkg-query -W -f='$${db:Status-Abbrev} $${Package}\n' $(DEB_PACKAGES) 2>/dev/null \
	  | awk '$$1 == "ii" { print $$2 }' | sort | comm -13 - <(printf '%s\n' $(DEB_PACKAGES) | sort)); \
	if [ -n "$$missing" ]; then \
	  echo "  APT    installing:" $$missing; \
	  SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  $$SUDO apt-get update -qq && \
	  $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# ---------------------------------------------------------------- agents
# Claude Code, pinned, for the tests and the demo that run a real coding
# agent (docs/agents.md). Installed with npm (Debian's package when there
# is none) under _build/agents (not removed by `make clean`); when npm or
# the package cannot be installed, those tests are skipped with a message
# and the demo uses the stand-in agent.
CLAUDE_CODE_VERSION := 2.1.332
AGENTS_DIR := _build/agents
CLAUDE_DIR := $(AGENTS_DIR)/claude-code
CLAUDE := $(CLAUDE_DIR)/node_modules/@anthropic-ai/claude-code/bin/claude.exe

.PHONY: agents
agents:
	$(Q)if [ -x $(CLAUDE) ] && [ "$$($(CLAUDE) --version 2>/dev/null | cut -d' ' -f1)" = "$(CLAUDE_CODE_VERSION)" ]; then \
	  exit 0; \
	fi; \
	if ! command -v npm >/dev/null 2>&1; then \
	  echo "  APT    installing: npm (to install Claude Code)"; \
	  SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  { $$SUDO apt-get install -y -qq --no-install-recommends npm || \
	    { $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends npm; }; \
	  } > /dev/null 2>&1 || true; \
	fi; \
	if ! command -v npm >/dev/null 2>&1; then \
	  echo "  AGENTS npm could not be installed: Claude Code is not available (its tests are skipped, the demo uses the stand-in agent)"; \
	  exit 0; \
	fi; \
	echo "  AGENTS installing Claude Code $(CLAUDE_CODE_VERSION) with npm into $(CLAUDE_DIR)"; \
	mkdir -p $(CLAUDE_DIR) && \
	if ! (cd $(CLAUDE_DIR) && npm install --no-audit --no-fund --no-package-lock --loglevel=error \
	      @anthropic-ai/claude-code@$(CLAUDE_CODE_VERSION)) > $(AGENTS_DIR)/npm.log 2>&1 \
	   || ! $(CLAUDE) --version > /dev/null 2>&1; then \
	  echo "  AGENTS Claude Code could not be installed (see $(AGENTS_DIR)/npm.log): its tests are skipped, the demo uses the stand-in agent"; \
	fi

# ---------------------------------------------------------------- flags
PKGS := openssl jansson
# The port program and its C tests also use libcurl, SQLite and libgit2.
PORT_PKGS := openssl jansson libcurl sqlite3 libgit2
# The Debian package of each pkg-config name.
DEB_openssl := libssl-dev
DEB_jansson := libjansson-dev
DEB_libcurl := libcurl4-openssl-dev
DEB_sqlite3 := libsqlite3-dev
DEB_libgit2 := libgit2-dev
DEB_cmocka := libcmocka-dev
# $(call pkg_config,--cflags|--libs,NAMES): pkg-config's answer; when it
# fails the build stops, naming the Debian packages to install.
pkg_config = $(call pkg_checked,$(shell pkg-config $(1) $(2) 2>/dev/null || echo pkg-config-failed),$(2))
pkg_checked = $(if $(filter pkg-config-failed,$(1)),$(error pkg-config found no $(2): \
	install the Debian packages pkg-config $(foreach p,$(2),$(or $(DEB_$(p)),$(p))) (make bootstrap)),$(1))
# Cached on first use so pkg-config and erl run once per make invocation.
PKG_CFLAGS = $(eval PKG_CFLAGS := $$(call pkg_config,--cflags,$(PKGS)))$(PKG_CFLAGS)
PKG_LIBS = $(eval PKG_LIBS := $$(call pkg_config,--libs,$(PKGS)))$(PKG_LIBS)
PORT_PKG_CFLAGS = $(eval PORT_PKG_CFLAGS := $$(call pkg_config,--cflags,$(PORT_PKGS)))$(PORT_PKG_CFLAGS)
PORT_LIBS = $(eval PORT_LIBS := $$(call pkg_config,--libs,$(PORT_PKGS)) -lpthread)$(PORT_LIBS)
CMOCKA_LIBS = $(eval CMOCKA_LIBS := $$(call pkg_config,--libs,cmocka))$(CMOCKA_LIBS)
ERTS_INCLUDE_DIR ?= $(eval ERTS_INCLUDE_DIR := $$(shell erl -noshell -eval \
	'io:format("~ts/erts-~ts/include", [code:root_dir(), erlang:system_info(version)]), halt().'))$(ERTS_INCLUDE_DIR)

CC ?= cc
OPT ?= -O2
WARN := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2
CFLAGS_COMMON = -std=c11 $(OPT) -g $(WARN) -fvisibility=hidden -fPIC -D_POSIX_C_SOURCE=200809L \
	-Iinclude $(PKG_CFLAGS)
SAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
# ThreadSanitizer builds use clang (runtime: libclang-rt-14-dev).
TSAN_CC := clang
TSAN_FLAGS := -fsanitize=thread -fno-omit-frame-pointer

CORE_SRCS := $(addprefix c_src/,common.c normalize.c frames.c fingerprint.c dedup.c jsonl.c miner.c watch.c scrub.c)
NIF_SRCS := c_src/self_heal_nif.c c_src/watch_nif.c c_src/scrub_nif.c c_src/nif_util.c
PORT_MAIN := port/self_heal_port.c
# The port's modules are in port/core, port/analysis and port/fix
# (docs/architecture.md); port/ itself holds its main and what ties the
# folders together. Each folder is an include directory of the port, its
# tests, benchmarks and fuzz targets.
PORT_DIRS := port/core port/analysis port/fix
PORT_LIB_SRCS := $(filter-out $(PORT_MAIN),$(wildcard port/*.c)) $(wildcard $(PORT_DIRS:%=%/*.c))
PORT_INCLUDES := -Iport $(PORT_DIRS:%=-I%)
PORT_SRCS := $(PORT_MAIN) $(PORT_LIB_SRCS)
TEST_SRCS := $(wildcard test/c/test_*.c)

CORE_OBJS := $(CORE_SRCS:%.c=$(BUILD)/obj/%.o)
NIF_OBJS := $(NIF_SRCS:%.c=$(BUILD)/obj/%.o)
PORT_OBJS := $(PORT_SRCS:%.c=$(BUILD)/obj/%.o)
TEST_BINS := $(TEST_SRCS:test/c/%.c=$(BUILD)/test/%)
PORT_LIB_OBJS := $(PORT_LIB_SRCS:%.c=$(BUILD)/obj/%.o)
ASAN_CORE_OBJS := $(CORE_SRCS:%.c=$(BUILD)/asan/%.o)
ASAN_PORT_LIB_OBJS := $(PORT_LIB_SRCS:%.c=$(BUILD)/asan/%.o)
ASAN_TEST_BINS := $(TEST_SRCS:test/c/%.c=$(BUILD)/asan-test/%)
ASAN_PORT_BIN := $(BUILD)/asan/self_heal_port
TSAN_CORE_OBJS := $(CORE_SRCS:%.c=$(BUILD)/tsan/%.o)
TSAN_PORT_LIB_OBJS := $(PORT_LIB_SRCS:%.c=$(BUILD)/tsan/%.o)
TSAN_TEST_BINS := $(TEST_SRCS:test/c/%.c=$(BUILD)/tsan-test/%)
TSAN_PORT_BIN := $(BUILD)/tsan/self_heal_port

# ---------------------------------------------------------------- build
# C builds run in parallel (-j, one job per core; JOBS=1 for a serial
# build) unless make already runs with -j; the test runners stay serial.
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
PAR = $(if $(filter -j% --jobserver%,$(MAKEFLAGS)),,-j$(JOBS))
build_par = $(MAKE) --no-print-directory $(PAR) $(1)

# Release binaries (MIX_ENV=prod, as `mix release` builds) are stripped.
LD_STRIP := $(if $(filter prod,$(MIX_ENV)),-s)

# Objects and links are rebuilt when their flags change: the flags of each
# kind are kept in $(BUILD)/flags/KIND, rewritten only when they differ.
FLAGS_cc = $(CC) $(CFLAGS_COMMON) $(CFLAGS) $(SAN_FLAGS)
FLAGS_cc-nif = $(ERTS_INCLUDE_DIR)
FLAGS_cc-port = $(PORT_PKG_CFLAGS)
FLAGS_ld-nif = $(CC) $(LDFLAGS) $(PKG_LIBS) $(LD_STRIP)
FLAGS_ld-port = $(CC) $(LDFLAGS) $(PORT_LIBS) $(LD_STRIP)
FLAGS_ld-test = $(CC) $(LDFLAGS) $(PORT_LIBS) $(CMOCKA_LIBS) $(SAN_FLAGS)
$(BUILD)/flags/%: FORCE
	@mkdir -p $(@D)
	@printf '%s\n' '$(FLAGS_$*)' | cmp -s - $@ || printf '%s\n' '$(FLAGS_$*)' > $@
.PHONY: FORCE
FORCE:

.PHONY: all priv
all: bootstrap
	$(Q)mix compile

priv:
	$(Q)$(call build_par,$(NIF_SO) $(PORT_BIN))

$(BUILD)/obj/c_src/self_heal_nif.o $(BUILD)/obj/c_src/watch_nif.o $(BUILD)/obj/c_src/scrub_nif.o \
	$(BUILD)/obj/c_src/nif_util.o: CFLAGS_EXTRA = -I$(ERTS_INCLUDE_DIR)
$(BUILD)/obj/port/%.o $(BUILD)/asan/port/%.o $(BUILD)/tsan/port/%.o \
$(BUILD)/obj/test/c/%.o $(BUILD)/asan/test/c/%.o $(BUILD)/tsan/test/c/%.o: \
	CFLAGS_EXTRA = $(PORT_INCLUDES) $(PORT_PKG_CFLAGS)
$(BUILD)/obj/test/bench/bench_sandbox.o $(BUILD)/obj/test/bench/bench_audit.o \
$(BUILD)/obj/test/bench/bench_fold.o: \
	CFLAGS_EXTRA = $(PORT_INCLUDES) $(PORT_PKG_CFLAGS)

$(BUILD)/obj/%.o: %.c $(BUILD)/flags/cc
	$(call msg,CC,$<)
	@mkdir -p $(@D)
	$(Q)$(CC) $(CFLAGS_COMMON) $(CFLAGS_EXTRA) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/asan/%.o: %.c $(BUILD)/flags/cc
	$(call msg,CC-SAN,$<)
	@mkdir -p $(@D)
	$(Q)$(CC) $(CFLAGS_COMMON) $(CFLAGS_EXTRA) $(SAN_FLAGS) $(CFLAGS) -O1 -MMD -MP -c $< -o $@

$(BUILD)/tsan/%.o: %.c
	$(call msg,CC-TSAN,$<)
	@mkdir -p $(@D)
	$(Q)$(TSAN_CC) $(CFLAGS_COMMON) $(CFLAGS_EXTRA) $(TSAN_FLAGS) $(CFLAGS) -O1 -MMD -MP -c $< -o $@

$(NIF_OBJS): $(BUILD)/flags/cc-nif
$(PORT_OBJS) $(TEST_SRCS:%.c=$(BUILD)/obj/%.o) $(TEST_SRCS:%.c=$(BUILD)/asan/%.o) \
$(ASAN_PORT_LIB_OBJS): $(BUILD)/flags/cc-port

# The NIF's symbols from ERTS (enif_*) are resolved when the VM loads it:
# it is linked with every other undefined symbol an error (a library
# missing from the link fails here, not at load time).
$(NIF_SO): $(NIF_OBJS) $(CORE_OBJS) $(BUILD)/flags/ld-nif
	$(call msg,LD,$@)
	@mkdir -p $(@D)
	$(Q)rm -f $@; $(CC) -shared $(LDFLAGS) $(filter %.o,$^) $(PKG_LIBS) $(LD_STRIP) \
	  -Wl,--no-undefined -Wl,--warn-unresolved-symbols -o $@.tmp 2> $@.ld; \
	  status=$$?; undefined=$$(grep -o "undefined reference to \`[^']*'" $@.ld | grep -v "\`enif_" | sort -u); \
	  if [ $$status != 0 ] || [ -n "$$undefined" ]; then \
	    if [ -n "$$undefined" ]; then echo "$@: undefined symbols (a library is missing from the link):" \
	      $$(echo "$$undefined" | sed "s/.*\`//; s/'//") >&2; else cat $@.ld >&2; fi; \
	    rm -f $@.tmp $@.ld; exit 1; \
	  fi; rm -f $@.ld; mv $@.tmp $@

$(PORT_BIN): $(PORT_OBJS) $(CORE_OBJS) $(BUILD)/flags/ld-port
	$(call msg,LD,$@)
	@mkdir -p $(@D)
	$(Q)$(CC) $(LDFLAGS) $(filter %.o,$^) $(PORT_LIBS) $(LD_STRIP) -Wl,--no-undefined -o $@

# The port program built like the suites of each sanitizer, for the suite
# that drives a real port process (test_concurrency).
$(ASAN_PORT_BIN): $(BUILD)/asan/$(PORT_MAIN:.c=.o) $(ASAN_PORT_LIB_OBJS) $(ASAN_CORE_OBJS)
	$(call msg,LD-SAN,$@)
	$(Q)$(CC) $(SAN_FLAGS) $(LDFLAGS) $^ $(PORT_LIBS) -o $@

$(TSAN_PORT_BIN): $(BUILD)/tsan/$(PORT_MAIN:.c=.o) $(TSAN_PORT_LIB_OBJS) $(TSAN_CORE_OBJS)
	$(call msg,LD-TSAN,$@)
	$(Q)$(TSAN_CC) $(TSAN_FLAGS) $(LDFLAGS) $^ $(PORT_LIBS) -o $@

# ---------------------------------------------------------------- C tests
# Each suite links the C core and the port's modules (all but its main).
$(BUILD)/test/%: $(BUILD)/obj/test/c/%.o $(CORE_OBJS) $(PORT_LIB_OBJS) $(BUILD)/flags/ld-test
	$(call msg,LD,$@)
	@mkdir -p $(@D)
	$(Q)$(CC) $(LDFLAGS) $(filter %.o,$^) $(PORT_LIBS) $(CMOCKA_LIBS) -Wl,--no-undefined -o $@

$(BUILD)/asan-test/%: $(BUILD)/asan/test/c/%.o $(ASAN_CORE_OBJS) $(ASAN_PORT_LIB_OBJS) $(BUILD)/flags/ld-test
	$(call msg,LD-SAN,$@)
	@mkdir -p $(@D)
	$(Q)$(CC) $(SAN_FLAGS) $(LDFLAGS) $(filter %.o,$^) $(PORT_LIBS) $(CMOCKA_LIBS) -o $@

$(BUILD)/tsan-test/%: $(BUILD)/tsan/test/c/%.o $(TSAN_CORE_OBJS) $(TSAN_PORT_LIB_OBJS)
	$(call msg,LD-TSAN,$@)
	@mkdir -p $(@D)
	$(Q)$(TSAN_CC) $(TSAN_FLAGS) $(LDFLAGS) $^ $(PORT_LIBS) $(CMOCKA_LIBS) -o $@

# Each run gives test_concurrency the port program of its own build.
.PHONY: ctest ctest-plain ctest-asan ctest-tsan
ctest: ctest-plain ctest-asan

ctest-plain:
	$(Q)$(call build_par,$(TEST_BINS) $(PORT_BIN))
	$(Q)set -e; for t in $(TEST_BINS); do echo "== $$t"; SELF_HEAL_PORT_BIN=$(PORT_BIN) ./$$t; done

ctest-asan:
	$(Q)$(call build_par,$(ASAN_TEST_BINS) $(ASAN_PORT_BIN))
	$(Q)set -e; for t in $(ASAN_TEST_BINS); do echo "== $$t (ASan+UBSan)"; \
	  SELF_HEAL_PORT_BIN=$(ASAN_PORT_BIN) ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1 ./$$t; done

# ThreadSanitizer: every suite, and the port program test_concurrency
# drives; the first report fails the run (test/c/tsan.supp: the reports
# that are not races, each with its reason).
ctest-tsan:
	$(Q)$(call build_par,$(TSAN_TEST_BINS) $(TSAN_PORT_BIN))
	$(Q)set -e; for t in $(TSAN_TEST_BINS); do echo "== $$t (TSan)"; \
	  SELF_HEAL_PORT_BIN=$(TSAN_PORT_BIN) \
	  TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$(CURDIR)/test/c/tsan.supp" \
	  ./$$t; done

# The port program under valgrind: a scripted session of frames on stdin
# (configure, version, ping, bad JSON, unknown command, a 9 MiB frame, worker
# commands cut short by EOF, a truncated frame), then one `run` command.
VALGRIND := valgrind -q --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite

# The suites of the port's C parts (and the scrubber they call) under
# valgrind too: errors and definite leaks fail.
VALGRIND_SUITES := test_state test_audit test_http test_packet test_proc test_notify test_analyze \
	test_fence test_scrub test_worktree test_tree test_prompt test_exec test_validate test_policy test_proof test_transcript \
	test_dash test_service

.PHONY: ctest-valgrind
ctest-valgrind:
	$(Q)$(call build_par,$(VALGRIND_SUITES:%=$(BUILD)/test/%))
	$(Q)set -e; for t in $(VALGRIND_SUITES:%=$(BUILD)/test/%); do echo "== $$t (valgrind)"; $(VALGRIND) ./$$t > /dev/null; done

.PHONY: valgrind-port
valgrind-port: $(PORT_BIN)
	$(call msg,VALGRIND,$(PORT_BIN))
	$(Q)set -eo pipefail; mkdir -p $(BUILD); \
	frame() { local n=$${#1}; printf "\\x$$(printf %02x $$((n >> 24 & 255)))\\x$$(printf %02x $$((n >> 16 & 255)))\\x$$(printf %02x $$((n >> 8 & 255)))\\x$$(printf %02x $$((n & 255)))%s" "$$1"; }; \
	{ frame '{"id":1,"cmd":"configure","args":{"port":{"workers":2}}}'; \
	  frame '{"id":2,"cmd":"version"}'; frame '{"id":3,"cmd":"ping"}'; \
	  frame '{bad json'; frame '{"id":4,"cmd":"no_such_command"}'; \
	  printf '\x00\x90\x00\x00'; head -c 9437184 /dev/zero; \
	  frame '{"id":5,"cmd":"ping"}'; frame '{"id":6,"cmd":"sleep","args":{"ms":50}}'; \
	  frame '{"id":7,"cmd":"spawn_sleep","args":{"seconds":5}}'; printf '\x00\x00\x01\x00{"id"'; \
	} > $(BUILD)/port-session.bin; \
	$(VALGRIND) ./$(PORT_BIN) < $(BUILD)/port-session.bin > $(BUILD)/port-session.out; \
	for s in '"configured":true' '"version":' '"pong":true' bad_json unknown_command frame_too_large; do \
	  grep -aq "$$s" $(BUILD)/port-session.out || { echo "valgrind-port: no $$s in the replies"; exit 1; }; \
	done; \
	$(VALGRIND) ./$(PORT_BIN) run ping > /dev/null

# ---------------------------------------------------------------- fuzzing
# libFuzzer targets (test/fuzz/fuzz_*.c, docs/fuzzing.md) for every parser
# that sees outside bytes, built with clang under ASan + UBSan; the C core
# and the port's modules are rebuilt for them under _build/c/fuzz/. `make
# test` runs each for FUZZ_TEST_SECONDS (fuzz-test), `make fuzz` for
# FUZZ_SECONDS; a crash, leak, timeout or failed property fails the run and
# leaves the input in _build/c/fuzz/crash-<target>-*. Seeds are in
# test/fuzz/corpus/<target>/; what the runs add goes to
# _build/c/fuzz/corpus/<target>/.
FUZZ_CC := clang
FUZZ_SAN := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_CORE_TARGETS := normalize frames fingerprint jsonl miner scrub watch watch_nif
FUZZ_PORT_TARGETS := port http
FUZZ_TARGETS := $(FUZZ_CORE_TARGETS) $(FUZZ_PORT_TARGETS)
FUZZ_DIR := $(BUILD)/fuzz
FUZZ_CORE_OBJS := $(CORE_SRCS:%.c=$(FUZZ_DIR)/obj/%.o)
FUZZ_PORT_LIB_OBJS := $(PORT_LIB_SRCS:%.c=$(FUZZ_DIR)/obj/%.o)
FUZZ_SECONDS ?= 300
FUZZ_TEST_SECONDS ?= 15
FUZZ_OPTS := -rss_limit_mb=1024 -timeout=10 -max_len=8192 -print_final_stats=1

$(FUZZ_DIR)/obj/port/%.o $(FUZZ_DIR)/obj/test/fuzz/%.o: CFLAGS_EXTRA = $(PORT_INCLUDES) $(PORT_PKG_CFLAGS)
# fuzz_watch_nif includes c_src/watch_nif.c (erl_nif.h)
$(FUZZ_DIR)/obj/test/fuzz/fuzz_watch_nif.o: CFLAGS_EXTRA = -I$(ERTS_INCLUDE_DIR)

$(FUZZ_DIR)/obj/%.o: %.c
	$(call msg,CC-FUZZ,$<)
	@mkdir -p $(@D)
	$(Q)$(FUZZ_CC) $(CFLAGS_COMMON) $(CFLAGS_EXTRA) $(FUZZ_SAN) -fsanitize=fuzzer-no-link -O1 \
	  -MMD -MP -c $< -o $@

$(FUZZ_CORE_TARGETS:%=$(FUZZ_DIR)/fuzz_%): $(FUZZ_DIR)/fuzz_%: $(FUZZ_DIR)/obj/test/fuzz/fuzz_%.o \
	$(FUZZ_CORE_OBJS)
	$(call msg,LD-FUZZ,$@)
	$(Q)$(FUZZ_CC) -fsanitize=fuzzer $(FUZZ_SAN) $(LDFLAGS) $^ $(PKG_LIBS) -o $@

$(FUZZ_PORT_TARGETS:%=$(FUZZ_DIR)/fuzz_%): $(FUZZ_DIR)/fuzz_%: $(FUZZ_DIR)/obj/test/fuzz/fuzz_%.o \
	$(FUZZ_CORE_OBJS) $(FUZZ_PORT_LIB_OBJS)
	$(call msg,LD-FUZZ,$@)
	$(Q)$(FUZZ_CC) -fsanitize=fuzzer $(FUZZ_SAN) $(LDFLAGS) $^ $(PORT_LIBS) -o $@

.PHONY: fuzz fuzz-test fuzz-build
fuzz-build: $(FUZZ_TARGETS:%=$(FUZZ_DIR)/fuzz_%)

# Runs every target (or FUZZ_TARGET=name) for $(1) seconds each, with the
# options $(2) (make test: a fixed seed, so a clean checkout explores the
# same inputs on every machine; make fuzz: a new seed each run).
fuzz_run = set -e; for t in $(or $(FUZZ_TARGET),$(FUZZ_TARGETS)); do \
	  mkdir -p $(FUZZ_DIR)/corpus/$$t; echo "== fuzz_$$t ($(1) s)"; \
	  ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  ./$(FUZZ_DIR)/fuzz_$$t $(FUZZ_OPTS) $(2) -max_total_time=$(1) \
	    -artifact_prefix=$(FUZZ_DIR)/crash-$$t- $(FUZZ_DIR)/corpus/$$t test/fuzz/corpus/$$t \
	    > $(FUZZ_DIR)/fuzz_$$t.log 2>&1 \
	  || { tail -n 60 $(FUZZ_DIR)/fuzz_$$t.log; echo "fuzz_$$t failed (docs/fuzzing.md)"; exit 1; }; \
	  grep -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added)' \
	    $(FUZZ_DIR)/fuzz_$$t.log | tr '\n' ' '; echo; \
	done

fuzz: fuzz-build
	$(Q)$(call fuzz_run,$(FUZZ_SECONDS))

fuzz-test: fuzz-build
	$(Q)$(call fuzz_run,$(FUZZ_TEST_SECONDS),-seed=1)

# ---------------------------------------------------------------- style
FORMAT_SRCS = $(wildcard c_src/*.c c_src/*.h include/self_heal/*.h port/*.c port/*.h $(PORT_DIRS:%=%/*.c) $(PORT_DIRS:%=%/*.h) test/c/*.c test/c/*.h \
	test/bench/*.c test/fuzz/*.c test/fuzz/*.h)

.PHONY: format format-check
format:
	$(Q)clang-format -i $(FORMAT_SRCS)

format-check:
	$(call msg,FORMAT,"C sources")
	$(Q)clang-format --dry-run --Werror $(FORMAT_SRCS)
	$(call msg,FORMAT,"Elixir sources")
	$(Q)mix format --check-formatted

# ---------------------------------------------------------------- the commands
.PHONY: test test-all mix-test demo bench clean
test: bootstrap agents
	$(Q)$(MAKE) --no-print-directory test-all

test-all: format-check ctest ctest-tsan fuzz-test ctest-valgrind valgrind-port mix-test

mix-test:
	$(Q)SELF_HEAL_CLAUDE=$(if $(wildcard $(CLAUDE)),$(abspath $(CLAUDE))) MIX_ENV=test mix test $(MIX_TEST_ARGS)

# Each run in a fresh private directory (mktemp -d); on exit, an error or an
# interrupt the shop is stopped and the directory removed (KEEP=1 keeps it).
demo: bootstrap agents
	$(Q)dir=$$(mktemp -d -t self_heal_demo.XXXXXX) || exit 1; \
	cleanup() { SHOP_RUN_DIR=$$dir/shop-run examples/shop/bin/stop "$$dir/shop" > /dev/null 2>&1 || true; \
	  SHOP_RUN_DIR=$$dir/canary/run examples/shop/bin/stop "$$dir/canary/src" > /dev/null 2>&1 || true; \
	  if [ "$(KEEP)" = 1 ]; then echo "  DEMO   kept $$dir"; else rm -rf "$$dir"; fi; }; \
	trap 'cleanup; exit 130' INT TERM; trap cleanup EXIT; \
	SELF_HEAL_DEMO_DIR=$$dir SELF_HEAL_CLAUDE=$(if $(wildcard $(CLAUDE)),$(abspath $(CLAUDE))) \
	  mix run --no-start examples/demo.exs

# Loghub-format data for the miner's grouping accuracy (docs/miner.md).
LOGHUB ?= ../shared/bench/loghub2k
BENCH_MINER := $(BUILD)/bench/bench_miner

$(BENCH_MINER): $(BUILD)/obj/test/bench/bench_miner.o $(CORE_OBJS)
	$(call msg,LD,$@)
	@mkdir -p $(@D)
	$(Q)$(CC) $(LDFLAGS) $^ $(PKG_LIBS) -o $@

# What the bubblewrap sandbox adds to a command (docs/sandbox.md); links the
# port's modules like the C suites.
BENCH_SANDBOX := $(BUILD)/bench/bench_sandbox

$(BENCH_SANDBOX): $(BUILD)/obj/test/bench/bench_sandbox.o $(CORE_OBJS) $(PORT_LIB_OBJS)
	$(call msg,LD,$@)
	@mkdir -p $(@D)
	$(Q)$(CC) $(LDFLAGS) $^ $(PORT_LIBS) -o $@

# Root-cause folding on labelled scenarios (docs/analysis.md).
BENCH_FOLD := $(BUILD)/bench/bench_fold

$(BENCH_FOLD): $(BUILD)/obj/test/bench/bench_fold.o $(CORE_OBJS) $(PORT_LIB_OBJS)
	$(call msg,LD,$@)
	@mkdir -p $(@D)
	$(Q)$(CC) $(LDFLAGS) $^ $(PORT_LIBS) -o $@

# What verifying the audit log costs at open (docs/state.md).
BENCH_AUDIT := $(BUILD)/bench/bench_audit

$(BENCH_AUDIT): $(BUILD)/obj/test/bench/bench_audit.o $(CORE_OBJS) $(PORT_LIB_OBJS)
	$(call msg,LD,$@)
	@mkdir -p $(@D)
	$(Q)$(CC) $(LDFLAGS) $^ $(PORT_LIBS) -o $@

# Secrets left and benign values redacted by the scrubber on a held-out
# corpus (docs/privacy.md).
BENCH_SCRUB := $(BUILD)/bench/bench_scrub

$(BENCH_SCRUB): $(BUILD)/obj/test/bench/bench_scrub.o $(CORE_OBJS)
	$(call msg,LD,$@)
	@mkdir -p $(@D)
	$(Q)$(CC) $(LDFLAGS) $^ $(PKG_LIBS) -o $@

# The load generator of the ingest benchmark (docs/endpoint.md).
LOADGEN := $(BUILD)/bench/loadgen

$(LOADGEN): $(BUILD)/obj/test/bench/loadgen.o
	$(call msg,LD,$@)
	@mkdir -p $(@D)
	$(Q)$(CC) $(LDFLAGS) $^ -o $@

# A NIF that holds the normal scheduler a given time per call, the check
# that test/bench/block.exs sees a block of known length (bench only).
BLOCK_CALIB_NIF := $(BUILD)/bench/block_calib_nif.so

$(BLOCK_CALIB_NIF): test/bench/block_calib_nif.c $(BUILD)/flags/cc $(BUILD)/flags/cc-nif
	$(call msg,LD,$@)
	@mkdir -p $(@D)
	$(Q)$(CC) $(CFLAGS_COMMON) -I$(ERTS_INCLUDE_DIR) $(CFLAGS) -shared $(LDFLAGS) $< -o $@

bench: bootstrap
	$(Q)MIX_ENV=bench mix run test/bench/run.exs
	$(Q)MIX_ENV=bench mix run --no-start test/bench/flood.exs
	$(Q)MIX_ENV=bench mix run test/bench/port.exs
	$(Q)$(MAKE) --no-print-directory $(BLOCK_CALIB_NIF)
	$(Q)BLOCK_CALIB_NIF=$(BLOCK_CALIB_NIF) MIX_ENV=bench mix run --no-start test/bench/block.exs
	$(Q)MIX_ENV=bench mix run test/bench/dashboard.exs
	$(Q)MIX_ENV=bench mix run --no-start test/bench/orphans.exs
	$(Q)MIX_ENV=bench mix run --no-start test/bench/edge.exs
	$(Q)MIX_ENV=bench mix run --no-start test/bench/stacks.exs
	$(Q)$(MAKE) --no-print-directory $(LOADGEN)
	$(Q)LOADGEN=$(LOADGEN) MIX_ENV=bench mix run test/bench/ingest.exs
	$(Q)$(MAKE) --no-print-directory $(BENCH_MINER)
	$(Q)./$(BENCH_MINER) $(LOGHUB)
	$(Q)$(MAKE) --no-print-directory $(BENCH_SANDBOX)
	$(Q)./$(BENCH_SANDBOX)
	$(Q)$(MAKE) --no-print-directory $(BENCH_FOLD)
	$(Q)./$(BENCH_FOLD)
	$(Q)$(MAKE) --no-print-directory $(BENCH_AUDIT)
	$(Q)./$(BENCH_AUDIT)
	$(Q)$(MAKE) --no-print-directory $(BENCH_SCRUB)
	$(Q)./$(BENCH_SCRUB)

clean:
	$(Q)rm -rf $(BUILD) $(NIF_SO) $(PORT_BIN) _build/test/lib/self_heal _build/dev/lib/self_heal

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

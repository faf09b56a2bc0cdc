# SelfHeal: the two commands a newcomer needs are `make demo` and `make test`.
#
#   make demo     install what is missing, build, run the demo end to end
#   make test     install what is missing, build, run every test suite
#   make agents   install the pinned Claude Code (npm) for its tests and the demo
#   make bench    print BENCH lines (see docs/benchmarks.md)
#   make priv     build priv/self_heal_nif.so and priv/self_heal_port
#                 (called by `mix compile` through the project's Mix compiler)
#   make ctest    C unit tests, normal build and under ASan + UBSan
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
	python3-aiosmtpd valgrind git openssl bubblewrap prometheus

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
# Cached on first use so pkg-config and erl run once per make invocation.
PKG_CFLAGS = $(eval PKG_CFLAGS := $$(shell pkg-config --cflags $(PKGS)))$(PKG_CFLAGS)
PKG_LIBS = $(eval PKG_LIBS := $$(shell pkg-config --libs $(PKGS)))$(PKG_LIBS)
PORT_PKG_CFLAGS = $(eval PORT_PKG_CFLAGS := $$(shell pkg-config --cflags $(PORT_PKGS)))$(PORT_PKG_CFLAGS)
PORT_LIBS = $(eval PORT_LIBS := $$(shell pkg-config --libs $(PORT_PKGS)) -lpthread)$(PORT_LIBS)
CMOCKA_LIBS = $(eval CMOCKA_LIBS := $$(shell pkg-config --libs cmocka))$(CMOCKA_LIBS)
ERTS_INCLUDE_DIR ?= $(eval ERTS_INCLUDE_DIR := $$(shell erl -noshell -eval \
	'io:format("~ts/erts-~ts/include", [code:root_dir(), erlang:system_info(version)]), halt().'))$(ERTS_INCLUDE_DIR)

CC ?= cc
OPT ?= -O2
WARN := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2
CFLAGS_COMMON = -std=c11 $(OPT) -g $(WARN) -fvisibility=hidden -fPIC -D_POSIX_C_SOURCE=200809L \
	-Iinclude $(PKG_CFLAGS)
SAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer

CORE_SRCS := $(addprefix c_src/,common.c normalize.c frames.c fingerprint.c dedup.c jsonl.c miner.c watch.c scrub.c)
NIF_SRCS := c_src/self_heal_nif.c c_src/watch_nif.c c_src/nif_util.c
PORT_MAIN := port/self_heal_port.c
PORT_LIB_SRCS := $(filter-out $(PORT_MAIN),$(wildcard port/*.c))
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

# ---------------------------------------------------------------- build
.PHONY: all priv
all: bootstrap
	$(Q)mix compile

priv: $(NIF_SO) $(PORT_BIN)

$(BUILD)/obj/c_src/self_heal_nif.o $(BUILD)/obj/c_src/watch_nif.o $(BUILD)/obj/c_src/nif_util.o: CFLAGS_EXTRA = -I$(ERTS_INCLUDE_DIR)
$(BUILD)/obj/port/%.o $(BUILD)/asan/port/%.o $(BUILD)/obj/test/c/%.o $(BUILD)/asan/test/c/%.o: \
	CFLAGS_EXTRA = -Iport $(PORT_PKG_CFLAGS)
$(BUILD)/obj/test/bench/bench_sandbox.o $(BUILD)/obj/test/bench/bench_audit.o \
$(BUILD)/obj/test/bench/bench_fold.o: \
	CFLAGS_EXTRA = -Iport $(PORT_PKG_CFLAGS)

$(BUILD)/obj/%.o: %.c
	$(call msg,CC,$<)
	@mkdir -p $(@D)
	$(Q)$(CC) $(CFLAGS_COMMON) $(CFLAGS_EXTRA) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/asan/%.o: %.c
	$(call msg,CC-SAN,$<)
	@mkdir -p $(@D)
	$(Q)$(CC) $(CFLAGS_COMMON) $(CFLAGS_EXTRA) $(SAN_FLAGS) $(CFLAGS) -O1 -MMD -MP -c $< -o $@

$(NIF_SO): $(NIF_OBJS) $(CORE_OBJS)
	$(call msg,LD,$@)
	@mkdir -p $(@D)
	$(Q)$(CC) -shared $(LDFLAGS) $^ $(PKG_LIBS) -o $@

$(PORT_BIN): $(PORT_OBJS) $(CORE_OBJS)
	$(call msg,LD,$@)
	@mkdir -p $(@D)
	$(Q)$(CC) $(LDFLAGS) $^ $(PORT_LIBS) -o $@

# ---------------------------------------------------------------- C tests
# Each suite links the C core and the port's modules (all but its main).
$(BUILD)/test/%: $(BUILD)/obj/test/c/%.o $(CORE_OBJS) $(PORT_LIB_OBJS)
	$(call msg,LD,$@)
	@mkdir -p $(@D)
	$(Q)$(CC) $(LDFLAGS) $^ $(PORT_LIBS) $(CMOCKA_LIBS) -o $@

$(BUILD)/asan-test/%: $(BUILD)/asan/test/c/%.o $(ASAN_CORE_OBJS) $(ASAN_PORT_LIB_OBJS)
	$(call msg,LD-SAN,$@)
	@mkdir -p $(@D)
	$(Q)$(CC) $(SAN_FLAGS) $(LDFLAGS) $^ $(PORT_LIBS) $(CMOCKA_LIBS) -o $@

.PHONY: ctest ctest-plain ctest-asan
ctest: ctest-plain ctest-asan

ctest-plain: $(TEST_BINS)
	$(Q)set -e; for t in $^; do echo "== $$t"; ./$$t; done

ctest-asan: $(ASAN_TEST_BINS)
	$(Q)set -e; for t in $^; do echo "== $$t (ASan+UBSan)"; \
	  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 ./$$t; done

# The port program under valgrind: a scripted session of frames on stdin
# (configure, version, ping, bad JSON, unknown command, a 9 MiB frame, worker
# commands cut short by EOF, a truncated frame), then one `run` command.
VALGRIND := valgrind -q --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite

# The suites of the port's C parts (and the scrubber they call) under
# valgrind too: errors and definite leaks fail.
VALGRIND_SUITES := test_state test_audit test_http test_frame test_proc test_notify test_analyze \
	test_fence test_scrub test_worktree test_tree test_context test_exec test_validate test_policy test_proof test_transcript \
	test_dash

.PHONY: ctest-valgrind
ctest-valgrind: $(VALGRIND_SUITES:%=$(BUILD)/test/%)
	$(Q)set -e; for t in $^; do echo "== $$t (valgrind)"; $(VALGRIND) ./$$t > /dev/null; done

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

# ---------------------------------------------------------------- style
FORMAT_SRCS = $(wildcard c_src/*.c c_src/*.h include/self_heal/*.h port/*.c port/*.h test/c/*.c test/c/*.h \
	test/bench/*.c)

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

test-all: format-check ctest ctest-valgrind valgrind-port mix-test

mix-test:
	$(Q)SELF_HEAL_CLAUDE=$(if $(wildcard $(CLAUDE)),$(abspath $(CLAUDE))) MIX_ENV=test mix test $(MIX_TEST_ARGS)

demo: bootstrap agents
	$(Q)SELF_HEAL_CLAUDE=$(if $(wildcard $(CLAUDE)),$(abspath $(CLAUDE))) mix run --no-start examples/demo.exs

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

# The load generator of the ingest benchmark (docs/endpoint.md).
LOADGEN := $(BUILD)/bench/loadgen

$(LOADGEN): $(BUILD)/obj/test/bench/loadgen.o
	$(call msg,LD,$@)
	@mkdir -p $(@D)
	$(Q)$(CC) $(LDFLAGS) $^ -o $@

bench: bootstrap
	$(Q)MIX_ENV=bench mix run test/bench/run.exs
	$(Q)MIX_ENV=bench mix run --no-start test/bench/flood.exs
	$(Q)MIX_ENV=bench mix run test/bench/port.exs
	$(Q)MIX_ENV=bench mix run test/bench/dashboard.exs
	$(Q)MIX_ENV=bench mix run --no-start test/bench/orphans.exs
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

clean:
	$(Q)rm -rf $(BUILD) $(NIF_SO) $(PORT_BIN) _build/test/lib/self_heal _build/dev/lib/self_heal

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

# aliyun-iot: build, test, demo.
#   make                 build the C core for Lua 5.4 into build/lua5.4/aliyun/iot/core.so
#   make LUA=luajit      the same for another interpreter (lua5.1 lua5.2 lua5.3 lua5.4 luajit)
#   make test            the whole suite; last line "N passed, N failed"
#   make demo            the main job against the local emulator
#   make docs            the API reference as HTML into build/docs (DOCS_DIR=... elsewhere)

VERSION  := 0.1.0
LUA      ?= lua5.4

ifeq ($(LUA),luajit)
LUA_INC  := /usr/include/luajit-2.1
else
LUA_INC  := /usr/include/$(LUA)
endif

CC       ?= cc
CFLAGS   ?= -O2
CFLAGS   += -std=c99 -Wall -Wextra -Werror -fPIC -fvisibility=hidden -D_POSIX_C_SOURCE=200809L
CFLAGS   += -DALIYUN_IOT_VERSION='"$(VERSION)"'
CPPFLAGS += -I$(LUA_INC) $(shell pkg-config --cflags libcurl 2>/dev/null)
LIBS     := -lcurl -lcrypto -lexpat -lpthread -lm

BUILD    := build/$(LUA)
SRCS     := $(wildcard csrc/*.c)
OBJS     := $(patsubst csrc/%.c,$(BUILD)/obj/%.o,$(SRCS))
MODULE   := $(BUILD)/aliyun/iot/core.so

.PHONY: all deps test test-matrix test-openresty demo emulator bench lint rock-check \
        check-asan check-valgrind fuzz soak clean docs

all: $(MODULE)

$(BUILD)/obj/%.o: csrc/%.c $(wildcard csrc/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(MODULE): $(OBJS)
	@mkdir -p $(dir $@)
	$(CC) -shared $(LDFLAGS) -o $@ $(OBJS) $(LIBS)

deps:
	@sh tools/deps.sh

test: deps
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory LUA=luajit all
	@LUA=$(LUA) sh tools/test.sh core ctests rock openresty lint examples

clean:
	rm -rf build

test-matrix: deps
	@for l in lua5.1 lua5.2 lua5.3 lua5.4 luajit; do $(MAKE) --no-print-directory LUA=$$l all || exit 1; done
	@sh tools/test.sh matrix

# The OpenResty specs: real nginx loading the LuaJIT build of the core.
test-openresty: deps
	@$(MAKE) --no-print-directory LUA=luajit all
	@sh tools/test.sh openresty

rock-check: deps
	@sh tools/rock-check.sh

# cppcheck + clang-tidy (.clang-tidy) on csrc/, luacheck (.luacheckrc) on the Lua code.
lint: deps
	@sh tools/test.sh lint

# The core built with AddressSanitizer + UBSan into build/asan and the suite run on it under
# Lua 5.4; the runtime is preloaded for the Lua processes only (tools/asan/lua explains how).
# GCC's manual warns that sanitizers raise false -Wmaybe-uninitialized positives (seen on
# http.c's fopen/fclose pair); the normal build keeps that warning as an error.
SANITIZE := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g \
            -Wno-maybe-uninitialized
check-asan: deps
	@$(MAKE) --no-print-directory BUILD=build/asan CC="gcc $(SANITIZE)" all
	@gcc -std=c99 -Wall -Wextra -Werror -D_POSIX_C_SOURCE=200809L -shared -fPIC \
	    -o build/asan/unpreload.so tools/asan/unpreload.c
	@sh tools/test.sh asan

# The C-heavy specs under valgrind memcheck on the normal Lua 5.4 build (tools/test.sh).
check-valgrind: deps
	@$(MAKE) --no-print-directory all
	@sh tools/test.sh valgrind_specs

# The main job on the local emulator: 2,500 random-named + 25 named devices into
# devices.csv (0600), with a summary (examples/demo.lua). Its packages only: not the test
# tooling that `make deps` adds (Node.js packages, linters, other interpreters).
demo:
	@sh tools/deps.sh demo
	@$(MAKE) --no-print-directory LUA=lua5.4 all
	@LUA_PATH="lua/?.lua;lua/?/init.lua;;" LUA_CPATH="build/lua5.4/?.so;;" lua5.4 examples/demo.lua

# The public API as HTML (LDoc, docs/config.ld) into $(DOCS_DIR). tools/docs.lua first writes
# into build/docs-src the Client methods made at run time (the batch helpers and one method
# per row of the action table). LDoc runs under lua5.1: Debian's lua-markdown, which renders
# the markdown in the comments, exists for 5.1 only.
DOCS_DIR ?= build/docs
docs: deps
	@mkdir -p build/docs-src $(DOCS_DIR)
	@LUA_PATH="lua/?.lua;;" lua5.4 tools/docs.lua build/docs-src
	@lua5.1 "$$(command -v ldoc)" -c docs/config.ld -d "$(abspath $(DOCS_DIR))" . >build/docs-src/ldoc.log 2>&1 \
	    || { cat build/docs-src/ldoc.log; exit 1; }
	@if grep -v -e '^reading configuration from' -e '^changing to directory' -e '^output written to' \
	    build/docs-src/ldoc.log; then echo "docs: LDoc warned (above)"; exit 1; fi
	@echo "docs: $(DOCS_DIR)/index.html"

# libFuzzer targets (fuzz/): signing, decoding, the HTTP response path; FUZZ_SECONDS each.
FUZZ_SECONDS ?= 60
fuzz: deps
	@FUZZ_SECONDS=$(FUZZ_SECONDS) sh tools/test.sh fuzz

# 200 batch jobs under ~10% emulator faults, with the report (not in make test or CI).
soak: deps
	@$(MAKE) --no-print-directory all
	@sh tools/test.sh soak

# The local emulator in the foreground on 127.0.0.1:$(EMULATOR_PORT) until one Ctrl-C; its
# other knobs (EMULATOR_TLS, EMULATOR_ASYNC_DELAY, EMULATOR_QPS, ...) are environment
# variables, listed in README's emulator section and tools/emulator.lua.
EMULATOR_PORT ?= 18080
# Ctrl-C is how it is stopped: its exit status 130 is a normal end, not make's "Error 130".
emulator:
	@LUA_PATH="lua/?.lua;;" EMULATOR_PORT=$(EMULATOR_PORT) lua5.4 tools/emulator.lua; \
	  status=$$?; if [ $$status -eq 130 ]; then exit 0; fi; exit $$status

# Benchmarks (issues 7 and 16), not part of `make test`: our client against the official
# Node.js SDK (tools/node, installed by deps) and the floors (a plain libcurl loop, one bare
# HMAC-SHA1); prints a table, issue 16's ratios (met / missed, the machine, its load) and
# writes bench/results.json. `make bench BENCH_RUNS=1` for a quick pass; scenarios can be named:
# `make bench BENCH="sign sequential"` (sign sequential openresty e2e paced stream). The
# openresty scenario runs the LuaJIT build in nginx's lua module (bench/openresty*.{conf,lua}).
bench: deps all
	@$(MAKE) --no-print-directory LUA=luajit all
	@mkdir -p build/bench
	$(CC) -std=c99 -O2 -Wall -Wextra -Werror -D_POSIX_C_SOURCE=200809L \
	    $(shell pkg-config --cflags libcurl 2>/dev/null) bench/curl_floor.c \
	    -o build/bench/curl_floor -lcurl
	$(CC) -std=c99 -O2 -Wall -Wextra -Werror -D_POSIX_C_SOURCE=200809L bench/hmac_floor.c \
	    -o build/bench/hmac_floor -lcrypto
	@BENCH_RUNS=$(BENCH_RUNS) BENCH_LUA=$(LUA) LUA_PATH="lua/?.lua;lua/?/init.lua;./?.lua;;" \
	    LUA_CPATH="$(BUILD)/?.so;;" $(LUA) bench/run.lua $(BENCH)

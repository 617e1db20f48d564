# moat — build everything. Targets: all (default), deps, test, demo, bench, fuzz, clean.
# `make`, `make test` and `make demo` install missing Debian packages first (scripts/deps.sh).

BUILD    ?= build
CC       ?= gcc
CLANG    ?= clang
BPFTOOL  ?= bpftool
ARCH     := x86

# Every C file under agent/<room>/ is part of libmoat; agent/main.c is moatd's entry point.
# ROOMS / UNIT_SRC can be narrowed to build part of the tree (e.g. while a room is in flux):
#   make BUILD=build-x ROOMS="core config policy" UNIT_SRC="tests/unit/main.c tests/unit/test_authz.c" build-x/tests/unit_tests
ROOMS     ?= $(notdir $(wildcard agent/*))
LIB_SRC   := $(sort $(foreach r,$(ROOMS),$(wildcard agent/$(r)/*.c)))
CTL_SRC   := $(sort $(wildcard tools/moatctl/*.c))
UNIT_SRC  ?= $(filter-out tests/unit/fake_dataplane.c,$(sort $(wildcard tests/unit/*.c)))
# Unit tests of state/ and proxy/ against the in-memory dataplane (no root, no BPF): linked
# with every room but bpf/, whose functions tests/unit/fake_dataplane.c provides.
FAKEDP_SRC := tests/unit/main.c tests/unit/fake_dataplane.c $(sort $(wildcard tests/unit/fakedp/*.c))
BPFT_SRC  := $(sort $(wildcard tests/bpf/*.c))
BPF_SRC   := $(sort $(wildcard bpf/*.bpf.c))
HELPER_SRC := $(sort $(wildcard tests/tools/*.c))
TESTFW_SRC := tests/framework/test.c

BPF_OBJ   := $(BPF_SRC:bpf/%.bpf.c=$(BUILD)/bpf/%.bpf.o)
SKELS     := $(BPF_SRC:bpf/%.bpf.c=$(BUILD)/skel/%.skel.h)
LIB_OBJ   := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
LIB_SAN   := $(LIB_SRC:%.c=$(BUILD)/san/%.o)
HELPERS   := $(HELPER_SRC:tests/tools/%.c=$(BUILD)/tests/%)
BENCH_TOOL := $(BUILD)/bench/moat-bench

WARN      := -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wno-missing-field-initializers
CPPFLAGS  := -D_GNU_SOURCE -Iinclude -Iagent -Itests/framework -I$(BUILD)/skel
CFLAGS    ?= -O2 -g
CFLAGS    += -std=gnu11 $(WARN) -fno-strict-aliasing -pthread
SANFLAGS  := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDLIBS    := -lbpf -lelf -lz -lssl -lcrypto -lnghttp2 -lyaml -lpthread
BPF_CFLAGS := -g -O2 -target bpf -D__TARGET_ARCH_$(ARCH) -Wall -Werror \
              -Ivmlinux/$(ARCH) -Iinclude -mcpu=v3

.PHONY: all build deps test demo bench clean unit-tests fuzz fuzz-build
# Keep the BPF objects: the kernel-under-QEMU layer loads them too.
.SECONDARY:

all:
	@bash scripts/deps.sh
	@$(MAKE) --no-print-directory build

build: $(BUILD)/moatd $(BUILD)/moatctl $(BUILD)/tests/unit_tests $(BUILD)/tests/unit_fakedp_tests \
       $(BUILD)/tests/bpf_tests $(HELPERS) \
       $(BENCH_TOOL) $(BUILD)/bench/moat-scale

deps:
	@bash scripts/deps.sh

test:
	@bash scripts/deps.sh
	@$(MAKE) --no-print-directory build
	@bash tests/run $(LAYERS)

demo:
	@bash scripts/deps.sh
	@$(MAKE) --no-print-directory build
	@bash demo/run

# `make bench QUICK=1`: one short round (a smoke run of the harness).
bench:
	@bash scripts/deps.sh bench
	@$(MAKE) --no-print-directory build
	@QUICK=$(QUICK) bash bench/run
	@QUICK=$(QUICK) bash bench/scale/section
	@bash bench/vm

# libFuzzer targets (tests/fuzz/): `make fuzz` runs each for FUZZ_SECONDS and reports what
# it finds; `make test` runs each over its corpus once (the fuzz layer, tests/fuzz/run).
FUZZ_SECONDS ?= 60
fuzz:
	@bash scripts/deps.sh
	@$(MAKE) --no-print-directory fuzz-build
	@bash tests/fuzz/run --fuzz $(FUZZ_SECONDS)

clean:
	rm -rf $(BUILD)

# ---- BPF: compile once with CO-RE, generate libbpf skeletons ----
$(BUILD)/bpf/%.bpf.o: bpf/%.bpf.c $(wildcard bpf/*.h) include/moat/abi.h | $(BUILD)/bpf
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

$(BUILD)/skel/%.skel.h: $(BUILD)/bpf/%.bpf.o | $(BUILD)/skel
	$(BPFTOOL) gen skeleton $< name $(subst -,_,$*)_bpf > $@.tmp && mv $@.tmp $@

# ---- user space ----
$(BUILD)/obj/%.o: %.c | $(BUILD)/obj
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -MMD -MP -c $< -o $@

# Only the BPF room and the BPF tests include the generated skeletons.
$(filter $(BUILD)/obj/agent/bpf/% $(BUILD)/san/agent/bpf/%,$(LIB_OBJ) $(LIB_SAN)) \
$(BPFT_SRC:%.c=$(BUILD)/obj/%.o): $(SKELS)

$(BUILD)/san/%.o: %.c | $(BUILD)/san
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -std=gnu11 $(WARN) -pthread $(SANFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/libmoat.a: $(LIB_OBJ)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/libmoat-san.a: $(LIB_SAN)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/libmoat-san-nobpf.a: $(filter-out $(BUILD)/san/agent/bpf/%,$(LIB_SAN))
	rm -f $@ && ar rcs $@ $^

$(BUILD)/moatd: $(BUILD)/obj/agent/main.o $(BUILD)/libmoat.a
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/moatctl: $(CTL_SRC:%.c=$(BUILD)/obj/%.o) $(BUILD)/libmoat.a
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

# Unit tests always run under ASan+UBSan.
$(BUILD)/tests/unit_tests: $(UNIT_SRC:%.c=$(BUILD)/san/%.o) $(TESTFW_SRC:%.c=$(BUILD)/san/%.o) $(BUILD)/libmoat-san.a | $(BUILD)/tests
	$(CC) $(SANFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/unit_fakedp_tests: $(FAKEDP_SRC:%.c=$(BUILD)/san/%.o) $(TESTFW_SRC:%.c=$(BUILD)/san/%.o) $(BUILD)/libmoat-san-nobpf.a | $(BUILD)/tests
	$(CC) $(SANFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/bpf_tests: $(BPFT_SRC:%.c=$(BUILD)/obj/%.o) $(TESTFW_SRC:%.c=$(BUILD)/obj/%.o) $(BUILD)/libmoat.a | $(BUILD)/tests
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/obj/tests/tools/%.o $(BUILD)/libmoat.a | $(BUILD)/tests
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

# The bench's measuring tool: libc only.
$(BENCH_TOOL): bench/moat-bench.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -o $@ $< -lpthread

# ---- fuzz targets: clang + libFuzzer + ASan + UBSan; the agent sources they need are
# compiled again with clang and the fuzzer's coverage instrumentation. clang's
# -Wformat-nonliteral also flags v*printf wrappers, which gcc (the gate for warnings) allows. ----
FUZZ_TARGETS := $(sort $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c)))
FUZZ_BINS    := $(FUZZ_TARGETS:%=$(BUILD)/fuzz/fuzz_%)
FUZZ_LIB_SRC := $(sort $(wildcard agent/core/*.c agent/config/*.c agent/policy/*.c \
                  agent/identity/*.c agent/dns/*.c) agent/ctl/ctl.c agent/proxy/connect_req.c \
                agent/obs/http.c)
FUZZ_FLAGS   := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
                -fno-sanitize-recover=undefined

fuzz-build: $(FUZZ_BINS)

$(BUILD)/fuzz/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CLANG) $(CPPFLAGS) -std=gnu11 $(WARN) -Wno-format-nonliteral -pthread $(FUZZ_FLAGS) \
		-fsanitize=fuzzer-no-link \
		-MMD -MP -c $< -o $@

$(BUILD)/fuzz/libmoat-fuzz.a: $(FUZZ_LIB_SRC:%.c=$(BUILD)/fuzz/obj/%.o)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/fuzz/fuzz_%: $(BUILD)/fuzz/obj/tests/fuzz/fuzz_%.o $(BUILD)/fuzz/libmoat-fuzz.a
	$(CLANG) $(FUZZ_FLAGS) -fsanitize=fuzzer -o $@ $^ $(LDLIBS)

# Control path at cluster scale (bench/scale/run; not part of make test).
$(BUILD)/bench/moat-scale: $(BUILD)/obj/bench/scale/moat-scale.o $(BUILD)/libmoat.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/bpf $(BUILD)/skel $(BUILD)/obj $(BUILD)/san $(BUILD)/tests:
	@mkdir -p $@

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
